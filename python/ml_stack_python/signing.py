"""Signatures of pickled models: unpickling runs code as the server's OS user, so the engine loads only pickles
it signed itself.

The signature is an HMAC-SHA256 of the pickle under a key kept in the data directory (the backend's working
directory), in a file that only the server's OS user can read: a database role that can write
``ml_stack.models`` but not read the server's files cannot forge one. The key is made on first use. A model
restored from another server carries that server's signature; a superuser who trusts it signs it again with
``ml_stack.trust_python_model(id)``.
"""

import hashlib
import hmac
import os
import secrets

KEY_FILE = "ml_stack_python.key"


def _key(create):
    path = os.path.abspath(KEY_FILE)
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        if not create:
            return None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:       # another backend made it first
        with open(path, "rb") as f:
            return f.read()
    key = secrets.token_bytes(32)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


def sign(blob):
    """The hex signature of a pickle (creates the key when there is none yet)."""
    return hmac.new(_key(create=True), blob, hashlib.sha256).hexdigest()


def verify(blob, signature):
    key = _key(create=False)
    if key is None or not isinstance(signature, str):
        return False
    return hmac.compare_digest(hmac.new(key, blob, hashlib.sha256).hexdigest(), signature)
