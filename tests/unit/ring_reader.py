"""A thread that loads a key ring again and again while a test rewrites it, as a running
service's reload does: every load must find a whole ring."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from app.errors import KeyStoreError
from app.keys.store import load_keyring


@dataclass
class Reads:
    loads: int = 0
    errors: list[str] = field(default_factory=list)


@contextlib.contextmanager
def reading_meanwhile(keys_dir: Path) -> Iterator[Reads]:
    """Load keys_dir's ring in a loop in another thread for as long as the block runs."""
    reads, stop = Reads(), threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                load_keyring(keys_dir)
                reads.loads += 1
            except KeyStoreError as exc:
                reads.errors.append(str(exc))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        yield reads
    finally:
        stop.set()
        reader.join(timeout=30)
