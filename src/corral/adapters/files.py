"""Files a user names: does it exist, what does it say, may Corral use it. (The core checks only their
syntax.)"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

from corral.core.errors import InvalidInput

# Never an image, whatever the configuration says: kernel interfaces and devices.
SYSTEM_TREES = (Path("/proc"), Path("/sys"), Path("/dev"))


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise InvalidInput(f"{what} {str(path)!r} does not exist or is not a file")
    return path


def read_text(path: Path, what: str) -> str:
    require_file(path, what)
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{what} {str(path)!r} cannot be read: {exc}") from None


def require_allowed_file(path: Path, what: str, allowed_dirs: Sequence[Path]) -> Path:
    """The real path of `path` when it is a regular file inside one of `allowed_dirs` (symlinks resolved
    on both sides), else InvalidInput naming the problem. Guards image imports and ISOs: Corral runs as
    root, and a guest can read whatever file it is given."""
    try:
        real = Path(os.path.realpath(path, strict=True))
    except (OSError, RuntimeError):
        raise InvalidInput(f"{what} {str(path)!r} does not exist") from None
    shown = repr(str(path)) + (f" (which is {str(real)!r})" if real != path else "")
    if any(real == tree or real.is_relative_to(tree) for tree in SYSTEM_TREES):
        raise InvalidInput(f"{what} {shown} is a system file under /proc, /sys or /dev; refused")
    try:
        mode = os.stat(real).st_mode
    except OSError as exc:
        raise InvalidInput(f"{what} {shown} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        raise InvalidInput(f"{what} {shown} is not a regular file (a device, folder or socket); refused")
    roots = [Path(os.path.realpath(folder)) for folder in allowed_dirs]
    if not any(real.is_relative_to(root) for root in roots):
        raise InvalidInput(f"{what} {shown} is outside the folders images may come from "
                           f"({', '.join(str(r) for r in roots)}); move it there or add its folder to "
                           "image_dirs in the config file")
    return real


def write_atomic(path: Path, data: bytes | str, mode: int = 0o644) -> None:
    """Replace `path` with `data` so that a crash leaves the old file or the new one, never a mix:
    a temporary file beside it, fsynced, renamed over it, and the folder fsynced. Symlinks at the
    temporary name are not followed."""
    payload = data.encode() if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def locked(path: Path, *, shared: bool = False) -> Iterator[None]:
    """Hold an flock on `path` (created if needed) for the block: across processes, not threads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
