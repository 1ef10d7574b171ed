"""Shared fixtures: small files written into pytest's `tmp_path`, never real data."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as keras_rec/__init__.py

import pytest  # noqa: E402


@pytest.fixture
def write_file(tmp_path):
    """`write_file(relative, text) -> path`: writes `text` under `tmp_path`."""

    def write(relative: str, text: str) -> str:
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return str(path)

    return write


@pytest.fixture
def no_data_dir_env(monkeypatch):
    """Unsets `$KERAS_REC_DATA_DIR` (CI points it at the real data)."""
    monkeypatch.delenv("KERAS_REC_DATA_DIR", raising=False)
