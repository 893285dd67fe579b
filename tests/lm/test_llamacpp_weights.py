"""Weight selection for the embedded backend: the shipped file, converted copies, and user mistakes."""

from __future__ import annotations

from pathlib import Path

import pytest

from thinktwice.errors import ConfigError
from thinktwice.lm.gguf_weights import default_cache_dir, resolve_weights


def test_shipped_weights_are_the_source_file(tmp_path: Path) -> None:
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF")
    assert resolve_weights(f, "shipped", tmp_path / "cache") == f
    assert not (tmp_path / "cache").exists()  # nothing converted, nothing written


def test_unknown_weights_and_missing_files_are_config_errors(tmp_path: Path) -> None:
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF")
    with pytest.raises(ConfigError, match="weights must be one of"):
        resolve_weights(f, "q4_0", tmp_path)
    with pytest.raises(ConfigError, match="not found"):
        resolve_weights(tmp_path / "absent.gguf", "q8_0", tmp_path)


def test_cache_dir_follows_thinktwice_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("THINKTWICE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "models"


def test_backend_rejects_bad_settings_without_loading(tmp_path: Path) -> None:
    from thinktwice.lm.llamacpp import LlamaCppBackend

    with pytest.raises(ConfigError):
        LlamaCppBackend(str(tmp_path / "absent.gguf"))
    with pytest.raises(ConfigError):
        LlamaCppBackend(weights="fp64")
    with pytest.raises(ConfigError):
        LlamaCppBackend(max_batch=0)
    b = LlamaCppBackend(weights="q8_0", model="tiny")
    assert b.model == "tiny@q8_0" and b.capabilities.full_vocab and b.capabilities.native_n
