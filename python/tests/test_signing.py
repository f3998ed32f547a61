"""Pickle signatures (ml_stack_python/signing.py): made with a key only the server's OS user can read."""

import os
import stat

from ml_stack_python import signing


def test_sign_then_verify_with_a_private_key():
    sig = signing.sign(b"pickle bytes")
    assert signing.verify(b"pickle bytes", sig)
    assert not signing.verify(b"other bytes", sig)
    assert not signing.verify(b"pickle bytes", None)
    assert stat.S_IMODE(os.stat(signing.KEY_FILE).st_mode) == 0o600
    assert len(open(signing.KEY_FILE, "rb").read()) == 32


def test_a_signature_from_another_key_does_not_verify(tmp_path, monkeypatch):
    sig = signing.sign(b"pickle bytes")
    monkeypatch.setattr(signing, "KEY_FILE", str(tmp_path / "another.key"))
    assert not signing.verify(b"pickle bytes", sig)          # no key yet: nothing verifies
    assert not signing.verify(b"pickle bytes", sig[:-1] + ("0" if sig[-1] != "0" else "1"))
    signing.sign(b"x")                                          # the other server's key now exists
    assert not signing.verify(b"pickle bytes", sig)
