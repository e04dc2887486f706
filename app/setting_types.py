"""Checked types and checks that the settings, their sections and the backends' settings share:
a path that may not be empty, a URL port in range."""

from __future__ import annotations

from pathlib import Path
from types import UnionType
from typing import Annotated, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator


def _refuse_empty(value: object) -> object:
    # pydantic reads "" as Path("."): the config's own folder, which fails much later
    # ("cannot read .: Is a directory") without naming the key.
    if isinstance(value, str) and not value.strip():
        raise ValueError("is empty: give a path")
    if value is None:  # pydantic's own words name a class: "not a valid path for <class ...>"
        raise ValueError("must be a path, not null (leave the key out for its default)")
    return value


def _refuse_empty_optional(value: object) -> object:
    if isinstance(value, str) and not value.strip():
        raise ValueError("is empty: give a path, or null to leave it unset")
    return value


FilePath = Annotated[Path, BeforeValidator(_refuse_empty)]
OptionalFilePath = Annotated[Path | None, BeforeValidator(_refuse_empty_optional)]


def _lower_case(value: object) -> object:
    # A header's name is the same in any case: `X-Real-IP`, as nginx's docs spell it, was refused.
    return value.lower() if isinstance(value, str) else value


# where a trusted proxy names its client
ClientIPHeader = Annotated[Literal["x-forwarded-for", "x-real-ip"], BeforeValidator(_lower_case)]


def check_url_port(url: str) -> None:
    """ValueError unless the URL's port, when it names one, is a number in 1..65535."""
    try:
        port = urlsplit(url).port
    except ValueError:
        port = 0
    if port == 0:
        # Not the URL itself: what follows `host:` may be a password or a key (`user:pa/ss@`,
        # `...:99999/auth?key=...`) that the parser took for a port.
        raise ValueError("the URL's port is not a number in 1-65535")


Loc = tuple[int | str, ...]


def boolean_number(model: type[BaseModel], data: object, loc: Loc = ()) -> Loc | None:
    """Where `data`, the raw settings of `model`, gives `true` or `false` to a number setting,
    if it does: pydantic reads it as 1 or 0 (`token_ttl: true`: tokens of a second)."""
    if not isinstance(data, dict):
        return None
    for name, field in model.model_fields.items():
        if name in data:
            found = boolean_number_in(field.annotation, data[name], (*loc, name))
            if found is not None:
                return found
    return None


def boolean_number_in(annotation: object, value: object, loc: Loc) -> Loc | None:
    """`boolean_number` for a value of the type `annotation`, found at `loc`."""
    kinds = _kinds(annotation)
    if isinstance(value, bool):
        return loc if bool not in kinds and any(k in (int, float) for k in kinds) else None
    for kind in kinds:
        if isinstance(kind, type) and issubclass(kind, BaseModel) and isinstance(value, dict):
            return boolean_number(kind, value, loc)
        if get_origin(kind) is list and isinstance(value, list):
            (item,) = get_args(kind) or (object,)
            for index, element in enumerate(value):
                found = boolean_number_in(_chosen(item, element), element, (*loc, index))
                if found is not None:
                    return found
    return None


def _kinds(annotation: object) -> tuple[object, ...]:
    """The types an annotation admits: its members for a union, itself otherwise."""
    if get_origin(annotation) is Annotated:
        return _kinds(get_args(annotation)[0])
    if get_origin(annotation) in (Union, UnionType):
        return tuple(k for arg in get_args(annotation) for k in _kinds(arg))
    return (annotation,)


def _chosen(annotation: object, value: object) -> object:
    """Of a union of models told apart by their `type` (the backends), the one `value` names."""
    models = [k for k in _kinds(annotation) if isinstance(k, type) and issubclass(k, BaseModel)]
    if len(models) <= 1 or not isinstance(value, dict):
        return models[0] if models else annotation
    for candidate in models:
        field = candidate.model_fields.get("type")
        if field is not None and value.get("type") in get_args(field.annotation):
            return candidate
    return annotation
