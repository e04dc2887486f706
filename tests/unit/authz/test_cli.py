"""`registry-auth acl check` and `registry-auth acl explain`, run through the real entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from app.main import main
from tests.unit.authz.cases import ACL_VECTORS, AclCase, load_acl_cases

EXAMPLE = ACL_VECTORS / "issue_example.yaml"


@pytest.fixture
def acl(tmp_path: Path) -> Path:
    path = tmp_path / "acl.yaml"
    policy = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))["policy"]
    path.write_text(yaml.safe_dump(policy, sort_keys=False), encoding="utf-8")
    return path


def test_check_accepts_a_valid_policy(acl: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["acl", "check", "--acl", str(acl)]) == 0
    assert capsys.readouterr().out == f"{acl}: ok (6 rule(s), 1 group(s))\n"


def test_check_lists_every_problem_and_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "rules:\n  - match: {acount: x}\n    allow: [pull]\n"
        "  - match: {group: devs}\n    allow: [pul]\n",
        encoding="utf-8",
    )
    assert main(["acl", "check", "--acl", str(bad)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"registry-auth: error: {bad}: rules[0].match: unknown condition 'acount' "
        "(known: account, anonymous, group, type, name, service, ip)",
        f"registry-auth: error: {bad}: rules[1].match.group: group 'devs' is not defined under "
        "`groups:` (list it there, with `[]` if its members come only from the authentication "
        "backend)",
        f"registry-auth: error: {bad}: rules[1].allow: unknown action 'pul' "
        "(known: pull, push, delete, *)",
    ]


def test_check_reads_acl_from_the_config_relative_to_it(
    tmp_path: Path, acl: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "issuer: i\nservice: s\nrealm: http://a.test/token\nacl: acl.yaml\n", encoding="utf-8"
    )
    assert main(["acl", "check", "--config", str(config)]) == 0
    assert "ok (6 rule(s)" in capsys.readouterr().out


def test_check_without_any_acl_names_the_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("issuer: i\nservice: s\nrealm: http://a.test/token\n", encoding="utf-8")
    assert main(["acl", "check", "--config", str(config)]) == 2
    assert "config: acl: no ACL file" in capsys.readouterr().err


def test_explain_without_any_acl_explains_the_built_in_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What the server applies without `acl`; it was `no ACL file` and exit 2, which left the
    troubleshooting guide's command for `insufficient_scope` useless on every shipped config."""
    config = tmp_path / "config.yaml"
    config.write_text("issuer: i\nservice: s\nrealm: http://a.test/token\n", encoding="utf-8")
    argv = ["acl", "explain", "--config", str(config), "--account", "bob"]
    assert main([*argv, "repository:a/b:pull,push,delete", "registry:catalog:*"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("policy: built-in default (no `acl` in the config)\n")
    assert "repository:a/b:pull,push,delete\n  granted: pull,push\n" in out
    assert "  delete: not granted: no applying rule allows it\n" in out
    assert "registry:catalog:*\n  granted: nothing\n" in out
    argv = ["acl", "explain", "--config", str(config), "--anonymous", "repository:a/b:pull"]
    assert main(argv) == 0
    assert "repository:a/b:pull\n  granted: nothing\n" in capsys.readouterr().out


def test_check_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["acl", "check", "--acl", str(tmp_path / "nope.yaml")]) == 1
    assert "cannot read the ACL file" in capsys.readouterr().err


def test_explain_shows_grants_and_deciding_rules(
    acl: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["acl", "explain", "--acl", str(acl), "--account", "jenkins", "--ip", "10.2.3.4"]
    assert main([*argv, "repository:prod/app:pull,push,delete"]) == 0
    out = capsys.readouterr().out
    assert out == (
        f"policy: {acl}\n"
        "requester: account 'jenkins'; groups: ci (from the policy); ip: 10.2.3.4; service: -\n"
        "\n"
        "repository:prod/app:pull,push,delete\n"
        "  granted: pull\n"
        "  pull: granted\n"
        "    allowed by rules[4] {match: {ip: [10.0.0.0/8, 192.168.1.5]}, allow: [pull, push]}\n"
        "  push: denied (deny wins)\n"
        "    allowed by rules[4] {match: {ip: [10.0.0.0/8, 192.168.1.5]}, allow: [pull, push]}\n"
        "    denied by rules[5] {match: {name: prod/**}, deny: [delete, push]}\n"
        "  delete: denied (deny wins)\n"
        "    denied by rules[5] {match: {name: prod/**}, deny: [delete, push]}\n"
    )


def test_explain_when_no_rule_applies(acl: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["acl", "explain", "--acl", str(acl), "--anonymous", "registry:catalog:*"]) == 0
    out = capsys.readouterr().out
    assert "requester: anonymous; groups: none; ip: unknown" in out
    assert "  granted: nothing\n  no rule applies to this request\n" in out
    assert "  *: not granted: no applying rule allows it\n" in out


def test_explain_says_where_a_backend_users_groups_come_from(
    acl: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """explain asks no backend: an account without policy groups may have backend ones."""
    argv = ["acl", "explain", "--acl", str(acl), "--account", "carol", "repository:x/y:pull"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "requester: account 'carol'; groups: none (a backend's groups: --group); ip:" in out


def test_explain_json_and_backend_groups(acl: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["acl", "explain", "--acl", str(acl), "--account", "zed", "--group", "ci", "--json"]
    assert main([*argv, "--service", "reg.example", "repository:team/x:pull,push"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["requester"] == {
        "account": "zed",
        "groups": ["ci"],
        "groups_from_policy": [],
        "ip": None,
        "service": "reg.example",
    }
    (scope,) = data["scopes"]
    assert scope["granted"] == ["pull"]
    assert scope["actions"]["pull"]["allowed_by"] == [
        {"index": 2, "rule": "{match: {group: ci, name: team/**}, allow: [pull]}"}
    ]
    assert scope["actions"]["push"] == {"granted": False, "allowed_by": [], "denied_by": []}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--account", "a", "--ip", "300.1.1.1", "repository:a/b:pull"],
            "error: --ip '300.1.1.1': not an IP address",  # not a config problem: no `config:`
        ),
        (["--account", "a", "repository:a/b"], "is not type:name:actions"),
        # Requests the server never sees, which it would have explained as granted.
        (
            ["--anonymous", "--group", "ci", "repository:a/b:pull"],
            "error: --group with --anonymous: an unauthenticated request has no groups",
        ),
        (["--account", "", "repository:a/b:pull"], "error: --account is empty"),
    ],
)
def test_explain_bad_input_is_one_line(
    acl: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(["acl", "explain", "--acl", str(acl), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.splitlines()) == 1


def test_explain_needs_account_or_anonymous(acl: Path) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["acl", "explain", "--acl", str(acl), "repository:a/b:pull"])
    assert exited.value.code == 2


@pytest.mark.parametrize(
    "case", [c for c in load_acl_cases() if c.file == "issue_example.yaml"], ids=str
)
def test_explain_json_matches_the_vectors(
    case: AclCase, acl: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    req = case.requester
    who = ["--anonymous"] if req.account is None else ["--account", req.account]
    ip = ["--ip", str(req.ip)] if req.ip is not None else []
    scopes = [str(scope) for scope in case.scopes]
    assert main(["acl", "explain", "--acl", str(acl), "--json", *who, *ip, *scopes]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [
        f"{s['scope'].rsplit(':', 1)[0]}:{','.join(s['granted'])}" for s in data["scopes"]
    ] == case.granted


def test_explain_takes_the_servers_services_only(
    tmp_path: Path, acl: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        f"issuer: i\nservice: prod\nextra_services: [staging]\nrealm: http://a.test/token\n"
        f"acl: {acl}\n",
        encoding="utf-8",
    )
    explain = ["acl", "explain", "--config", str(config), "--account", "zed"]
    assert main([*explain, "--service", "staging", "repository:a/b:pull"]) == 0
    capsys.readouterr()
    assert main([*explain, "--service", "dev", "repository:a/b:pull"]) == 2
    assert "--service 'dev': this server issues no tokens for it" in capsys.readouterr().err


def test_explain_says_when_an_authorization_webhook_decides_further(
    acl: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    settings = {
        "issuer": "auth",
        "service": "reg.example",
        "realm": "https://auth.example/token",
        "acl": str(acl),
        "authz_webhook": {"url": "https://projects.example/authorize", "name": "projects"},
    }
    config.write_text(yaml.safe_dump(settings), encoding="utf-8")
    argv = ["acl", "explain", "--config", str(config), "--account", "zed", "--group", "ci"]
    assert main([*argv, "repository:team/x:pull"]) == 0
    out = capsys.readouterr().out
    assert out.endswith(
        "then the authorization webhook 'projects' (https://projects.example/authorize) "
        "narrows this further: not asked here\n"
    )
    assert main([*argv, "--json", "repository:team/x:pull"]) == 0
    assert json.loads(capsys.readouterr().out)["narrowed_by_authz_webhook"] == "projects"
