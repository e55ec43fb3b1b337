"""The disk cache of remote models: atomic entries, one download per entry, LRU eviction.

Layout under the cache root:

    entries/<key>/meta.json      what the entry holds (source, ETags, sizes, last use)
    entries/<key>/data/...       the object (data/<name>) or the prefix's tree (data/...)
    partial/<key>.<pid>.<rand>/  a download in progress: never read, removed on failure
    locks/<key>.lock             flock'ed while an entry is being filled

An entry appears by renaming a finished partial directory to entries/<key>: a reader sees a
whole entry or none. The lock is a file lock, so threads and processes sharing a volume wait
for one download instead of starting their own. meta.json's mtime is the entry's last use.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("stratus.cache")


@dataclass(frozen=True)
class Entry:
    key: str
    path: Path  # the entry directory; the model is under path / "data"
    meta: dict[str, Any]

    @property
    def data(self) -> Path:
        return self.path / "data"

    @property
    def size(self) -> int:
        return int(self.meta.get("size", 0))


class DiskCache:
    def __init__(self, root: Path, max_bytes: int | None) -> None:
        self.root = root
        self.max_bytes = max_bytes
        for folder in ("entries", "partial", "locks"):
            (root / folder).mkdir(parents=True, exist_ok=True)

    def get(self, key: str) -> Entry | None:
        path = self.root / "entries" / key
        try:
            meta = json.loads((path / "meta.json").read_text())
        except (OSError, ValueError):
            return None
        return Entry(key, path, meta)

    def touch(self, entry: Entry) -> None:
        with contextlib.suppress(OSError):
            os.utime(entry.path / "meta.json")

    def fill(
        self, key: str, meta: dict[str, Any], write: Callable[[Path], None]
    ) -> tuple[Entry, bool]:
        """The entry for `key`, filled by `write(data_dir)` if no one has yet.

        Returns (entry, whether this call filled it). `write` runs in a partial directory
        that becomes the entry only when it returns; on any error it is removed.
        """
        with self._locked(key):
            entry = self.get(key)
            if entry is not None:
                return entry, False
            partial = self.root / "partial" / f"{key}.{os.getpid()}.{secrets.token_hex(4)}"
            try:
                (partial / "data").mkdir(parents=True)
                write(partial / "data")
                meta = {**meta, "created": time.time()}
                (partial / "meta.json").write_text(json.dumps(meta))
                os.rename(partial, self.root / "entries" / key)
            finally:
                shutil.rmtree(partial, ignore_errors=True)
        entry = self.get(key)
        assert entry is not None
        return entry, True

    def entries(self) -> Iterator[Entry]:
        for path in (self.root / "entries").iterdir():
            entry = self.get(path.name)
            if entry is not None:
                yield entry

    def latest(self, source: str) -> Entry | None:
        """The newest complete entry of a source, whatever its version (when S3 is down)."""
        candidates = [e for e in self.entries() if e.meta.get("source") == source]
        return max(candidates, key=lambda e: e.meta.get("created", 0), default=None)

    def evict(self, keep: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
        """Removes least recently used entries until the cache fits in max_bytes."""
        if self.max_bytes is None:
            return []
        entries = sorted(self.entries(), key=self._last_used)
        total = sum(e.size for e in entries)
        removed = []
        for entry in entries:
            if total <= self.max_bytes:
                break
            if entry.key in keep:
                continue
            with self._locked(entry.key, blocking=False) as held:
                if not held:
                    continue  # being filled right now
                trash = self.root / "partial" / f"{entry.key}.evicted.{secrets.token_hex(4)}"
                os.rename(entry.path, trash)  # gone at once for readers
                shutil.rmtree(trash, ignore_errors=True)
            total -= entry.size
            removed.append(entry.key)
            log.info("evicted %s (%s) from the disk cache", entry.key, entry.meta.get("source"))
        return removed

    def clean_partials(self) -> None:
        """Removes what crashed downloads left behind (their lock is free again)."""
        for partial in (self.root / "partial").iterdir():
            key = partial.name.split(".", 1)[0]
            with self._locked(key, blocking=False) as held:
                if held:
                    shutil.rmtree(partial, ignore_errors=True)

    @staticmethod
    def _last_used(entry: Entry) -> float:
        try:
            return (entry.path / "meta.json").stat().st_mtime
        except OSError:
            return 0.0

    @contextlib.contextmanager
    def _locked(self, key: str, blocking: bool = True) -> Iterator[bool]:
        with open(self.root / "locks" / f"{key}.lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
