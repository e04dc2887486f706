"""Scope parsing (distribution spec, token-scope grammar; protocol.md §3).

    scope         := resourcescope [ ' ' resourcescope ]*
    resourcescope := resourcetype ":" resourcename ":" action [ ',' action ]*

The name may itself hold ':' (a registry host with a port, an IPv6 address in brackets), so
the type is taken up to the first ':' and the actions after the last one. The grammar's action
is `[a-z]*`: an empty one (`repository:x:` or `pull,`) asks for nothing and is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from app.errors import InvalidScopeError

MAX_SCOPE_LENGTH = 1024
MAX_SCOPES = 64
MAX_NAME_LENGTH = 255

_TYPE = re.compile(r"(?P<type>[a-z0-9]+)(?:\((?P<cls>[a-z0-9]+)\))?")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6 = r"\[[a-fA-F0-9:]+\]"  # as the distribution reference grammar has it (v3)
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|{_IPV6})(?::[0-9]+)?"
_NAME = re.compile(rf"(?:{_HOST}/)?{_COMPONENT}(?:/{_COMPONENT})*")
_ACTION = re.compile(r"[a-z]+|\*")


@dataclass(frozen=True, slots=True)
class Scope:
    """One resource and the actions asked for (or granted) on it."""

    type: str
    name: str
    actions: tuple[str, ...]
    resource_class: str | None = None

    def with_actions(self, actions: Iterable[str]) -> Scope:
        return Scope(self.type, self.name, tuple(actions), self.resource_class)

    @property
    def resource_type(self) -> str:
        """The type as written, with its class: 'repository(plugin)'."""
        return f"{self.type}({self.resource_class})" if self.resource_class else self.type

    def __str__(self) -> str:
        return f"{self.resource_type}:{self.name}:{','.join(self.actions)}"


def parse_scope(text: str) -> Scope:
    """Parse one resource scope; InvalidScopeError names what is wrong."""
    if len(text) > MAX_SCOPE_LENGTH:
        raise InvalidScopeError(f"scope longer than {MAX_SCOPE_LENGTH} characters")
    type_part, sep1, rest = text.partition(":")
    name, sep2, action_part = rest.rpartition(":")
    if not sep1 or not sep2:
        raise InvalidScopeError(f"scope {shown(text)} is not type:name:actions")
    type_match = _TYPE.fullmatch(type_part)
    if type_match is None:
        raise InvalidScopeError(f"scope {shown(text)}: invalid resource type {shown(type_part)}")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidScopeError(f"scope {shown(text)}: name longer than {MAX_NAME_LENGTH}")
    if _NAME.fullmatch(name) is None:
        raise InvalidScopeError(f"scope {shown(text)}: invalid resource name {shown(name)}")
    actions = tuple(action for action in action_part.split(",") if action)
    for action in actions:
        if _ACTION.fullmatch(action) is None:
            raise InvalidScopeError(f"scope {shown(text)}: invalid action {shown(action)}")
    return Scope(type_match["type"], name, _unique(actions), type_match["cls"])


def parse_scopes(values: Iterable[str]) -> list[Scope]:
    """Parse every `scope` parameter; one value may hold several scopes separated by spaces.

    Scopes naming the same resource are merged, keeping the order in which actions first appear.
    """
    merged: dict[tuple[str, str, str | None], Scope] = {}
    count = 0
    for value in values:
        for text in value.split(" "):
            if not text:
                continue
            count += 1
            if count > MAX_SCOPES:
                raise InvalidScopeError(f"more than {MAX_SCOPES} scopes in one request")
            scope = parse_scope(text)
            key = (scope.type, scope.name, scope.resource_class)
            if key in merged:
                scope = merged[key].with_actions(_unique(merged[key].actions + scope.actions))
            merged[key] = scope
    return list(merged.values())


def _unique(actions: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(actions))


def shown(value: object, limit: int = 80) -> str:
    """Quote client input for an error message or a log line: repr escapes control characters
    (no CRLF, no forged line), and text beyond `limit` characters is cut."""
    text = value if isinstance(value, str) else repr(value)
    quoted = repr(text if len(text) <= limit else text[:limit] + "...")
    return quoted if isinstance(value, str) else quoted[1:-1]
