"""The ACL policy: its model and the parser of the YAML format (pure; no file I/O here).

    groups:                  # optional: group -> member accounts
      ci: [jenkins]
    rules:
      - match: {group: ci, name: "team/**"}
        allow: [pull]

Every problem found is collected and reported together, each naming the source, the rule index
(`rules[2]`, counted from 0 as in the file's list) and the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network, summarize_address_range
from typing import Any

import yaml

from app.authz.patterns import (
    GlobKind,
    Pattern,
    PatternError,
    ascii_classes,
    compile_pattern,
    is_regex,
)
from app.errors import PolicyError
from app.settings_sections import IPV4_MAPPED
from app.yaml_strict import load_strict_yaml, yaml_kind, yaml_problem

ACTIONS = ("pull", "push", "delete", "*")
CONDITIONS = ("account", "anonymous", "group", "type", "name", "service", "ip")
RULE_KEYS = ("match", "allow", "deny")
TOP_KEYS = ("groups", "rules")

Network = IPv4Network | IPv6Network


@dataclass(frozen=True, slots=True)
class Match:
    """The conditions of a rule; None means the condition is absent (holds for everyone)."""

    accounts: tuple[Pattern, ...] | None = None
    anonymous: bool | None = None
    groups: frozenset[str] | None = None
    types: tuple[Pattern, ...] | None = None
    names: tuple[Pattern, ...] | None = None
    services: tuple[Pattern, ...] | None = None
    networks: tuple[Network, ...] | None = None
    # A `group` condition and a `${group}` in `name`: the placeholder takes only those groups.
    narrows_group_slot: bool = False


@dataclass(frozen=True, slots=True)
class Rule:
    index: int
    match: Match
    allow: frozenset[str]
    deny: frozenset[str]
    text: str  # the rule as written, on one line, for explanations and logs

    @property
    def label(self) -> str:
        return f"rules[{self.index}]"


@dataclass(frozen=True, slots=True)
class Policy:
    source: str
    groups: Mapping[str, frozenset[str]]  # group -> members
    rules: tuple[Rule, ...]
    member_of: Mapping[str, frozenset[str]]  # account -> groups, precomputed for the hot path


def parse_policy(text: str, source: str) -> Policy:
    """Parse and validate a policy; PolicyError lists every problem."""
    try:
        data = load_strict_yaml(text)
    except yaml.YAMLError as exc:
        described = yaml_problem(exc, unsaid="syntax error")
        raise PolicyError([f"{source}: not valid YAML{described}"]) from None
    return _Parser(source).policy(data)


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []

    def problem(self, where: str, reason: str) -> None:
        self.problems.append(f"{self.source}: {where}: {reason}")

    def policy(self, data: object) -> Policy:
        if not isinstance(data, dict):
            raise PolicyError([f"{self.source}: must be a mapping with `groups` and `rules`"])
        for key in data:
            if key not in TOP_KEYS:
                self.problem(str(key), f"unknown key (known: {', '.join(TOP_KEYS)})")
        groups = self.groups(data.get("groups"))
        if "rules" not in data:
            # `rules:` with nothing after it (every rule commented out) is `rules: []`, as it
            # always was; a file caught half-written is not read (app.reload: it settles first).
            self.problem("rules", "missing (required; `rules: []` grants nothing)")
        # By type, never by truth: `rules: {}` (or `""`, `0`, `false`) is refused as
        # `rules: {a: 1}` is; only null (`rules:` alone, see above) reads as no rule.
        raw_rules = data.get("rules")
        if raw_rules is None:
            raw_rules = []
        elif not isinstance(raw_rules, list):
            self.problem("rules", f"must be a list of rules, not {yaml_kind(raw_rules)}")
            raw_rules = []
        rules = tuple(
            rule
            for index, raw in enumerate(raw_rules)
            if (rule := self.rule(index, raw, groups)) is not None
        )
        if self.problems:
            raise PolicyError(self.problems)
        return Policy(self.source, groups, rules, _member_of(groups))

    def groups(self, raw: object) -> dict[str, frozenset[str]]:
        if raw is None:  # `groups:` with nothing after it (every group commented out)
            return {}
        if not isinstance(raw, dict):
            self.problem(
                "groups", f"must map each group name to a list of accounts, not {yaml_kind(raw)}"
            )
            return {}
        groups: dict[str, frozenset[str]] = {}
        for name, members in raw.items():
            # `[]` (or nothing) declares a group whose members come from the authentication backend
            empty = members is None or members == []
            members_list = [] if empty else self.strings(f"groups.{name}", members)
            if not isinstance(name, str) or not name:
                self.problem(f"groups.{name}", "a group name must be a non-empty string")
            elif members_list is not None:
                groups[name] = frozenset(members_list)
        return groups

    def rule(self, index: int, raw: object, groups: Mapping[str, frozenset[str]]) -> Rule | None:
        where = f"rules[{index}]"
        if not isinstance(raw, dict):
            self.problem(where, "must be a mapping with `match` and `allow` and/or `deny`")
            return None
        before = len(self.problems)
        for key in raw:
            if key not in RULE_KEYS:
                self.problem(where, f"unknown key {key!r} (known: {', '.join(RULE_KEYS)})")
        match = None
        if "match" not in raw:
            self.problem(where, "missing `match` (write `match: {}` to match every request)")
        else:
            # Never `or {}`: `match: []`, `match: ""` or `match:` alone would match everyone.
            match = self.match(where, raw["match"], groups)
        if "allow" not in raw and "deny" not in raw:
            self.problem(where, "needs `allow` or `deny`")
        allow = self.actions(f"{where}.allow", raw["allow"]) if "allow" in raw else frozenset()
        deny = self.actions(f"{where}.deny", raw["deny"]) if "deny" in raw else frozenset()
        if len(self.problems) > before or match is None:
            return None
        return Rule(index, match, allow, deny, render_rule(raw))

    def match(self, where: str, raw: object, groups: Mapping[str, frozenset[str]]) -> Match | None:
        if not isinstance(raw, dict):
            self.problem(
                f"{where}.match",
                f"must be a mapping of conditions, not {yaml_kind(raw)} "
                "(write `match: {}` to match every request)",
            )
            return None
        for key in raw:
            if key not in CONDITIONS:
                known = ", ".join(CONDITIONS)
                self.problem(f"{where}.match", f"unknown condition {key!r} (known: {known})")
        anonymous = raw.get("anonymous")
        if "anonymous" in raw and not isinstance(anonymous, bool):
            # `anonymous:` alone is refused: read as no condition, it matched everyone.
            self.problem(
                f"{where}.match.anonymous", f"must be true or false, not {yaml_kind(anonymous)}"
            )
        if anonymous is True and "account" in raw:
            self.problem(f"{where}.match", "`anonymous: true` and `account` never hold together")
        # In the file's order of conditions, so that the problems are listed in it too.
        accounts = self.patterns(where, raw, "account", GlobKind.FLAT)
        group_names = self.group_names(where, raw, groups)
        types = self.patterns(where, raw, "type", GlobKind.FLAT)
        names = self.patterns(where, raw, "name", GlobKind.PATH, placeholders=True)
        return Match(
            accounts=accounts,
            anonymous=anonymous if isinstance(anonymous, bool) else None,
            groups=group_names,
            types=types,
            names=names,
            services=self.patterns(where, raw, "service", GlobKind.FLAT),
            networks=self.networks(where, raw),
            narrows_group_slot=group_names is not None
            and any("group" in pattern.placeholders for pattern in names or ()),
        )

    def patterns(
        self, where: str, raw: dict[Any, Any], key: str, kind: GlobKind, **options: bool
    ) -> tuple[Pattern, ...] | None:
        if key not in raw:
            return None
        texts = self.strings(f"{where}.match.{key}", raw[key]) or []
        compiled: list[Pattern] = []
        for text in texts:
            if key == "type" and "(" in text and not is_regex(text):  # a class is never matched
                self.problem(
                    f"{where}.match.type",
                    f"{text!r}: a type is matched without its class; write {text.split('(')[0]!r}",
                )
                continue
            narrowed = ascii_classes(text) if key == "account" else []
            if narrowed:  # names are ASCII by the protocol's grammar; accounts are not
                self.problem(
                    f"{where}.match.account",
                    f"`{text}`: {', '.join(dict.fromkeys(narrowed))} matches ASCII only in RE2 "
                    "(the ACL's regular expressions), where an account may hold any letter: "
                    "write the characters meant, e.g. [a-z0-9_] or [\\pL\\pN_]",
                )
                continue
            try:
                compiled.append(compile_pattern(text, kind, **options))
            except PatternError as exc:
                self.problem(f"{where}.match.{key}", str(exc))
        return tuple(compiled)

    def group_names(
        self, where: str, raw: dict[Any, Any], groups: Mapping[str, frozenset[str]]
    ) -> frozenset[str] | None:
        if "group" not in raw:
            return None
        names = self.strings(f"{where}.match.group", raw["group"]) or []
        for name in names:
            if name not in groups:
                self.problem(
                    f"{where}.match.group",
                    f"group {name!r} is not defined under `groups:` (list it there, with "
                    "`[]` if its members come only from the authentication backend)",
                )
        return frozenset(names)

    def networks(self, where: str, raw: dict[Any, Any]) -> tuple[Network, ...] | None:
        if "ip" not in raw:
            return None
        networks: list[Network] = []
        for text in self.strings(f"{where}.match.ip", raw["ip"]) or []:
            try:
                found = _networks(text)
            except ValueError as exc:
                self.problem(
                    f"{where}.match.ip", f"{text!r} is not an address, CIDR or range: {exc}"
                )
                continue
            if any(isinstance(n, IPv6Network) and n.subnet_of(IPV4_MAPPED) for n in found):
                # A client's ::ffff:10.1.2.3 is matched as 10.1.2.3: such a network held for
                # nobody.
                self.problem(f"{where}.match.ip", f"{text!r}: write IPv4-mapped addresses as IPv4")
                continue
            networks.extend(found)
        return tuple(networks)

    def actions(self, where: str, raw: object) -> frozenset[str]:
        actions = self.strings(where, raw) or []
        for action in actions:
            if action not in ACTIONS:
                self.problem(where, f"unknown action {action!r} (known: {', '.join(ACTIONS)})")
        return frozenset(actions)

    def strings(self, where: str, raw: object) -> list[str] | None:
        """One string or a non-empty list of strings; None (and a problem) otherwise."""
        values = [raw] if isinstance(raw, str) else raw
        if values == []:
            # A condition of `[]` held for nobody and an `allow`/`deny` of `[]` did nothing:
            # a deny rule so written silently denied nothing.
            self.problem(
                where,
                "is an empty list, which matches or grants nothing: list at least one value, "
                "or leave the key out",
            )
            return None
        if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
            self.problem(where, "must be a non-empty string or a list of them (quote numbers)")
            return None
        return values


def _member_of(groups: Mapping[str, frozenset[str]]) -> dict[str, frozenset[str]]:
    member_of: dict[str, set[str]] = {}
    for group, members in groups.items():
        for account in members:
            member_of.setdefault(account, set()).add(group)
    return {account: frozenset(names) for account, names in member_of.items()}


def render_rule(raw: Mapping[str, Any]) -> str:
    """The rule in the file's own format, on one line: `{match: {...}, allow: [pull]}`."""
    return yaml.safe_dump(
        dict(raw), default_flow_style=True, sort_keys=False, width=1_000_000
    ).strip()


def _networks(text: str) -> list[Network]:
    """An address, a CIDR, or a range `FIRST-LAST` (both included; the form LAIN's
    `registry_ip_whitelist` used) as the fewest networks that cover it exactly."""
    if "-" not in text:
        return [ip_network(text)]
    first_text, last_text = (part.strip() for part in text.split("-", 1))
    first, last = ip_address(first_text), ip_address(last_text)
    if first.version != last.version:
        raise ValueError("a range's two ends must both be IPv4 or both IPv6")
    if first > last:  # type: ignore[operator]  # same version, checked above
        raise ValueError(f"the range's first address {first} comes after its last {last}")
    return list(summarize_address_range(first, last))
