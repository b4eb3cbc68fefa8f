"""Users of the REST API and their API tokens: `<data_dir>/users.json`, mode 0600, written atomically.

Passwords are hashed with scrypt (stdlib, memory-hard); API tokens are 256-bit random secrets
shown once and stored as SHA-256 digests (a fast hash is enough for a secret that cannot be
guessed, and keeps every bearer request cheap). The file is re-read when it changes on disk, so
`corral user ...` takes effect in a running `corral serve` without a restart.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import hashlib
import hmac
import json
import os
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from corral.core.errors import Conflict, CorralError, InvalidInput, NotFound
from corral.core.validate import check_name

SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_MAXMEM = 64 * 1024 * 1024
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
MAX_LABEL = 64
TOKEN_PREFIX = "corral_"


@dataclass(frozen=True)
class TokenInfo:
    id: str
    label: str
    created: str


@dataclass(frozen=True)
class UserInfo:
    name: str
    created: str
    tokens: list[TokenInfo]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "created": self.created,
                "tokens": [t.__dict__ for t in self.tokens]}


def hash_password(password: str, *, salt: bytes | None = None, n: int = SCRYPT_N) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=SCRYPT_R, p=SCRYPT_P, maxmem=SCRYPT_MAXMEM,
                            dklen=32)
    return "$".join(["scrypt", str(n), str(SCRYPT_R), str(SCRYPT_P), _b64(salt), _b64(digest)])


def verify_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        expected = _unb64(digest)
        actual = hashlib.scrypt(password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p),
                                maxmem=SCRYPT_MAXMEM, dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


@functools.cache
def _dummy_hash() -> str:
    """A hash to check against when the user does not exist, so both cases take the same time."""
    return hash_password("corral-no-such-user", salt=b"\0" * 16)


def check_password_rules(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"password too short: use at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise InvalidInput(f"password too long: at most {MAX_PASSWORD} characters")
    if "\x00" in password or "\n" in password:
        raise InvalidInput("password must not contain NUL or newline characters")
    return password


class UserStore:
    """The users file. Every change is read-modify-write under a lock file, then an atomic rename."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cache: tuple[tuple[int, int, int], dict[str, Any]] | None = None
        self._mutex = threading.Lock()

    # --- reading ---------------------------------------------------------------------------
    def _load(self) -> dict[str, Any]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return {"version": 1, "users": {}}
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self._mutex:
            if self._cache is not None and self._cache[0] == key:
                return self._cache[1]
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise CorralError(f"cannot read {self.path}: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("users"), dict):
            raise CorralError(f"{self.path} is not a Corral users file")
        with self._mutex:
            self._cache = (key, data)
        return data

    def has_users(self) -> bool:
        return bool(self._load()["users"])

    def exists(self, name: str) -> bool:
        return name in self._load()["users"]

    def list(self) -> list[UserInfo]:
        users = self._load()["users"]
        return [UserInfo(name, record.get("created", ""),
                         [TokenInfo(t["id"], t.get("label", ""), t.get("created", ""))
                          for t in record.get("tokens", [])])
                for name, record in sorted(users.items())]

    def authenticate(self, name: str, password: str) -> bool:
        """True when `name` exists and `password` is its password (constant work either way)."""
        record = self._load()["users"].get(name)
        stored = record["password"] if isinstance(record, dict) else _dummy_hash()
        return verify_password(password, stored) and record is not None

    def token_owner(self, token: str) -> tuple[str, str] | None:
        """(user, token id) for a valid API token, else None."""
        parsed = _parse_token(token)
        if parsed is None:
            return None
        token_id, secret = parsed
        digest = _token_digest(secret)
        for name, record in self._load()["users"].items():
            for entry in record.get("tokens", []):
                if entry.get("id") == token_id and hmac.compare_digest(str(entry.get("hash", "")), digest):
                    return name, token_id
        return None

    # --- changing --------------------------------------------------------------------------
    def add(self, name: str, password: str) -> UserInfo:
        check_name(name, "user name")
        check_password_rules(password)
        hashed = hash_password(password)
        with self._editing() as data:
            if name in data["users"]:
                raise Conflict(f"a user named {name!r} already exists")
            created = _now()
            data["users"][name] = {"created": created, "password": hashed, "tokens": []}
        return UserInfo(name, created, [])

    def remove(self, name: str) -> None:
        check_name(name, "user name")
        with self._editing() as data:
            self._record(data, name)
            del data["users"][name]

    def create_token(self, name: str, label: str = "") -> tuple[str, TokenInfo]:
        """A new API token for `name`: (the token, shown once; what is kept of it)."""
        check_name(name, "user name")
        if len(label) > MAX_LABEL or any(not ch.isprintable() for ch in label):
            raise InvalidInput(f"token label must be at most {MAX_LABEL} printable characters")
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        info = TokenInfo(token_id, label, _now())
        with self._editing() as data:
            self._record(data, name).setdefault("tokens", []).append(
                {"id": token_id, "label": label, "created": info.created, "hash": _token_digest(secret)})
        return f"{TOKEN_PREFIX}{token_id}.{secret}", info

    def revoke_token(self, name: str, token_id: str) -> None:
        check_name(name, "user name")
        with self._editing() as data:
            tokens = self._record(data, name).get("tokens", [])
            kept = [t for t in tokens if t.get("id") != token_id]
            if len(kept) == len(tokens):
                raise NotFound(f"user {name!r} has no token {token_id!r}")
            self._record(data, name)["tokens"] = kept

    @staticmethod
    def _record(data: dict[str, Any], name: str) -> dict[str, Any]:
        record = data["users"].get(name)
        if not isinstance(record, dict):
            raise NotFound(f"no user named {name!r}")
        return record

    @contextlib.contextmanager
    def _editing(self) -> Iterator[dict[str, Any]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            data = json.loads(json.dumps(self._load()))  # a private copy to change
            yield data
            self._write(data)
        finally:
            os.close(fd)  # releases the lock

    def _write(self, data: dict[str, Any]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(json.dumps(data, indent=2) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o600)
            tmp.replace(self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def users_path(data_dir: Path) -> Path:
    return data_dir / "users.json"


def _parse_token(token: str) -> tuple[str, str] | None:
    if not token.startswith(TOKEN_PREFIX):
        return None
    token_id, sep, secret = token[len(TOKEN_PREFIX):].partition(".")
    if not sep or not token_id or not secret or len(token) > 200:
        return None
    return token_id, secret


def _token_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
