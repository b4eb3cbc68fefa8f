"""A password for a guest's user, hashed the way its /etc/shadow wants it (SHA-512 crypt), by OpenSSL:
the password itself never reaches the seed, the domain XML or a log."""

from __future__ import annotations

import shutil
import subprocess

from corral.core.errors import BackendError, InvalidInput


def hash_password(password: str) -> str:
    if not password or len(password) > 1024 or any(c in password for c in "\x00\n\r"):
        raise InvalidInput("the password must be 1 to 1024 characters on one line")
    if shutil.which("openssl") is None:
        raise BackendError("hashing a password needs openssl (Debian package openssl)")
    try:
        done = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=password + "\n", capture_output=True,
                              text=True, check=True, timeout=30)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        raise BackendError(f"openssl could not hash the password: {exc}") from None
    hashed = done.stdout.strip()
    if not hashed.startswith("$6$"):
        raise BackendError("openssl gave no SHA-512 crypt hash")
    return hashed
