"""A pair of one-way pipes between the control process and one worker, with a sender and a
receiver thread, so neither side's event loop ever blocks on the other: sending appends to an
outbox flushed once per loop iteration (one pickled batch), receiving hands whole batches to
the loop with call_soon_threadsafe."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

logger = logging.getLogger(__name__)

Batch = list[Any]


class Link:
    def __init__(self, *, send: Connection, receive: Connection, name: str) -> None:
        self._send_conn = send
        self._receive_conn = receive
        self._name = name
        self._queue: queue.SimpleQueue[Batch | None] = queue.SimpleQueue()
        self._outbox: Batch = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[threading.Thread] = []
        self.closed = False

    def start(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        on_batch: Callable[[Batch], None],
        on_closed: Callable[[], None],
    ) -> None:
        self._loop = loop
        sender = threading.Thread(target=self._send_loop, name=f"{self._name}-send", daemon=True)
        receiver = threading.Thread(
            target=self._receive_loop,
            args=(loop,),
            kwargs={"on_batch": on_batch, "on_closed": on_closed},
            name=f"{self._name}-receive",
            daemon=True,
        )
        self._threads = [sender, receiver]
        sender.start()
        receiver.start()

    def send(self, message: object) -> None:
        """Queue a message (on the loop thread); sent with the others of this loop iteration."""
        if self.closed:
            return
        if not self._outbox:
            assert self._loop is not None
            self._loop.call_soon(self.flush)
        self._outbox.append(message)

    def flush(self) -> None:
        if self._outbox:
            batch, self._outbox = self._outbox, []
            self._queue.put(batch)

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued, then close the sending pipe (the peer sees EOF)."""
        if self.closed:
            return
        self.flush()
        self.closed = True
        self._queue.put(None)
        if self._threads:
            self._threads[0].join(timeout)
        with contextlib.suppress(OSError):
            self._send_conn.close()

    def _send_loop(self) -> None:
        while (batch := self._queue.get()) is not None:
            try:
                self._send_conn.send(batch)
            except (OSError, ValueError):
                return

    def _receive_loop(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        on_batch: Callable[[Batch], None],
        on_closed: Callable[[], None],
    ) -> None:
        while True:
            try:
                batch = self._receive_conn.recv()
            except (EOFError, OSError):
                break
            try:
                loop.call_soon_threadsafe(on_batch, batch)
            except RuntimeError:  # the loop is closed: the process is ending
                return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(on_closed)
