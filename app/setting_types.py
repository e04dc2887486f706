"""Checked types and checks that the settings, their sections and the backends' settings share:
a path that may not be empty, a URL port in range."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BeforeValidator


def _refuse_empty(value: object) -> object:
    # pydantic reads "" as Path("."): the config's own folder, which fails much later
    # ("cannot read .: Is a directory") without naming the key.
    if isinstance(value, str) and not value.strip():
        raise ValueError("is empty: give a path")
    return value


def _refuse_empty_optional(value: object) -> object:
    if isinstance(value, str) and not value.strip():
        raise ValueError("is empty: give a path, or null to leave it unset")
    return value


FilePath = Annotated[Path, BeforeValidator(_refuse_empty)]
OptionalFilePath = Annotated[Path | None, BeforeValidator(_refuse_empty_optional)]
ClientIPHeader = Literal["x-forwarded-for", "x-real-ip"]  # where a trusted proxy names its client


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
