"""The usage spool: this replica's acknowledged, not-yet-persisted totals, on local disk.

Every `interval` the spool appends, for each RoutingPolicy whose own totals changed since the
last batch, one JSON line with this replica's absolute entry (as the ledger writes it to status)
and fsyncs the file. A restart (after SIGKILL, OOM or a crash, also during an API-server outage)
reads the last line per object and hands it to the ledger, which adopts it when it next sees the
same object (same uid) and writes it as usual. Replaying is idempotent because the entries are
absolute totals per replica and period: replaying twice, or replaying what was already
persisted, changes nothing. What a crash can lose is what was acknowledged after the last fsync'd
batch: at most one spool interval (default 0.1 s) of this replica's usage.

The file lives in `--spool-dir`; `replica-id` there pins the replica identity across restarts
when no `--replica-id` is given. When the file grows past `max_bytes` it is rewritten with only
the latest line per object (write to a temporary file, fsync, rename, fsync the directory).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .observed import ObjectKey

logger = logging.getLogger(__name__)

JsonObject = dict[str, Any]
Record = tuple[str, JsonObject]  # (uid, this replica's entry)
FILE_NAME = "ledger.jsonl"
IDENTITY_FILE = "replica-id"


def stored_identity(directory: Path) -> str | None:
    try:
        return (directory / IDENTITY_FILE).read_text().strip() or None
    except OSError:
        return None


def store_identity(directory: Path, replica: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / IDENTITY_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(replica + "\n")
    _fsync(tmp)
    tmp.replace(path)
    _fsync(directory)


class Spool:
    def __init__(
        self,
        directory: Path,
        *,
        replica: str,
        snapshot: Callable[[], Iterable[tuple[ObjectKey, Record]]],
        interval_s: float = 0.1,
        max_bytes: int = 1 << 20,
    ) -> None:
        self.directory = directory
        self.path = directory / FILE_NAME
        self.replica = replica
        self._snapshot = snapshot
        self.interval_s = interval_s
        self._max_bytes = max_bytes
        self._written: dict[ObjectKey, Record] = {}
        self._lock = asyncio.Lock()
        self.batches = 0

    def load(self) -> dict[ObjectKey, Record]:
        """The last record per object of this replica (a torn last line is skipped)."""
        records: dict[ObjectKey, Record] = {}
        try:
            lines = self.path.read_bytes().splitlines()
        except FileNotFoundError:
            return records
        for line in lines:
            try:
                item = json.loads(line)
                if item.get("replica") != self.replica:
                    continue
                plural, namespace, name = item["key"]
                records[(str(plural), str(namespace), str(name))] = (
                    str(item["uid"]),
                    dict(item["entry"]),
                )
            except (ValueError, KeyError, TypeError):
                logger.warning("Skipped an unreadable spool line in %s", self.path)
        self._written = dict(records)
        return records

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.sync()
            except OSError:
                logger.exception("Spool write to %s failed", self.path)

    async def sync(self) -> None:
        """Append and fsync the records that changed since the last batch."""
        async with self._lock:
            changed = [
                (key, record)
                for key, record in self._snapshot()
                if self._written.get(key) != record
            ]
            if not changed:
                return
            lines = b"".join(self._line(key, record) for key, record in changed)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, self._append, lines)
            self._written.update(changed)
            self.batches += 1

    def _line(self, key: ObjectKey, record: Record) -> bytes:
        uid, entry = record
        item = {"replica": self.replica, "key": list(key), "uid": uid, "entry": entry}
        return json.dumps(item, separators=(",", ":")).encode() + b"\n"

    def _append(self, lines: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size + len(lines) > self._max_bytes:
            self._compact(lines)
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, lines)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _compact(self, lines: bytes) -> None:
        latest = b"".join(self._line(key, record) for key, record in self._written.items())
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(latest + lines)
        _fsync(tmp)
        tmp.replace(self.path)
        _fsync(self.directory)


def _fsync(path: Path) -> None:
    """Flush a file's data, or a directory's entries (a rename is durable once its directory is)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
