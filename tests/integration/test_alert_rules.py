"""deploy/prometheus/registry-auth.rules.yml, checked by Prometheus's own promtool: the rules
load, each alert fires on the series of tests/vectors/prometheus-rules-cases.yml when it should
(with its summary rendered) and not before, and every metric they use is one the service
exports (the README's Metrics table, which tests/unit/test_metrics_table.py holds to the
code)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.support.procs import ProcessError, require_program, run_checked

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "registry-auth.rules.yml"
CASES = ROOT / "tests" / "vectors" / "prometheus-rules-cases.yml"
README = ROOT / "README.md"


def _rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def _promtool() -> str:
    return require_program("promtool", package="prometheus")


def test_promtool_loads_the_rules() -> None:
    checked = run_checked([_promtool(), "check", "rules", str(RULES)], what="promtool check")
    assert f"SUCCESS: {len(_rules())} rules found" in checked.stdout, checked.stdout


def test_each_alert_fires_when_it_should_and_not_before(tmp_path: Path) -> None:
    """The cases name each alert's summary; its description (no template in it) is added here
    from the rules file, as promtool compares every annotation."""
    descriptions = {rule["alert"]: rule["annotations"]["description"] for rule in _rules()}
    cases = yaml.safe_load(CASES.read_text(encoding="utf-8"))
    cases["rule_files"] = [str(RULES)]
    fired: set[str] = set()
    for test in cases["tests"]:
        for check in test["alert_rule_test"]:
            for alert in check["exp_alerts"]:
                alert["exp_annotations"]["description"] = descriptions[check["alertname"]]
                fired.add(check["alertname"])
    assert fired == set(descriptions)  # every alert has a case where it fires
    full = tmp_path / "cases.yml"
    full.write_text(yaml.safe_dump(cases), encoding="utf-8")
    run_checked([_promtool(), "test", "rules", str(full)], what="promtool test rules")


def test_a_wrong_threshold_is_caught(tmp_path: Path) -> None:
    """The cases can fail: a rule that fires a day late is refused by them."""
    wrong = tmp_path / "registry-auth.rules.yml"
    wrong.write_text(
        RULES.read_text(encoding="utf-8").replace("< 14 * 86400", "< 9 * 86400"), encoding="utf-8"
    )
    cases = yaml.safe_load(CASES.read_text(encoding="utf-8"))
    cases["rule_files"] = [str(wrong)]
    full = tmp_path / "cases.yml"
    full.write_text(yaml.safe_dump(cases), encoding="utf-8")
    with pytest.raises(ProcessError, match="RegistryAuthSigningCertificateExpiresSoon"):
        run_checked([_promtool(), "test", "rules", str(full)], what="promtool test rules")


def test_the_rules_use_only_metrics_the_service_exports() -> None:
    documented = set(re.findall(r"^\| `(registry_auth_\w+)` \|", README.read_text(), re.M))
    assert documented, "the README's Metrics table was not found"
    used = {
        re.sub(r"_(bucket|sum|count)$", "", name)
        for rule in _rules()
        for name in re.findall(r"registry_auth_\w+", rule["expr"])
    }
    assert used <= documented, used - documented


def test_every_alert_says_how_bad_and_what_to_do() -> None:
    for rule in _rules():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description"}, rule["alert"]
        assert all(rule["annotations"].values()), rule["alert"]
        assert rule["alert"].startswith("RegistryAuth")
