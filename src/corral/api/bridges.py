"""The console WebSockets' bridges: a guest's serial console (a libvirt stream, read in a thread) and its
VNC display (a loopback TCP port) to a WebSocket and back."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import TYPE_CHECKING

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect

from corral.core.errors import CorralError

if TYPE_CHECKING:
    from corral.adapters.console import SerialConsole


async def bridge_console(websocket: WebSocket, console: SerialConsole) -> None:
    """Guest output to the socket (a reader thread per console), socket input to the guest."""
    loop = asyncio.get_running_loop()
    output: asyncio.Queue[bytes] = asyncio.Queue()

    def pump() -> None:
        while True:
            data = console.read(0.5)
            if data:
                loop.call_soon_threadsafe(output.put_nowait, data)
            elif console.closed.is_set() and console.output.empty():
                loop.call_soon_threadsafe(output.put_nowait, b"")
                return

    reader = threading.Thread(target=pump, name=f"console-{console.name}", daemon=True)
    reader.start()

    async def to_socket() -> None:
        while data := await output.get():
            await websocket.send_bytes(data)
        await websocket.close(1000, "the console closed")

    sender = asyncio.ensure_future(to_socket())
    try:
        while not sender.done():
            receive = asyncio.ensure_future(websocket.receive())
            await asyncio.wait({receive, sender}, return_when=asyncio.FIRST_COMPLETED)
            if not receive.done():
                receive.cancel()
                break
            message = receive.result()
            if message["type"] == "websocket.disconnect":
                break
            data = message.get("bytes") or (message.get("text") or "").encode()
            if data:
                await asyncio.to_thread(console.send, data)
    except (WebSocketDisconnect, CorralError, RuntimeError):
        pass
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        await asyncio.to_thread(console.close)
        await asyncio.to_thread(reader.join, 2.0)


async def bridge_tcp(websocket: WebSocket, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Bytes of a TCP connection to the socket and back, until either side closes."""

    async def to_socket() -> None:
        while data := await reader.read(65536):
            await websocket.send_bytes(data)

    async def to_tcp() -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes") or (message.get("text") or "").encode()
            writer.write(data)
            await writer.drain()

    tasks = {asyncio.ensure_future(to_socket()), asyncio.ensure_future(to_tcp())}
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        with contextlib.suppress(RuntimeError):
            await websocket.close(1000)
