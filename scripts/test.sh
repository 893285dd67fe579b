#!/usr/bin/env bash
# Run the whole test suite; fails when no test ran (pytest exit code 5).
set -uo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
python -m pytest -q "$@"
code=$?
if [ "$code" -eq 5 ]; then
  echo "error: no tests were collected" >&2
  exit 1
fi
exit "$code"
