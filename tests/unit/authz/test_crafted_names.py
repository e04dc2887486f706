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

from app.authz.patterns import GlobKind, compile_pattern

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


def test_a_group_too_long_for_the_pattern_matches_nothing_and_is_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The load-time check fills a placeholder with a value as long as an account may be; a
    group from a backend may be longer, and RE2 then refused the pattern during a request (a
    500, compiled again at every request)."""
    pattern = compile_pattern("/(?:${group}${group}){1000}/", GlobKind.PATH, placeholders=True)
    huge = frozenset({"g" * 5000})
    with caplog.at_level("WARNING", logger="app.authz.patterns"):
        assert pattern.matches("g" * 10, None, huge) is False
        assert pattern.matches("g" * 10, None, huge) is False
    assert len(caplog.records) == 1
    assert "matches nothing for a value: pattern too large" in caplog.text


@pytest.mark.parametrize(
    ("text", "linear"),
    [
        ("team/**", False),
        ("*${account}*", False),  # two wildcards: at worst quadratic in 255 characters
        ("*${account}*-*", True),  # a placeholder parts them: three, not `**` and one
        ("**/a/**/b/**", True),
        ("/team/.*/", True),  # a regex, always
    ],
)
def test_which_patterns_run_on_re2(text: str, linear: bool) -> None:
    assert compile_pattern(text, GlobKind.PATH, placeholders=True).linear is linear
