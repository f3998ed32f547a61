"""Unit tests of the ml_stack_python package, without a database: the package is imported from python/."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def signing_key_in_tmp(tmp_path, monkeypatch):
    """The signing key lives in the server's data directory; here, in the test's temporary directory."""
    from ml_stack_python import signing
    monkeypatch.setattr(signing, "KEY_FILE", str(tmp_path / "ml_stack_python.key"))
