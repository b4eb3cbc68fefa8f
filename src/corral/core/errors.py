"""Errors that cross layers. Each maps to one clear line for the CLI and a status for the API."""

from __future__ import annotations


class CorralError(Exception):
    """Base of every error Corral reports to a user: the message is the whole explanation."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(CorralError):
    """A name, path, size or spec field is wrong."""

    status = 422


class NotFound(CorralError):
    status = 404


class Conflict(CorralError):
    """Name taken, or the domain is in the wrong state for the action."""

    status = 409


class AdmissionRefused(CorralError):
    """The capacity model says the host would be overloaded."""

    status = 507


class BackendError(CorralError):
    """libvirt, QEMU or a host tool failed or is unreachable."""

    status = 502


class GuestTimeout(CorralError):
    status = 504


class Busy(CorralError):
    """Another action holds what this one needs (the host's admission lock) for longer than it may wait."""

    status = 503
