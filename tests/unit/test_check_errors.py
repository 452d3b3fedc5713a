"""``mailflow check`` refuses what would fail later: a template field typo, broken YAML.

Each error is printed at ``file:line:column`` and the command exits 2, before
anything listens or any customer's message meets the mistake.
"""

from __future__ import annotations

from pathlib import Path

from clirunner import run_cli
from conftest import full_chain_rules
from mailflow.config.yaml_errors import INDENTATION

TEMPLATE = ("Subject: [{{ case }}] Accusé de réception\n\n"
            "Bonjour {{ customer_name }},\n"
            "votre dossier {{ case }} est enregistré.\n"
            "Réponse au plus tard le {{ promised }}.\n")


def check(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    result = run_cli("check", *args, "--state-dir", str(tmp_path / "state"))
    return result.returncode, result.stdout, result.stderr


def rules_with_template(tmp_path: Path, text: str) -> Path:
    rules = full_chain_rules(tmp_path / "rules")
    (rules / "templates" / "ack.fr.txt").write_text(text, encoding="utf-8")
    return rules


def test_check_passes_a_good_template(tmp_path: Path) -> None:
    rules = rules_with_template(tmp_path, TEMPLATE)
    code, out, err = check(tmp_path, "--rules", str(rules))
    assert code == 0, err
    assert "chain: number, deduplicate, prioritise, route, sla, escalate, acknowledge" in out


def test_check_refuses_a_template_field_typo_at_file_line_column(tmp_path: Path) -> None:
    rules = rules_with_template(tmp_path, TEMPLATE.replace("{{ promised }}", "{{ promise }}"))
    code, out, err = check(tmp_path, "--rules", str(rules))
    assert code == 2
    assert "rules OK" not in out
    template = (rules / "templates" / "ack.fr.txt").resolve()
    assert (f"{template}:5:28: unknown field 'promise' (did you mean 'promised'?); "
            "known fields: case, ") in err, err
    assert "mailflow: 1 configuration error(s)" in err


def test_check_refuses_a_template_syntax_error_at_file_line(tmp_path: Path) -> None:
    rules = rules_with_template(tmp_path, TEMPLATE.replace("{{ case }} est", "{{ case } est"))
    code, _, err = check(tmp_path, "--rules", str(rules))
    assert code == 2
    template = (rules / "templates" / "ack.fr.txt").resolve()
    assert f"{template}:4: template syntax error: unexpected '}}'" in err, err


def test_check_refuses_a_rules_yaml_error_with_a_hint(tmp_path: Path) -> None:
    rules = full_chain_rules(tmp_path / "rules")
    (rules / "zz-extra.yaml").write_text(
        "headers:\n  add:\n    X-Team: sav\n   X-Site: paris\n", encoding="utf-8")
    code, out, err = check(tmp_path, "--rules", str(rules))
    assert code == 2
    assert "rules OK" not in out
    assert (f"{rules / 'zz-extra.yaml'}:4:4: {INDENTATION} — YAML: "
            "expected <block end>, but found '<block mapping start>'") in err, err


def test_check_refuses_a_configuration_yaml_error_with_a_hint(tmp_path: Path) -> None:
    config = tmp_path / "mailflow.yaml"
    config.write_text("listen: 127.0.0.1:2525\nworkers: 1\nworkers: 2\n", encoding="utf-8")
    code, out, err = check(tmp_path, "--config", str(config))
    assert code == 2
    assert "configuration OK" not in out
    assert (f"{config}:3:1: the key 'workers' is written twice in the same mapping "
            "(first at line 2): keep one — YAML: found duplicate key") in err, err
