"""Patterns of the ACL: globs, `/regex/` and `${placeholders}`, compiled once at load time.

A glob knows two wildcards. For repository names `*` stays within one path segment and `**`
crosses segments; for accounts, services and types (no segments) `*` matches anything. A
pattern written `/like this/` is a regular expression that must match the whole value.

Placeholders (`${account}`, `${group}`) are cut out of the pattern before the glob is turned
into a regex, and the requester's values are substituted as escaped literals: an account named
`a*` or `.*` matches only itself and can never widen a rule.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

PLACEHOLDERS = ("account", "group")
_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
_WILDCARDS = re.compile(r"\*\*|\*")
# A dummy value used only to check at load time that a pattern with placeholders compiles.
_PROBE = "probe"


class PatternError(ValueError):
    """A pattern that cannot be used; the message says why."""


class GlobKind(Enum):
    PATH = "path"  # repository names: `*` within a segment, `**` across segments
    FLAT = "flat"  # accounts, services, types: `*` matches anything


@dataclass(frozen=True, slots=True)
class _Slot:
    """Where a placeholder's value goes in the regex source."""

    name: str


@dataclass(frozen=True, slots=True)
class Pattern:
    """A compiled pattern. Without placeholders the regex is built once, here."""

    text: str
    pieces: tuple[str | _Slot, ...]
    compiled: re.Pattern[str] | None

    @property
    def placeholders(self) -> frozenset[str]:
        return frozenset(p.name for p in self.pieces if isinstance(p, _Slot))

    def matches(
        self, value: str, account: str | None = None, groups: frozenset[str] = frozenset()
    ) -> bool:
        """Full match of `value`; `${group}` holds when any one of `groups` makes it match."""
        if self.compiled is not None:
            return self.compiled.fullmatch(value) is not None
        return any(_cached(source).fullmatch(value) for source in self._sources(account, groups))

    def _sources(self, account: str | None, groups: frozenset[str]) -> Iterator[str]:
        # A placeholder stands for one path component. An account (or group) named `alice/x`
        # would otherwise own `alice/x/app` under `${account}/**`, inside alice's namespace;
        # such a name, an empty one, or an anonymous requester matches nothing here.
        names = self.placeholders
        if "account" in names and not _one_component(account):
            return
        group_values: list[str | None] = (
            [group for group in sorted(groups) if _one_component(group)]
            if "group" in names
            else [None]
        )
        for group in group_values:
            values = {"account": account, "group": group}
            yield "".join(
                piece if isinstance(piece, str) else _literal(values[piece.name] or "")
                for piece in self.pieces
            )


def compile_pattern(text: str, kind: GlobKind, *, placeholders: bool = False) -> Pattern:
    """Compile a glob or `/regex/`; PatternError names what is wrong."""
    is_regex = len(text) >= 2 and text.startswith("/") and text.endswith("/")
    body = text[1:-1] if is_regex else text
    pieces = tuple(_split(body, is_regex, kind, placeholders=placeholders))
    probe = "".join(p if isinstance(p, str) else _literal(_PROBE) for p in pieces)
    try:
        compiled = re.compile(probe)
    except re.error as exc:
        raise PatternError(f"invalid regular expression {text!r}: {exc}") from None
    has_slots = any(isinstance(p, _Slot) for p in pieces)
    return Pattern(text, pieces, None if has_slots else compiled)


def _split(
    body: str, is_regex: bool, kind: GlobKind, *, placeholders: bool
) -> Iterator[str | _Slot]:
    position = 0
    for found in _PLACEHOLDER.finditer(body):
        yield _source(body[position : found.start()], is_regex, kind)
        name = found.group(1)
        if not placeholders:
            raise PatternError(f"placeholder ${{{name}}} is only allowed in `name` patterns")
        if name not in PLACEHOLDERS:
            known = ", ".join(f"${{{p}}}" for p in PLACEHOLDERS)
            raise PatternError(f"unknown placeholder ${{{name}}} (known: {known})")
        yield _Slot(name)
        position = found.end()
    rest = body[position:]
    if "${" in rest:
        raise PatternError("unclosed placeholder: `${` without `}`")
    yield _source(rest, is_regex, kind)


def _source(text: str, is_regex: bool, kind: GlobKind) -> str:
    if is_regex:
        return text
    one_star = "[^/]*" if kind is GlobKind.PATH else ".*"
    parts: list[str] = []
    position = 0
    for found in _WILDCARDS.finditer(text):
        parts.append(re.escape(text[position : found.start()]))
        parts.append(".*" if found.group(0) == "**" else one_star)
        position = found.end()
    parts.append(re.escape(text[position:]))
    return "".join(parts)


def _one_component(value: str | None) -> bool:
    return value is not None and value != "" and "/" not in value


def _literal(value: str) -> str:
    # The group keeps the literal whole even next to a quantifier or a backslash in a regex.
    return f"(?:{re.escape(value)})"


@functools.lru_cache(maxsize=4096)
def _cached(source: str) -> re.Pattern[str]:
    """Patterns with placeholders compile once per distinct account/group, then come cached."""
    return re.compile(source)
