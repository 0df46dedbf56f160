"""A fault-injecting TCP proxy to put between a client (the operator) and the API server.

It forwards bytes both ways (TLS passes through untouched) on its own event loop in a thread,
and while a fault is switched on it:

- `delay_answers_s`: holds every server→client chunk back that long (answers arrive after the
  client's timeout although the server applied the request);
- `drop_answers`: with that probability, forwards a request but closes the connection as the
  answer arrives, without forwarding it (applied, never answered);

(both only once the client has sent its second chunk: the TLS handshake itself goes through,
so requests do reach the server and only their answers are late or lost);
- `reset_requests`: with that probability, forwards half of a client→server chunk and then
  resets both connections (a write torn mid-way);
- `outage`: refuses new connections and aborts the open ones (API server unreachable).

Test support only: never part of the product. Only loopback addresses are used.
"""

from __future__ import annotations

import asyncio
import random
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass
class Faults:
    delay_answers_s: float = 0.0
    drop_answers: float = 0.0
    reset_requests: float = 0.0
    outage: bool = False


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int, *, seed: int = 7) -> None:
        self._upstream = (upstream_host, upstream_port)
        self.faults = Faults()
        self._random = random.Random(seed)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="faultproxy", daemon=True)
        self._open: set[asyncio.Transport] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0
        self.dropped = 0
        self.resets = 0
        self.refused = 0

    def start(self) -> FaultProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fault proxy did not start")
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)

    def set(self, **faults: Any) -> None:
        """Switch faults (Faults fields); unnamed ones are switched off."""
        self.faults = Faults(**faults)
        if self.faults.outage and self._loop is not None:
            self._loop.call_soon_threadsafe(self._abort_all)

    def clear(self) -> None:
        self.set()

    def kubeconfig(self, source: Path, target: Path) -> Path:
        """A copy of `source` (inline CA and credentials) whose server is this proxy."""
        config: dict[str, Any] = yaml.safe_load(source.read_text())
        for cluster in config.get("clusters") or []:
            cluster["cluster"]["server"] = f"https://127.0.0.1:{self.port}"
        target.write_text(yaml.safe_dump(config))
        target.chmod(0o600)
        return target

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        self._server = loop.run_until_complete(
            asyncio.start_server(self._accept, "127.0.0.1", 0, family=socket.AF_INET)
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._ready.set()
        loop.run_forever()
        loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        self._abort_all()
        for task in list(self._tasks):
            task.cancel()

    def _abort_all(self) -> None:
        for transport in list(self._open):
            transport.abort()
        self._open.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = writer.transport
        if self.faults.outage:
            self.refused += 1
            client.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            client.abort()
            return
        server = up_writer.transport
        pair = (client, server)
        self._open.update(pair)  # type: ignore[arg-type]
        sent = [0]  # client→server chunks so far on this connection
        tasks = [
            asyncio.create_task(self._pipe(reader, up_writer, pair, sent=sent, upstream=True)),
            asyncio.create_task(self._pipe(up_reader, writer, pair, sent=sent, upstream=False)),
        ]
        self._tasks.update(tasks)
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self._tasks.difference_update(tasks)
            for transport in pair:
                self._open.discard(transport)
                transport.abort()

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        pair: tuple[asyncio.BaseTransport, asyncio.BaseTransport],
        *,
        sent: list[int],
        upstream: bool,
    ) -> None:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            faults = self.faults
            if upstream:
                sent[0] += 1
            if upstream and faults.reset_requests and self._random.random() < faults.reset_requests:
                writer.write(data[: len(data) // 2])
                self.resets += 1
                _abort(pair)
                return
            if not upstream and sent[0] >= 2:  # past the handshake
                if faults.drop_answers and self._random.random() < faults.drop_answers:
                    self.dropped += 1
                    _abort(pair)
                    return
                if faults.delay_answers_s:
                    await asyncio.sleep(faults.delay_answers_s)
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()


def _abort(pair: tuple[asyncio.BaseTransport, asyncio.BaseTransport]) -> None:
    for transport in pair:
        if isinstance(transport, asyncio.Transport):
            transport.abort()
