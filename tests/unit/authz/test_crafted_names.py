"""A name a client crafts against a pattern that backtracks: with Python's `re`, one anonymous
request held the event loop for seconds (4 x longer per character more), so every other request
waited behind it. Each case runs in a child process, killed after a bound no backtracking case
of this size comes near (hours); a match in linear time takes microseconds."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

# Each policy, a name of the shape that makes a backtracking matcher try every split of it, and
# whether the name is granted.
CASES = [
    # distribution's own grammar of a path component, copied into an ACL
    ("/team/([a-z0-9]+[-_.]?)+/", "team/" + "a" * 60 + "/x", False),
    ("/team/([a-z0-9]+[-_.]?)+/", "team/" + "a" * 60, True),
    ("/(a|aa)+/", "a" * 200 + "b", False),
    # a glob of several `**`: `.*-.*-.*-.*-x`, tried on every split of 250 characters
    ("**-**-**-**-**-x", "-" * 250, False),
    ("**-**-**-**-**-x", "-" * 250 + "x", True),
]


@pytest.mark.parametrize(("pattern", "name", "granted"), CASES)
def test_a_crafted_name_is_decided_at_once(pattern: str, name: str, granted: bool) -> None:
    policy = json.dumps({"rules": [{"match": {"name": pattern}, "allow": ["pull"]}]})
    program = textwrap.dedent(
        f"""
        from app.authz.base import Requester
        from app.authz.engine import PolicyAuthorizer
        from app.authz.policy import parse_policy
        from app.protocol.scopes import Scope

        policy = parse_policy({policy!r}, "acl.yaml")
        scope = Scope("repository", {name!r}, ("pull",))
        answer = PolicyAuthorizer(lambda: policy).authorize(Requester(None, "s"), [scope])
        print(answer[0].actions == ("pull",))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == str(granted)
