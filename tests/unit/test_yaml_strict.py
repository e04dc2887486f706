"""The YAML every edited file goes through: a key written twice is refused with its line; anchors
and merge keys work, a key written beside a merge overriding the merged one."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from app.authz.base import Requester
from app.authz.engine import PolicyAuthorizer
from app.authz.policy import parse_policy
from app.errors import PolicyError
from app.main import main
from app.protocol.scopes import Scope
from app.yaml_strict import load_strict_yaml, yaml_problem

BASE_CONFIG = "issuer: i\nservice: registry.local\nrealm: http://127.0.0.1:5001/token\n"

COMMON = "common: &common {pull: 1, push: 2}\nextra: &extra {delete: 3}\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (COMMON + "team:\n  <<: *common\n", {"pull": 1, "push": 2}),
        (COMMON + "team:\n  <<: *common\n  push: 9\n", {"pull": 1, "push": 9}),
        (COMMON + "team:\n  push: 9\n  <<: *common\n", {"pull": 1, "push": 9}),
        (COMMON + "team:\n  <<: [*common, *extra]\n", {"pull": 1, "push": 2, "delete": 3}),
        (COMMON + "team: *common\n", {"pull": 1, "push": 2}),
    ],
)
def test_merge_keys_merge(text: str, expected: dict[str, int]) -> None:
    assert load_strict_yaml(text)["team"] == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("a: 1\nb: 2\na: 3\n", " at line 3: duplicate key 'a'"),
        (COMMON + "team:\n  <<: *common\n  push: 8\n  push: 9\n", " at line 6: duplicate key"),
        (COMMON + "team:\n  <<: *common\n  <<: *extra\n", " at line 5: duplicate key '<<'"),
        ("team:\n  <<: 3\n", " at line 2: expected a mapping or list of mappings for merging, "),
        ("team:\n  <<: *nowhere\n", " at line 2: found undefined alias 'nowhere'"),
        # Dates that are none: a ValueError without a line, past every caller (a traceback).
        ("a: 1\nexpires: 2027-02-30\n", " at line 2: '2027-02-30' is not a valid date or time"),
        ("ttl: 2026-13-01\n", " at line 1: '2026-13-01' is not a valid date or time"),
        ("t: 2026-01-01 25:00:00\n", " at line 1: '2026-01-01 25:00:00' is not a valid date"),
    ],
)
def test_refused_with_the_line(text: str, problem: str) -> None:
    with pytest.raises(yaml.YAMLError) as caught:
        load_strict_yaml(text)
    assert yaml_problem(caught.value).startswith(problem)


def test_an_acl_rule_built_on_a_merged_one() -> None:
    policy = parse_policy(
        "rules:\n"
        "  - &team {match: {account: alice, name: 'team/*'}, allow: [pull, push]}\n"
        "  - <<: *team\n"
        "    match: {account: bob, name: 'team/*'}\n"
        "    allow: [pull]\n",
        "acl.yaml",
    )
    scopes = [Scope("repository", "team/app", ("pull", "push"))]
    authorizer = PolicyAuthorizer(lambda: policy)
    granted = {
        account: [str(s) for s in authorizer.authorize(Requester(account, "registry.test"), scopes)]
        for account in ("alice", "bob")
    }
    assert granted == {
        "alice": ["repository:team/app:pull,push"],
        "bob": ["repository:team/app:pull"],
    }


def test_an_acl_with_a_bad_merge_names_the_line() -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy("rules:\n  - <<: [1]\n    allow: [pull]\n", "acl.yaml")
    assert caught.value.problems[0].startswith("acl.yaml: not valid YAML at line 2: expected a")


def test_a_real_date_still_loads_as_one() -> None:
    loaded = load_strict_yaml("d: 2028-02-29\nt: 2027-02-28 10:00:00\n")
    assert (loaded["d"].isoformat(), loaded["t"].isoformat()) == (
        "2028-02-29",
        "2027-02-28T10:00:00",
    )


@pytest.mark.parametrize(
    ("argv", "file", "text"),
    [
        (["registry-config"], "config.yaml", BASE_CONFIG + "token_ttl: 2026-13-01\n"),
        (["acl", "check", "--acl"], "acl.yaml", "rules:\n  - match: {account: 2026-13-01}\n"),
        (
            ["robots", "list", "--robots-file"],
            "robots.yaml",
            "robots:\n  ci:\n    expires: 2027-02-30\n",
        ),
    ],
)
def test_a_date_that_is_none_is_one_line_from_every_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], file: str, text: str
) -> None:
    path = tmp_path / file
    path.write_text(text)
    option = ["--config"] if argv == ["registry-config"] else []
    assert main([*argv, *option, str(path)]) in (1, 2)
    err = capsys.readouterr().err
    assert "is not a valid date or time" in err, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
