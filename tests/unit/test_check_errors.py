"""``mailflow check`` refuses what would fail later: a template field typo, broken YAML.

Each error is printed at ``file:line:column`` and the command exits 2, before
anything listens or any customer's message meets the mistake.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from clirunner import run_cli
from conftest import full_chain_rules
from mailflow.config.yaml_errors import INDENTATION
from mailflow.templates import syntax_column

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


def test_check_refuses_a_template_syntax_error_at_file_line_column(tmp_path: Path) -> None:
    rules = rules_with_template(tmp_path, TEMPLATE.replace("{{ promised }}", "{{ promised }"))
    code, _, err = check(tmp_path, "--rules", str(rules))
    assert code == 2
    template = (rules / "templates" / "ack.fr.txt").resolve()
    assert f"{template}:5:25: template syntax error: unexpected '}}'" in err, err


def test_a_syntax_error_s_column_is_the_tag_that_breaks() -> None:
    assert syntax_column("votre dossier {{ case } est {{ promised }}", "unexpected '}'") == 15
    assert syntax_column("{% if x %}oui{% endif %} {{ a | nofilter }}", "") == 1
    assert syntax_column("Bonjour {{ nom ) }}", "unexpected ')'") == 16  # Jinja's token
    assert syntax_column("no tag here", "unexpected end of template") == 0


def test_a_bad_value_points_at_the_value(tmp_path: Path) -> None:
    rules = full_chain_rules(tmp_path / "rules")
    calendars = rules / "calendars.yaml"
    text = calendars.read_text(encoding="utf-8")
    calendars.write_text(text.replace("Europe/Paris", "Europe/Pariss", 1), encoding="utf-8")
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "Europe/Paris" in row)
    column = text.splitlines()[line - 1].index("Europe/Paris") + 1
    code, _, err = check(tmp_path, "--rules", str(rules))
    assert code == 2
    assert f"{calendars.resolve()}:{line}:{column}: " in err and "Europe/Pariss" in err, err


def test_check_warns_of_a_recipient_in_no_local_domain(tmp_path: Path) -> None:
    """``retours@exemple.com`` for ``retours@example.com``: every such mail would go to
    the default team; and the team whose address no rule names now gets a word too."""
    rules = full_chain_rules(tmp_path / "rules")
    route = rules / "route.yaml"
    text = route.read_text(encoding="utf-8")
    typo = text.replace("when: {recipient: [sav@example.com]}",
                        "when: {recipient: [retours@exemple.com]}")
    assert typo != text
    route.write_text(typo, encoding="utf-8")
    code, out, err = check(tmp_path, "--rules", str(rules))
    assert code == 0, err  # a warning, not an error: the rules still load
    line = next(i for i, row in enumerate(typo.splitlines(), 1) if "retours@exemple" in row)
    column = typo.splitlines()[line - 1].index("retours@") + 1
    assert (f"{route.resolve()}:{line}:{column}: warning: rule 'after-sales': recipient"
            " 'retours@exemple.com' is in no local domain (example.com)") in out, out
    assert "warning: team 'sav': no rule names 'sav@example.com' as a recipient" in out


def test_the_shipped_rules_have_no_warning(tmp_path: Path) -> None:
    config = tmp_path / "mailflow.yaml"
    config.write_text("smtp: {hostname: mailflow.example.com}\n", encoding="utf-8")
    code, out, err = check(tmp_path, "--rules", str(full_chain_rules(tmp_path / "rules")),
                           "--config", str(config))
    assert code == 0, err
    # a review date passes with the calendar: that warning is the team's to-do, not a fault
    assert [line for line in out.splitlines()
            if "warning" in line and "was due for review" not in line] == []


def test_a_host_name_that_is_no_domain_name_is_warned_of(tmp_path: Path) -> None:
    """Acknowledgements saying Message-ID <ack.…@vm> and Received: by vm look forged."""
    config = tmp_path / "mailflow.yaml"
    config.write_text("smtp: {hostname: vm}\n", encoding="utf-8")
    code, out, err = check(tmp_path, "--config", str(config),
                           "--rules", str(full_chain_rules(tmp_path / "rules")))
    assert code == 0, err
    assert f"{config}: warning: smtp.hostname 'vm' is not a fully qualified domain name" in out


def test_the_default_host_name_is_the_machine_s_fully_qualified_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from mailflow.config import settings

    settings.machine_name.cache_clear()
    monkeypatch.setattr(socket, "getfqdn", lambda: "mx1.example.com")
    assert settings.machine_name() == "mx1.example.com"
    settings.machine_name.cache_clear()
    monkeypatch.setattr(socket, "getfqdn", lambda: "localhost")
    monkeypatch.setattr(socket, "gethostname", lambda: "vm")
    assert settings.machine_name() == "vm"  # and `check` warns of it
    settings.machine_name.cache_clear()
    assert [settings.is_domain_name(n) for n in ("mx1.example.com", "vm", "localhost",
                                                 "localhost.localdomain", "192.0.2.1")] == [
        True, False, False, False, False]


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
