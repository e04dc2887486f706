"""YAML for files people edit (the config, the ACL): a key given twice in one mapping is an
error, not a silent override of the first by the second.

Anchors and merge keys work as YAML 1.1 has them (`<<: *common`, or `<<: [*a, *b]`): a key
written in the mapping itself overrides the merged one of the same name, which is what a merge
is for, so only keys written twice in the mapping itself are refused."""

from __future__ import annotations

from datetime import date
from typing import Any

import yaml

_MERGE = "tag:yaml.org,2002:merge"


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a repeated key with its line."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            # A merge key has no constructor of its own: SafeLoader folds it in (below).
            key = "<<" if key_node.tag == _MERGE else self.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:  # `? [a, b]`: a list as a key (PyYAML itself says it too late)
                raise yaml.constructor.ConstructorError(
                    None, None, "a list or mapping as a key", key_node.start_mark
                ) from None
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_timestamp(self, node: yaml.ScalarNode) -> Any:
        """A date or time; one that looks like a date but is none (`2027-02-30`, a month 13)
        raised a ValueError with no line, past every caller's YAMLError: a traceback."""
        try:
            return super().construct_yaml_timestamp(node)
        except (ValueError, OverflowError) as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"{node.value!r} is not a valid date or time ({exc})", node.start_mark
            ) from None


UniqueKeyLoader.add_constructor(
    "tag:yaml.org,2002:timestamp", UniqueKeyLoader.construct_yaml_timestamp
)


def load_strict_yaml(text: str) -> Any:
    """Parsed YAML; yaml.YAMLError (with `problem_mark`) for bad syntax or a repeated key,
    and (with `problem`) for nesting deeper than the parser can follow."""
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        error = yaml.YAMLError("nested too deeply")
        error.problem = "nested too deeply"  # type: ignore[attr-defined]
        raise error from None


def yaml_problem(exc: yaml.YAMLError, unsaid: str = "") -> str:
    """Where and what, for an error message: ` at line 3: found a tab` (either part may be
    missing; `unsaid` stands for a problem PyYAML does not name)."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or unsaid
    return f"{where}: {problem}" if problem else where


# bool before int: YAML's true is a Python int too; a datetime is a date.
_KINDS: tuple[tuple[type, str], ...] = (
    (bool, "a boolean"),
    (dict, "a mapping"),
    (list, "a list"),
    (str, "a string"),
    (int, "a number"),
    (float, "a number"),
    (date, "a time"),
)


def yaml_kind(value: object) -> str:
    """What a loaded YAML value is, for a message such as `must be X, not Y`: "null", "a
    mapping" (an empty `{}` too), "a list", "a string", "a number", "a boolean", "a time"."""
    if value is None:
        return "null"
    for kind, name in _KINDS:
        if isinstance(value, kind):
            return name
    return f"a {type(value).__name__}"
