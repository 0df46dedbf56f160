"""A pair of one-way pipes between the control process and one worker, driven by the event
loop itself: non-blocking writes (what the pipe cannot take now waits in a buffer, written when
the pipe drains) and a reader callback, so neither side ever blocks on the other and no thread
competes with the loop for the GIL. Sending appends to an outbox flushed once per loop
iteration as one pickled, length-prefixed batch."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import struct
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

logger = logging.getLogger(__name__)

Batch = list[Any]
_HEADER = struct.Struct("!I")
_READ_SIZE = 1 << 16


class Link:
    def __init__(
        self, *, send: Connection, receive: Connection, name: str, flush_delay_s: float = 0.0
    ) -> None:
        """`flush_delay_s` > 0 gathers what is sent for that long into one write: a worker
        under load would otherwise write (and wake the control process) once per call."""
        self._flush_delay_s = flush_delay_s
        self._send_conn = send
        self._receive_conn = receive
        self._name = name
        self._outbox: Batch = []
        self._pending = bytearray()  # framed bytes the pipe has not taken yet
        self._incoming = bytearray()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_batch: Callable[[Batch], None] | None = None
        self._on_closed: Callable[[], None] | None = None
        self._writing = False
        self.closed = False

    def start(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        on_batch: Callable[[Batch], None],
        on_closed: Callable[[], None],
    ) -> None:
        self._loop = loop
        self._on_batch = on_batch
        self._on_closed = on_closed
        os.set_blocking(self._send_conn.fileno(), False)
        os.set_blocking(self._receive_conn.fileno(), False)
        loop.add_reader(self._receive_conn.fileno(), self._readable)

    def send(self, message: object) -> None:
        """Queue a message (on the loop thread); sent with the others of this loop iteration."""
        if self.closed:
            return
        if not self._outbox:
            assert self._loop is not None
            if self._flush_delay_s > 0:
                self._loop.call_later(self._flush_delay_s, self.flush)
            else:
                self._loop.call_soon(self.flush)
        self._outbox.append(message)

    def flush(self) -> None:
        if not self._outbox or self.closed:
            return
        batch, self._outbox = self._outbox, []
        data = pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)
        self._pending += _HEADER.pack(len(data))
        self._pending += data
        self._write()

    def close(self) -> None:
        """Send what is queued (blocking, briefly), then close the pipes (the peer sees EOF)."""
        if self.closed:
            return
        self.flush()
        self.closed = True
        fd = self._send_conn.fileno()
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._receive_conn.fileno())
            if self._writing:
                with contextlib.suppress(Exception):
                    self._loop.remove_writer(fd)
        with contextlib.suppress(OSError):
            os.set_blocking(fd, True)
            while self._pending:
                written = os.write(fd, self._pending)
                del self._pending[:written]
        with contextlib.suppress(OSError):
            self._send_conn.close()
        with contextlib.suppress(OSError):
            self._receive_conn.close()

    def _write(self) -> None:
        fd = self._send_conn.fileno()
        try:
            while self._pending:
                written = os.write(fd, self._pending)
                del self._pending[:written]
        except BlockingIOError:
            pass
        except OSError:  # the peer is gone; its EOF on our reader reports it
            self._pending.clear()
        assert self._loop is not None
        if self._pending and not self._writing:
            self._writing = True
            self._loop.add_writer(fd, self._drained)
        elif not self._pending and self._writing:
            self._writing = False
            self._loop.remove_writer(fd)

    def _drained(self) -> None:
        self._write()

    def _readable(self) -> None:
        try:
            data = os.read(self._receive_conn.fileno(), _READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            assert self._loop is not None
            self._loop.remove_reader(self._receive_conn.fileno())
            if self._on_closed is not None:
                self._on_closed()
            return
        incoming = self._incoming
        incoming += data
        messages: Batch = []
        while len(incoming) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(incoming)
            end = _HEADER.size + size
            if len(incoming) < end:
                break
            messages.extend(pickle.loads(incoming[_HEADER.size : end]))
            del incoming[:end]
        # Every batch this read completed, as one: the receiver bounds its work per callback.
        if messages and self._on_batch is not None:
            self._on_batch(messages)
