"""Templates are checked when the rules load, never first at a customer's message.

An unknown field is reported at the template's file:line:column with the known
fields; a syntax error at file:line; a file that cannot be read at the rules
line naming it. The acknowledge stage checks its templates with the very
fields ``merge_fields`` makes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from jinja2 import Template

from conftest import RULES
from mailflow.config import ConfigError
from mailflow.rules import RuleSet, load_rules
from mailflow.stages.acknowledge import AcknowledgeStage
from mailflow.templates import (
    SAMPLE_CASE,
    check_template,
    load_template,
    load_templates,
    sample_context,
    template_environment,
)
from mailflow.testing import make_stage

FIELDS = {"case": "SAV-1", "customer": "claire@client.test", "promised": "lundi 12:00",
          "customer_name": "Claire"}
KNOWN = "known fields: case, customer, promised, customer_name"
GOOD = "Subject: [{{ case }}] reçu\n\nBonjour {{ customer_name }},\nréponse le {{ promised }}.\n"


def problems(source: str, fields: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        check_template(source, "ack.txt", fields or FIELDS, template_environment())
    return [str(p) for p in caught.value.problems]


def rules_folder(tmp_path: Path, templates: dict[str, str], files: dict[str, str]) -> RuleSet:
    """A rules folder with an ``acknowledge`` section naming ``templates``."""
    (tmp_path / "templates").mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (tmp_path / "templates" / name).write_text(text, encoding="utf-8")
    lines = "".join(f"    {lang}: {name}\n" for lang, name in templates.items())
    (tmp_path / "acknowledge.yaml").write_text(
        f"# acknowledgements\nacknowledge:\n  default_language: fr\n  templates:\n{lines}",
        encoding="utf-8")
    return load_rules(tmp_path)


def test_a_good_template_passes_and_renders() -> None:
    template = check_template(GOOD, "ack.txt", FIELDS, template_environment())
    assert isinstance(template, Template)
    assert template.render(**FIELDS).endswith("réponse le lundi 12:00.\n")


def test_an_unknown_field_is_located_with_the_known_fields() -> None:
    source = GOOD.replace("{{ promised }}", "{{ promise }}")
    assert problems(source) == [
        f"ack.txt:4:15: unknown field 'promise' (did you mean 'promised'?); {KNOWN}"]


def test_an_unknown_field_in_a_branch_the_sample_does_not_take_is_found() -> None:
    source = ("Subject: x\n\n{% if customer_name %}Bonjour {{ customer_name }}"
              "{% else %}Bonjour {{ custmer }}{% endif %}\n")
    assert problems(source) == [
        f"ack.txt:3:71: unknown field 'custmer' (did you mean 'customer'?); {KNOWN}"]


def test_the_column_is_where_the_field_is_read_not_an_attribute_of_the_same_name() -> None:
    source = "Subject: x\n\n{{ case.promise if case.promise is defined }} {{ promise }}\n"
    (only,) = problems(source)
    assert only.startswith("ack.txt:3:50: unknown field 'promise'"), only


def test_every_unknown_field_is_reported_in_order_and_crlf_does_not_shift_columns() -> None:
    source = "Subject: {{ nombre }}\r\n\r\n{{- dossier }} {{ case }}\r\n"
    assert problems(source) == [
        f"ack.txt:1:13: unknown field 'nombre'; {KNOWN}",
        f"ack.txt:3:5: unknown field 'dossier'; {KNOWN}"]


def test_names_the_template_sets_itself_and_jinja_globals_are_known() -> None:
    source = ("{% set who = customer_name or customer %}{% for i in range(2) %}{{ i }}"
              "{% endfor %}{{ who }}\n")
    assert check_template(source, "ack.txt", FIELDS, template_environment()).render(
        **FIELDS) == "01Claire\n"


def test_a_syntax_error_gives_file_and_line() -> None:
    assert problems("Subject: x\n\n{{ case }\n") == [
        "ack.txt:3:1: template syntax error: unexpected '}'"]


def test_an_unknown_filter_gives_file_and_line() -> None:
    assert problems("Subject: x\n\nle {{ promised | uper }}\n") == [
        "ack.txt:3:18: template syntax error: No filter named 'uper'."]


def test_a_template_that_fails_on_sample_values_is_refused_at_its_line() -> None:
    assert problems("Subject: x\n\n\nDossier {{ case.number }}\n") == [
        "ack.txt:4: the template fails on sample values: 'str object' has no attribute"
        " 'number'"]


def test_a_missing_file_points_at_the_rules_line_naming_it(tmp_path: Path) -> None:
    rules = rules_folder(tmp_path, {"fr": "templates/ack.fr.txt", "de": "templates/ack.de.txt"},
                         {"ack.fr.txt": GOOD})
    with pytest.raises(ConfigError) as caught:
        load_templates(rules, {"fr": "templates/ack.fr.txt", "de": "templates/ack.de.txt"},
                       lambda language: FIELDS, where=("acknowledge", "templates"))
    missing = (tmp_path / "templates" / "ack.de.txt").resolve()
    assert [str(p) for p in caught.value.problems] == [
        f"{tmp_path / 'acknowledge.yaml'}:6:5: templates.de: template file "
        f"'templates/ack.de.txt' not found (looked in {missing})"]


def test_every_template_of_a_group_is_checked_before_failing(tmp_path: Path) -> None:
    rules = rules_folder(tmp_path, {"fr": "templates/fr.txt", "en": "templates/en.txt"},
                         {"fr.txt": "{{ promise }}\n", "en.txt": "{{ case }\n"})
    with pytest.raises(ConfigError) as caught:
        load_templates(rules, {"fr": "templates/fr.txt", "en": "templates/en.txt"},
                       lambda language: FIELDS, where=("acknowledge", "templates"))
    fr, en = (str((tmp_path / "templates" / name).resolve()) for name in ("fr.txt", "en.txt"))
    assert [str(p) for p in caught.value.problems] == [
        f"{fr}:1:4: unknown field 'promise' (did you mean 'promised'?); {KNOWN}",
        f"{en}:1:1: template syntax error: unexpected '}}'"]


def test_a_file_outside_the_rules_folder_is_refused_at_its_line(tmp_path: Path) -> None:
    rules = rules_folder(tmp_path / "rules", {"fr": "../secret.txt"}, {})
    (tmp_path / "secret.txt").write_text("{{ case }}", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_template(rules, "../secret.txt", FIELDS, where=("acknowledge", "templates", "fr"))
    assert [str(p) for p in caught.value.problems] == [
        f"{tmp_path / 'rules' / 'acknowledge.yaml'}:5:5: templates.fr: template file "
        "'../secret.txt' is outside the rules folder"]


def test_a_file_that_is_not_utf8_is_refused_at_its_line(tmp_path: Path) -> None:
    rules = rules_folder(tmp_path, {"fr": "templates/ack.fr.txt"}, {})
    (tmp_path / "templates" / "ack.fr.txt").write_bytes(b"R\xe9ponse le {{ promised }}\n")
    with pytest.raises(ConfigError) as caught:
        load_template(rules, "templates/ack.fr.txt", FIELDS,
                      where=("acknowledge", "templates", "fr"))
    (only,) = caught.value.problems
    assert str(only).startswith(f"{tmp_path / 'acknowledge.yaml'}:5:5: templates.fr: template "
                                "file 'templates/ack.fr.txt' is not UTF-8 text"), str(only)


# -- the acknowledge stage ------------------------------------------------------


def shipped_rules(tmp_path: Path) -> Path:
    folder = tmp_path / "rules"
    shutil.copytree(RULES, folder)
    return folder


def test_the_shipped_templates_pass(tmp_path: Path) -> None:
    folder = shipped_rules(tmp_path)
    stage = make_stage(AcknowledgeStage, {}, rules=load_rules(folder))
    assert set(stage.templates) == {"fr", "en"}


def test_the_stage_checks_with_the_fields_merge_fields_makes(tmp_path: Path) -> None:
    folder = shipped_rules(tmp_path)
    template = folder / "templates" / "ack.fr.txt"
    text = template.read_text(encoding="utf-8")
    template.write_text(text.replace("{{ promised }}", "{{ promise }}", 1), encoding="utf-8")
    rules = load_rules(folder)
    with pytest.raises(ConfigError) as caught:
        make_stage(AcknowledgeStage, {}, rules=rules)
    (only,) = caught.value.problems
    line = next(n for n, row in enumerate(text.splitlines(), 1) if "{{ promised }}" in row)
    column = text.splitlines()[line - 1].index("promised") + 1
    assert str(only).startswith(f"{template.resolve()}:{line}:{column}: unknown field 'promise'"
                                " (did you mean 'promised'?); known fields: "), str(only)
    listed = str(only).partition("known fields: ")[2].split(", ")
    good = make_stage(AcknowledgeStage, {}, rules=load_rules(shipped_rules(tmp_path / "b")))
    made = good.merge_fields(sample_context(), SAMPLE_CASE, "fr")
    assert listed == list(made)  # one list: the names merge_fields returns
    assert {"case", "promised", "customer_name", "language"} <= set(listed)


def test_a_missing_template_of_the_stage_points_at_acknowledge_yaml(tmp_path: Path) -> None:
    folder = shipped_rules(tmp_path)
    path = folder / "acknowledge.yaml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("en: templates/ack.en.txt", "en: templates/ack.de.txt"),
                    encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        make_stage(AcknowledgeStage, {"templates": {"fr": "templates/ack.fr.txt",
                                                    "en": "templates/ack.de.txt"}},
                   rules=load_rules(folder))
    line = next(n for n, row in enumerate(text.splitlines(), 1)
                if "en: templates/ack.en.txt" in row)
    column = text.splitlines()[line - 1].index("en:") + 1
    assert [str(p) for p in caught.value.problems] == [
        f"{path}:{line}:{column}: templates.en: template file 'templates/ack.de.txt' not found"
        f" (looked in {(folder / 'templates' / 'ack.de.txt').resolve()})"]
