"""Reading a policy file: the one place the authorization package touches the file system."""

from __future__ import annotations

from pathlib import Path

from app.authz.policy import Policy, parse_policy
from app.errors import PolicyError


def load_policy(path: Path) -> Policy:
    """Read and parse the ACL file at `path`; PolicyError names the file and every problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError([f"{path}: cannot read the ACL file: {exc.strerror}"]) from None
    except UnicodeDecodeError:
        raise PolicyError([f"{path}: the ACL file is not UTF-8 text"]) from None
    return parse_policy(text, str(path))
