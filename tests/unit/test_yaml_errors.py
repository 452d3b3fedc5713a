"""YAML syntax errors in plain words, at the line and column of the mistake.

Each common mistake has its own hint, followed by the parser's own words;
the same translation serves the daemon's configuration and the rules files.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mailflow.config import ConfigError, load_settings, load_yaml
from mailflow.config.yaml_errors import INDENTATION
from mailflow.rules import load_rules

SEPARATOR = " — YAML: "


def error_of(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_yaml(path)
    (only,) = caught.value.problems
    return str(only)


@pytest.mark.parametrize(("text", "where", "hint", "parser"), [
    pytest.param("smtp:\n  hostname: mx\n bad: indent\n", "3:2", INDENTATION,
                 "expected <block end>, but found '<block mapping start>'", id="indented-less"),
    pytest.param("route:\n  default: sav\n   teams: [sav]\n", "3:4", INDENTATION,
                 "mapping values are not allowed here", id="indented-more"),
    pytest.param("a:\n  - 1\n - 2\n", "3:2", INDENTATION,
                 "found '<block sequence start>'", id="list-item-indented-less"),
    pytest.param("route:\n  rules:\n    - team: sav\n    match: x\n", "4:5",
                 "this key is at the level of the list's '- ' items", "found '?'",
                 id="key-at-list-level"),
    pytest.param("route:\n\tdefault: sav\n", "2:1",
                 "a tab character: YAML indents with spaces only",
                 "found character '\\t' that cannot start any token", id="tab"),
    pytest.param("workers: 1\nlisten:127.0.0.1:2525\nlog_level: info\n", "2:7",
                 "a colon must be followed by a space: write 'key: value', not 'key:value'",
                 "could not find expected ':'", id="no-space-after-colon"),
    pytest.param("smtp:\n  hostname:mx\n  idle_timeout: 60\n", "2:11",
                 "a colon must be followed by a space", "mapping values are not allowed here",
                 id="no-space-after-colon-nested"),
    pytest.param("listen: '127.0.0.1:2525\nworkers: 2\n", "1:9",
                 "this quote is never closed", "found unexpected end of stream",
                 id="unclosed-quote"),
    pytest.param("chain: [number, route\nroute: {}\n", "1:8",
                 "this '[' is not closed by a ']' before line 2 (or a comma is missing",
                 "expected ',' or ']', but got ':'", id="unclosed-bracket"),
    pytest.param("headers: {add: {X-A: b}\n", "1:10", "this '{' is not closed by a '}'",
                 "expected ',' or '}'", id="unclosed-brace"),
    pytest.param("chain: [\n", "2:1", "the file ends inside a '[…]' or '{…}'",
                 "expected the node content", id="file-ends-in-bracket"),
    pytest.param("workers: 1\nlisten: x\nworkers: 2\n", "3:1",
                 "the key 'workers' is written twice in the same mapping (first at line 1)",
                 'found duplicate key "workers"', id="duplicate-key"),
    pytest.param("route:\n  default: sav\n  rules: []\n  default: contact\n", "4:3",
                 "the key 'default' is written twice in the same mapping (first at line 2)",
                 'found duplicate key "default"', id="duplicate-nested-key"),
    pytest.param("headers:\n  add:\n    X-Note: Re: hello\n", "3:15",
                 'a value holding ": " must be quoted, e.g. X-Note: "Re: hello"',
                 "mapping values are not allowed here", id="colon-inside-value"),
    pytest.param("subject: 'l'accueil'\n", "1:13", "text after a quoted value",
                 "found '<scalar>'", id="text-after-quote"),
    pytest.param('state_dir: "C:\\data"\n', "1:15", 'inside "…" a backslash starts an escape',
                 "found unknown escape character 'd'", id="backslash-in-double-quotes"),
    pytest.param("sender: @example.com\n", "1:9", "a value cannot start with '@'",
                 "cannot start any token", id="reserved-first-character"),
    pytest.param("a: *nothing\n", "1:4", "'*nothing' names no '&nothing' above",
                 "found undefined alias 'nothing'", id="undefined-alias"),
    pytest.param("a: 1\nhello\nb: 2\n", "2:1", "this line is not a 'key: value'",
                 "could not find expected ':'", id="line-without-key"),
])
def test_each_common_mistake_has_its_hint(tmp_path: Path, text: str, where: str, hint: str,
                                          parser: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    message = error_of(path)
    assert message.startswith(f"{path}:{where}: {hint}"), message
    _, separator, said = message.partition(SEPARATOR)
    assert separator and parser in said, message


def test_an_error_without_a_hint_keeps_the_parser_words(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("a: &\n", encoding="utf-8")
    assert error_of(path) == (f"{path}:1:5: YAML syntax error: while scanning an anchor: "
                              "expected alphabetic or numeric character, but found '\\n'")


def test_windows_line_ends_count_lines_as_the_parser_does(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_bytes(b"# comment\r\nroute:\r\n  default: sav\r\n   teams: [sav]\r\n")
    assert error_of(path).startswith(f"{path}:4:4: {INDENTATION}{SEPARATOR}")


def test_the_daemon_configuration_gets_the_hints(tmp_path: Path) -> None:
    path = tmp_path / "mailflow.yaml"
    path.write_text("listen: 127.0.0.1:2525\nsmtp:\n  hostname: mx\n idle_timeout: 60\n",
                    encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert [str(p) for p in caught.value.problems] == [
        f"{path}:4:2: {INDENTATION}{SEPARATOR}"
        "expected <block end>, but found '<block mapping start>'"]


def test_every_rules_file_gets_the_hints(tmp_path: Path) -> None:
    (tmp_path / "chain.yaml").write_text("chain: [headers]\nlocal_domains: [example.com]\n",
                                         encoding="utf-8")
    (tmp_path / "route.yaml").write_text("route:\n  default:sav\n  rules: []\n",
                                         encoding="utf-8")
    (tmp_path / "headers.yaml").write_text("headers:\n  add:\n    X-A:\tb\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_rules(tmp_path)
    found = [str(p) for p in caught.value.problems]
    assert len(found) == 2, found
    assert found[0].startswith(f"{tmp_path / 'headers.yaml'}:3:9: a tab character"), found
    assert found[1].startswith(f"{tmp_path / 'route.yaml'}:2:10: a colon must be followed"
                               " by a space"), found
