"""Patterns of the ACL: globs, `/regex/` and `${placeholders}`, compiled once at load time.

A glob knows two wildcards. For repository names `*` stays within one path segment and `**`
crosses segments; for accounts, services and types (no segments) `*` matches anything. A
pattern written `/like this/` is a regular expression that must match the whole value.

Placeholders (`${account}`, `${group}`) are cut out of the pattern before the glob is turned
into a regex, and the requester's values are substituted as escaped literals: an account named
`a*` or `.*` matches only itself and can never widen a rule.

Any client, anonymous too, chooses the names matched here. Python's `re` backtracks: a regex
such as `/team/([a-z0-9]+[-_.]?)+/` took seconds for a 25-character name (4 x per character
more), and a glob with four `**` over a second, the event loop stalled meanwhile. So a `/regex/`,
and a glob of three wildcards or more, run on RE2 (google-re2), whose time grows with the name's
length only. A glob of two wildcards at most keeps `re`, ~20 x cheaper per call (0.3 µs
against 6): it backtracks at worst quadratically, ~0.25 ms for the longest name (255
characters), where three took 26 ms and four 1.4 s.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

import re2  # google-re2; no type stubs (pyproject: mypy overrides)

PLACEHOLDERS = ("account", "group")
log = logging.getLogger(__name__)
_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
_WILDCARDS = re.compile(r"\*\*|\*")
# A dummy value used only to check at load time that a pattern with placeholders compiles: as
# long as an account may be, so that RE2's bound on a program's size is met at load, not at a
# request (`(?:${account}x){1000}`).
_PROBE = "p" * 255
LINEAR_FROM = 3  # wildcards in a glob from which it is matched by RE2
# Escapes whose meaning RE2 narrows to ASCII where Python's `re` takes in every letter, digit or
# space of Unicode.
_ASCII_CLASSES = frozenset("wWdDsSbB")
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a refused regex is reported once, by PatternError, not on stderr


class _Compiled(Protocol):
    """What `re` and RE2 compile to, as far as matching goes."""

    def fullmatch(self, value: str) -> object | None: ...


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
    compiled: _Compiled | None
    linear: bool  # on RE2 (see the module's docstring)

    @property
    def placeholders(self) -> frozenset[str]:
        return frozenset(p.name for p in self.pieces if isinstance(p, _Slot))

    def matches(
        self, value: str, account: str | None = None, groups: frozenset[str] = frozenset()
    ) -> bool:
        """Full match of `value`; `${group}` holds when any one of `groups` makes it match."""
        if self.compiled is not None:
            return self.compiled.fullmatch(value) is not None
        try:
            return any(
                _cached(source, self.linear).fullmatch(value)
                for source in self._sources(account, groups)
            )
        except PatternError as exc:  # a group name far longer than any account: too big for RE2
            _say_once(self.text, str(exc))
            return False

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


def is_regex(text: str) -> bool:
    """Whether a pattern is a `/regex/` (else a glob)."""
    return len(text) >= 2 and text.startswith("/") and text.endswith("/")


def compile_pattern(text: str, kind: GlobKind, *, placeholders: bool = False) -> Pattern:
    """Compile a glob or `/regex/`; PatternError names what is wrong."""
    regex = is_regex(text)
    body = text[1:-1] if regex else text
    pieces = tuple(_split(body, regex, kind, placeholders=placeholders))
    probe = "".join(p if isinstance(p, str) else _literal(_PROBE) for p in pieces)
    # A placeholder parts the wildcards beside it: `*${account}*` holds two, not one `**`.
    wildcards = len(_WILDCARDS.findall(_PLACEHOLDER.sub("\0", body)))
    linear = regex or wildcards >= LINEAR_FROM
    try:
        compiled = _compile(probe, linear)
    except PatternError as exc:
        raise PatternError(f"invalid regular expression {text!r}: {exc}") from None
    has_slots = any(isinstance(p, _Slot) for p in pieces)
    return Pattern(text, pieces, None if has_slots else compiled, linear)


def _compile(source: str, linear: bool) -> _Compiled:
    if not linear:
        return re.compile(source)  # a glob's own translation: it compiles
    try:
        compiled: _Compiled = re2.compile(source, _RE2_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args else "refused"
        if "perl operator" in reason or "escape sequence" in reason:
            # RE2 leaves out what needs backtracking; say so where a Python habit meets it.
            reason += " (RE2 syntax: no lookaround and no backreferences)"
        raise PatternError(reason) from None
    except UnicodeEncodeError:  # RE2 takes UTF-8: a lone surrogate ("\udcff" in YAML)
        raise PatternError("it holds a character that is not Unicode text") from None
    return compiled


def ascii_classes(text: str) -> list[str]:
    """The `\\w`, `\\d`, `\\s`, `\\b` (and their negations) of a `/regex/`: RE2 gives them ASCII
    only, where Python's `re` took in every letter, digit and space, so an account pattern
    using them silently changed what it matched (a deny of `/guest-\\w+/` no longer held for
    `guest-josé`)."""
    if not is_regex(text):
        return []
    found: list[str] = []
    escaped = False
    for char in text[1:-1]:
        if escaped and char in _ASCII_CLASSES:
            found.append("\\" + char)
        escaped = not escaped and char == "\\"
    return found


_SAID: set[tuple[str, str]] = set()


def _say_once(pattern: str, problem: str) -> None:
    if (pattern, problem) not in _SAID:
        _SAID.add((pattern, problem))
        log.warning("ACL pattern %r matches nothing for a value: %s", pattern, problem)


def _split(body: str, regex: bool, kind: GlobKind, *, placeholders: bool) -> Iterator[str | _Slot]:
    position = 0
    for found in _PLACEHOLDER.finditer(body):
        yield _source(body[position : found.start()], regex, kind)
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
    yield _source(rest, regex, kind)


def _source(text: str, regex: bool, kind: GlobKind) -> str:
    if regex:
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
def _cached(source: str, linear: bool) -> _Compiled:
    """Patterns with placeholders compile once per distinct account/group, then come cached."""
    return _compile(source, linear)
