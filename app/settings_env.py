"""The REGISTRY_AUTH_* environment variables as a settings source, and which variable (or the
config file) gave a value that failed its check: a bad value is one line naming its origin."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic.fields import FieldInfo
from pydantic_settings import EnvSettingsSource

from app.errors import ConfigError
from app.setting_types import boolean_number_in

ENV_PREFIX = "REGISTRY_AUTH_"


def value_source(
    loc: tuple[int | str, ...], config_file: Path | None, file_data: dict[str, Any]
) -> str:
    """Where the faulty value came from: ` (in FILE)`, ` (from VARIABLE)`, or both."""
    names = {name.upper(): name for name in os.environ}
    variable = _variable_behind(loc, file_data, names)
    if variable is not None:
        return f" (from {variable})"
    # A section's own check (two keys that go together) may fail over variables below it.
    below = ENV_PREFIX + "__".join(str(part) for part in loc).upper() + "__"
    variables = sorted(name for upper, name in names.items() if loc and upper.startswith(below))
    in_file = config_file is not None and (not variables or _holds(file_data, loc))
    places = [f"in {config_file}"] if in_file else []
    places += [f"from {', '.join(variables)}"] if variables else []
    return f" ({' and '.join(places)})" if places else ""


def _variable_behind(
    loc: tuple[int | str, ...], file_data: dict[str, Any], names: dict[str, str]
) -> str | None:
    """The REGISTRY_AUTH_* variable that gave the value at `loc`, when one did."""
    for depth in range(len(loc), 0, -1):
        name = names.get(ENV_PREFIX + "__".join(str(part) for part in loc[:depth]).upper())
        if name is None:
            continue
        # A list or section in JSON replaces the file's list and is merged over its section:
        # the value is the variable's unless only the file has the key below it.
        if depth == len(loc) or not _holds(file_data, loc[: depth + 1]):
            return name
        return name if _holds(_json_or_none(os.environ[name]), loc[depth : depth + 1]) else None
    return None


def _holds(data: Any, path: tuple[int | str, ...]) -> bool:
    """Whether parsed YAML or JSON has a value at `path` (keys and list indexes)."""
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return False
    return True


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


class _NotJsonError(ValueError):
    def __init__(self, key: str, field: FieldInfo | None, value: str) -> None:
        super().__init__(key)
        self.key, self.field, self.value = key, field, value


class EnvironmentSource(EnvSettingsSource):
    """The REGISTRY_AUTH_* variables. A list or section that is not JSON is a ConfigError naming
    the variable: pydantic-settings raises a SettingsError that names neither it nor the fix."""

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        try:
            return super().decode_complex_value(field_name, field, value)
        except ValueError:
            # `field` is None for a dict's value (none here); typed as pydantic-settings has it.
            raise _NotJsonError(field_name, field, value) from None

    def prepare_field_value(
        self, field_name: str, field: FieldInfo, value: Any, value_is_complex: bool
    ) -> Any:
        try:
            prepared = super().prepare_field_value(field_name, field, value, value_is_complex)
        except _NotJsonError as exc:
            raise _not_json(field_name, exc, self.env_vars) from None
        # A file's `true` for a number is refused before pydantic reads it as 1 (load_settings);
        # so is a variable's, in a section or list given as JSON (`{"max_body_bytes": true}`).
        boolean = boolean_number_in(field.annotation, prepared, (field_name,))
        if boolean is not None:
            key = ".".join(str(part) for part in boolean)
            where = value_source(boolean, None, {})
            raise ConfigError(key, f"must be a number, not true or false{where}")
        return prepared


def _not_json(
    field_name: str, exc: _NotJsonError, env_vars: Mapping[str, str | None]
) -> ConfigError:
    # The variable is the field's own or one below it (REGISTRY_AUTH_ETCD__ENDPOINTS).
    top = (ENV_PREFIX + field_name).lower()
    found = [
        name
        for name, value in env_vars.items()
        if (name == top or name.startswith(f"{top}__"))
        and name.endswith(exc.key.lower())
        and value == exc.value
    ]
    variable = (found[0] if found else top).upper()
    key = variable.removeprefix(ENV_PREFIX).lower().replace("__", ".")
    example = _json_example(exc)
    return ConfigError(
        key, f"{variable} is not JSON (a list or section takes JSON, e.g. {example})"
    )


def _json_example(exc: _NotJsonError) -> str:
    """The value as a JSON list when it reads as one (`10.0.0.0/8,192.168.0.0/16`)."""
    annotation = exc.field.annotation if exc.field is not None else None
    is_list = list in (get_origin(annotation), *map(get_origin, get_args(annotation)))
    if is_list and exc.value.strip() and not set(exc.value) & set('[]{}"'):
        return json.dumps([item.strip() for item in exc.value.split(",")])
    return '["a", "b"]' if is_list else '{"key": "value"}'
