"""The rules folder: files merged, mistakes located, paths kept inside."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mailflow.config import ConfigError
from mailflow.rules import RuleSet, load_rules


def folder(tmp_path: Path, files: dict[str, str]) -> Path:
    rules = tmp_path / "rules"
    rules.mkdir(exist_ok=True)
    for name, text in files.items():
        (rules / name).write_text(text, encoding="utf-8")
    return rules


def problems(directory: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_rules(directory)
    return [str(p) for p in info.value.problems]


def test_files_are_merged(tmp_path: Path) -> None:
    rules = folder(tmp_path, {
        "10-chain.yaml": "chain:\n  - headers\n  - route\n",
        "20-domains.yml": "local_domains:\n  - Example.COM.\n  - example.org\n"
                          "own_addresses: [SAV@example.com]\n",
        "30-stages.yaml": "headers:\n  add: {X-A: b}\nroute:\n  default: sav\n",
        "notes.txt": "chain: [ignored]\n",
        "empty.yaml": "# only a comment\n",
    })
    rs = load_rules(rules)
    assert rs.directory == rules
    assert rs.chain == ("headers", "route")
    assert rs.local_domains == ("example.com", "example.org")
    assert rs.own_addresses == ("sav@example.com",)
    assert set(rs.sections) == {"headers", "route"}  # core keys are not stage sections
    headers = rs.section("headers")
    assert headers is not None
    assert headers.data == {"add": {"X-A": "b"}}
    assert (headers.file, headers.line, headers.column) == (str(rules / "30-stages.yaml"), 1, 1)
    route = rs.section("route")
    assert route is not None and (route.line, route.column) == (3, 1)
    assert rs.section("nope") is None
    assert rs.chain_section is not None and rs.chain_section.file == str(rules / "10-chain.yaml")


def test_hidden_files_and_folders_are_not_rules(tmp_path: Path) -> None:
    rules = folder(tmp_path, {"chain.yaml": "chain: [headers]\n",
                              ".chain.yaml": "chain: [from-a-backup]\n",
                              "._chain.yaml": "\x00\x05\x16\x07 AppleDouble\n"})
    os.symlink(rules / "gone.yaml", rules / ".#chain.yaml")  # an editor's lock: dangling
    (rules / "old.yaml").mkdir()
    rs = load_rules(rules)
    assert rs.chain == ("headers",)


def test_shipped_rules_load() -> None:
    rs = load_rules(Path(__file__).resolve().parents[2] / "rules")
    assert rs.chain
    assert rs.is_local("sav@example.com")


def test_section_problem_points_inside_the_section(tmp_path: Path) -> None:
    rules = folder(tmp_path, {"a.yaml": "route:\n  teams:\n    - name: x\n    - name: y\n"})
    section = load_rules(rules).section("route")
    assert section is not None
    assert str(section.problem("bad")) == f"{rules / 'a.yaml'}:1:1: bad"
    assert str(section.problem("bad team", ("teams", 1))) == f"{rules / 'a.yaml'}:4:7: bad team"


def test_duplicate_section_across_files_names_both_positions(tmp_path: Path) -> None:
    rules = folder(tmp_path, {
        "a.yaml": "local_domains: [example.com]\nroute:\n  default: sav\n",
        "b.yaml": "# the same section again\n\nroute:\n  default: contact\n",
    })
    assert problems(rules) == [
        f"{rules / 'b.yaml'}:3:1: section 'route' is already defined at "
        f"{rules / 'a.yaml'}:2:1"]


def test_duplicate_key_in_one_file(tmp_path: Path) -> None:
    rules = folder(tmp_path, {"a.yaml": "chain: [a]\nchain: [b]\n"})
    (only,) = problems(rules)
    assert only.startswith(f"{rules / 'a.yaml'}:2:1: the key 'chain' is written twice"), only
    assert "YAML: found duplicate key" in only


def test_chain_must_be_a_list(tmp_path: Path) -> None:
    rules = folder(tmp_path, {"a.yaml": "local_domains: [example.com]\nchain: headers\n"})
    assert problems(rules) == [f"{rules / 'a.yaml'}:2:1: 'chain' must be a list of stage names"]


def test_bad_list_items_are_located(tmp_path: Path) -> None:
    rules = folder(tmp_path, {"a.yaml": "chain:\n  - headers\n  - 3\n  - ''\n"
                                        "local_domains: {example.com: yes}\n"})
    assert sorted(problems(rules)) == sorted([
        f"{rules / 'a.yaml'}:3:5: item 2 must be stage name",
        f"{rules / 'a.yaml'}:4:5: item 3 must be stage name",
        f"{rules / 'a.yaml'}:5:1: 'local_domains' must be a list of domain names",
    ])


def test_every_file_is_checked_before_failing(tmp_path: Path) -> None:
    rules = folder(tmp_path, {"a.yaml": "chain: [\n", "b.yaml": "- not\n- a mapping\n",
                              "c.yaml": "7: numeric\n"})
    found = problems(rules)
    assert len(found) == 3
    assert found[0].startswith(f"{rules / 'a.yaml'}:2:1: the file ends inside a '[…]'")
    assert found[1] == f"{rules / 'b.yaml'}:1:1: a rules file must be a mapping of sections"
    assert found[2] == f"{rules / 'c.yaml'}:1:1: section names must be text"


def test_missing_folder(tmp_path: Path) -> None:
    assert problems(tmp_path / "nope") == [f"{tmp_path / 'nope'}: rules folder not found"]


def test_empty_folder_is_an_empty_rule_set(tmp_path: Path) -> None:
    rs = load_rules(folder(tmp_path, {}))
    assert (rs.chain, rs.local_domains, rs.chain_section, dict(rs.sections)) == ((), (), None, {})


# -- helpers ----------------------------------------------------------------------


@pytest.fixture
def ruleset(tmp_path: Path) -> RuleSet:
    rules = folder(tmp_path, {"d.yaml": "local_domains: [example.com, Sub.Example.NET.]\n"})
    (rules / "templates").mkdir()
    (rules / "templates" / "ack.txt").write_text("hello", encoding="utf-8")
    return load_rules(rules)


@pytest.mark.parametrize(("address", "local"), [
    ("sav@example.com", True),
    ("SAV@EXAMPLE.COM", True),
    ("sav@example.com.", True),
    ("a@sub.example.net", True),
    ("\"odd@local\"@example.com", True),
    ("sav@other.com", False),
    ("sav@sub.example.com", False),  # subdomains are not ours unless listed
    ("sav@example.com.evil.test", False),
    ("sav@evilexample.com", False),
    ("sav@", False),
    ("", False),
    ("example.com", False),  # no @: no domain at all
    ("postmaster", False),
])
def test_is_local(ruleset: RuleSet, address: str, local: bool) -> None:
    assert ruleset.is_local(address) is local


def test_template_path_inside_the_folder(ruleset: RuleSet) -> None:
    base = ruleset.directory.resolve()
    assert ruleset.template_path("templates/ack.txt") == base / "templates" / "ack.txt"
    assert ruleset.template_path("templates/../templates/ack.txt") == (
        base / "templates" / "ack.txt")


@pytest.mark.parametrize("name", [
    "../secret.txt",
    "templates/../../secret.txt",
    "../../../../etc/passwd",
    "/etc/passwd",
    "..",
])
def test_template_path_refuses_traversal(ruleset: RuleSet, name: str) -> None:
    (ruleset.directory.parent / "secret.txt").write_text("secret", encoding="utf-8")
    with pytest.raises(ValueError, match="outside the rules folder"):
        ruleset.template_path(name)


def test_template_path_refuses_a_symlink_out(ruleset: RuleSet) -> None:
    outside = ruleset.directory.parent / "outside.txt"
    outside.write_text("secret", encoding="utf-8")
    os.symlink(outside, ruleset.directory / "link.txt")
    with pytest.raises(ValueError, match="outside the rules folder"):
        ruleset.template_path("link.txt")


# -- automatic: one section for every stage --------------------------------------------


def test_the_automatic_section(tmp_path: Path) -> None:
    rules = load_rules(folder(tmp_path, {"automatic.yaml": (
        "automatic:\n  languages: [fr, en]\n  senders: [robot-crm]\n")}))
    assert rules.automatic.languages == ["fr", "en"]
    assert rules.automatic.senders == ["robot-crm"]
    assert rules.warnings == ()


def test_a_language_without_markers_is_refused_at_its_line(tmp_path: Path) -> None:
    found = problems(folder(tmp_path, {"automatic.yaml": (
        "# signs\nautomatic:\n  languages: [fr, xx]\n")}))
    assert found == [f"{tmp_path}/rules/automatic.yaml:3:3: languages: no shipped subject"
                     " markers for xx (known: en, fr, de, es, it, nl, pt, sv, da, pl, lv);"
                     " add yours under subjects"]


def test_the_old_key_still_works_with_a_warning(tmp_path: Path) -> None:
    rules = load_rules(folder(tmp_path, {"acknowledge.yaml": (
        "acknowledge:\n  robots:\n    languages: [fr]\n    subjects: [En congé]\n")}))
    assert rules.automatic.languages == ["fr"] and rules.automatic.subjects == ["En congé"]
    (warning,) = rules.warnings
    assert (warning.line, warning.column) == (2, 3) and "deprecated" in warning.message


def test_beside_the_new_section_the_old_key_adds_its_entries(tmp_path: Path) -> None:
    rules = load_rules(folder(tmp_path, {
        "automatic.yaml": "automatic:\n  languages: [fr, en]\n  senders: [robot-crm]\n",
        "acknowledge.yaml": "acknowledge:\n  robots:\n    senders: [alertes]\n"}))
    assert rules.automatic.languages == ["fr", "en"]  # the old key named none
    assert rules.automatic.senders == ["robot-crm", "alertes"]
    assert len(rules.warnings) == 1


def test_the_rules_own_signs(tmp_path: Path) -> None:
    rules = load_rules(folder(tmp_path, {"automatic.yaml": (
        "automatic:\n  signs:\n"
        "    - name: crm notification\n      header: X-Crm-Event\n      value: '^created$'\n"
        "    - name: invoice run\n      subject: '^Invoice \\d+ from '\n      weight: 0.5\n")}))
    crm, invoices = rules.automatic.signs
    assert (crm.name, crm.header, crm.value, crm.weight) == (
        "crm notification", "X-Crm-Event", "^created$", 1.0)
    assert (invoices.subject, invoices.weight) == (r"^Invoice \d+ from ", 0.5)


@pytest.mark.parametrize(("sign", "where", "message"), [
    ("    - subject: '(unclosed'\n", "4:16", "invalid regular expression '(unclosed'"),
    ("    - body: x\n      weight: 2\n", "5:15", "less than or equal to 1"),
    ("    - name: 'a: b'\n      sender: x\n", "4:13", "metric label"),
])
def test_a_broken_sign_is_refused_at_its_line(tmp_path: Path, sign: str, where: str,
                                              message: str) -> None:
    (found,) = problems(folder(tmp_path, {"automatic.yaml": (
        "# signs\nautomatic:\n  signs:\n" + sign)}))
    assert found.startswith(f"{tmp_path}/rules/automatic.yaml:{where}: "), found
    assert message in found
