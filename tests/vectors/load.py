"""Loading vector files for parametrized tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

VECTORS = Path(__file__).parent


def load(name: str) -> Any:
    return yaml.safe_load((VECTORS / name).read_text(encoding="utf-8"))
