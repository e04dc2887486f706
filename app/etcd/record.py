"""The registry's auth record in etcd: what we write, and how we judge what is stored.

LAIN's registry reads `{"realm", "issuer", "service"}` from the key at start and turns token
auth on only when all three are non-empty (protocol.md §7). Pure: no I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from app.settings import Settings

FIELDS = ("realm", "issuer", "service")
_SHOWN = 200  # characters of a foreign value quoted in logs: enough to recognise, bounded


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a read found. `version` is the key's modification index (v2) or mod_revision (v3);
    `index` is the store's index/revision at the read, the point to watch from."""

    value: str | None
    version: int | None
    index: int


def desired_record(settings: Settings) -> dict[str, str]:
    return {name: getattr(settings, name) for name in FIELDS}


def encode_record(record: dict[str, str]) -> str:
    """Compact JSON, exactly the three keys in a fixed order."""
    return json.dumps({name: record[name] for name in FIELDS}, separators=(",", ":"))


def matches(stored: str | None, record: dict[str, str]) -> bool:
    """Whether the stored value means the same to the registry as `record`.

    Compared as JSON, not as text: a value an operator set by hand with `etcdctl set` (spaces,
    another key order) is left alone when its content is right. Extra keys make it differ.
    """
    if stored is None:
        return False
    try:
        parsed = json.loads(stored)
    except ValueError:
        return False
    return isinstance(parsed, dict) and parsed == record


def describe(stored: str | None) -> str:
    """A stored value for a log line: absent, or quoted and cut to a bounded length."""
    if stored is None:
        return "no value (key absent)"
    if len(stored) > _SHOWN:
        return f"{stored[:_SHOWN]!r}... ({len(stored)} characters)"
    return repr(stored)
