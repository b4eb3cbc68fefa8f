"""A guest's serial console over a libvirt stream, for the interactive CLI and for programs.

libvirt streams are driven by libvirt's event loop, which runs in one daemon thread per
process. Everything that touches the stream (reading and writing) happens on that thread:
the caller's bytes reach it through a pipe, so no two threads ever use the stream at once.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time

import libvirt

from corral.adapters.libvirt_host import raise_translated
from corral.core.errors import BackendError, Conflict, GuestTimeout

_loop_lock = threading.Lock()
_loop_started = False


def ensure_event_loop() -> None:
    """Register libvirt's default event loop and run it in a daemon thread (once per process)."""
    global _loop_started
    with _loop_lock:
        if _loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _loop_started = True


class SerialConsole:
    """Bytes in and out of a guest's first serial port. Refused while another client has it, unless
    `force`, which takes it over (that client's stream ends)."""

    def __init__(self, uri: str, name: str, *, force: bool = False) -> None:
        ensure_event_loop()
        try:
            self._conn = libvirt.open(uri)
        except libvirt.libvirtError as exc:
            raise BackendError(f"cannot connect to libvirt at {uri}: {exc.get_error_message()}") from None
        self.name = name
        self.output: queue.Queue[bytes] = queue.Queue()
        self.closed = threading.Event()
        self.ended_by_peer = False  # the stream ended from libvirt's side (guest stopped, or taken over)
        self._wake_r, self._wake_w = os.pipe()
        self._pending = bytearray()
        self._pending_lock = threading.Lock()
        try:
            dom = self._conn.lookupByName(name)
            self._stream = self._conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
            dom.openConsole(None, self._stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE if force else 0)
            self._stream.eventAddCallback(
                libvirt.VIR_STREAM_EVENT_READABLE | libvirt.VIR_STREAM_EVENT_ERROR
                | libvirt.VIR_STREAM_EVENT_HANGUP,
                self._on_stream, None)
        except libvirt.libvirtError as exc:
            self._cleanup_fds()
            self._conn.close()
            if "active console session exists" in (exc.get_error_message() or "").lower():
                raise Conflict(f"another session has the console of {name}; "
                               "--force takes it over (that session ends)") from None
            raise_translated(exc, "open the console of", name)
        self._watch = libvirt.virEventAddHandle(self._wake_r, libvirt.VIR_EVENT_HANDLE_READABLE,
                                                self._on_wake, None)

    # Runs on the event-loop thread.
    def _on_stream(self, stream: libvirt.virStream, events: int, _opaque: object) -> None:
        if events & libvirt.VIR_STREAM_EVENT_READABLE:
            try:
                data = stream.recv(4096)
            except libvirt.libvirtError:
                data = b""
            if data == -2:  # would block
                return
            if isinstance(data, bytes) and data:
                self.output.put(data)
                return
            self._finish()
        if events & (libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP):
            self._finish()

    def _on_wake(self, _watch: int, fd: int, _events: int, _opaque: object) -> None:
        os.read(fd, 4096)
        with self._pending_lock:
            data, self._pending = bytes(self._pending), bytearray()
        while data and not self.closed.is_set():
            try:
                sent = self._stream.send(data)
            except libvirt.libvirtError:
                self._finish()
                return
            if sent == -2:
                time.sleep(0.01)
                continue
            data = data[sent:]

    def _finish(self) -> None:
        if self.closed.is_set():
            return
        self.ended_by_peer = True
        self.closed.set()
        self.output.put(b"")  # wakes a reader
        try:
            self._stream.eventRemoveCallback()
            self._stream.finish()
        except libvirt.libvirtError:
            pass

    # Any thread.
    def send(self, data: bytes) -> None:
        if self.closed.is_set():
            raise BackendError(f"the console of {self.name} is closed")
        with self._pending_lock:
            self._pending += data
        os.write(self._wake_w, b"x")

    def read(self, timeout: float) -> bytes:
        """The next chunk of output, or b'' on timeout or when the console closed."""
        try:
            return self.output.get(timeout=timeout)
        except queue.Empty:
            return b""

    def expect(self, marker: bytes, timeout: float) -> bytes:
        """Read until `marker` appears; return everything read. GuestTimeout if it does not."""
        seen = bytearray()
        deadline = time.monotonic() + timeout
        while marker not in seen:
            left = deadline - time.monotonic()
            if left <= 0 or (self.closed.is_set() and self.output.empty()):
                raise GuestTimeout(
                    f"{marker.decode(errors='replace')!r} did not appear on the console of {self.name} "
                    f"within {timeout:g} s")
            seen += self.read(min(left, 0.5))
        return bytes(seen)

    def close(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            try:
                self._stream.eventRemoveCallback()
                self._stream.abort()
            except libvirt.libvirtError:
                pass
        libvirt.virEventRemoveHandle(self._watch)
        self._cleanup_fds()
        with contextlib.suppress(libvirt.libvirtError):
            self._conn.close()

    def _cleanup_fds(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> SerialConsole:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
