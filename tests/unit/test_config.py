"""Configuration: defaults, overrides, and errors an operator can find in the file."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

from mailflow.config import (
    ConfigError,
    NextHop,
    Problem,
    Settings,
    load_settings,
    parse_host_port,
)
from mailflow.config import settings as settings_module

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, name: str = "mailflow.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems(path: Path | None, overrides: dict[str, object] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(path, overrides)
    assert str(info.value) == "\n".join(str(p) for p in info.value.problems)
    return [str(p) for p in info.value.problems]


# -- defaults and overrides ---------------------------------------------------


def test_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings_module, "project_checkout", lambda: None)  # installed, no checkout
    monkeypatch.chdir(tmp_path)
    s = load_settings(None)
    assert s.source == "<defaults>"
    assert s.listen_address == ("127.0.0.1", 2525)
    assert s.next_hop is None
    assert s.effective_next_hop == NextHop(kind="maildir", path=str(tmp_path / "var/maildir"))
    assert s.store_url == f"sqlite:///{tmp_path / 'var' / 'mailflow.sqlite3'}"
    assert s.rules == str(tmp_path / "rules")
    assert s.metrics_address is None
    assert s.workers == 1
    assert s.smtp.max_line_length == 65536
    assert s.smtp.bare_newlines == "normalize"
    assert s.smtp.max_sessions_per_client == 100
    assert s.smtp.max_message_size == 25 * 1024 * 1024
    assert s.smtp.idle_timeout == 300
    assert s.relay.timeout == 60
    assert s.chain_timeout == 60
    assert s.trusted_networks == ("127.0.0.0/8", "::1/128")
    assert s.check_deadlines() == []


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "# nothing configured yet\n")
    s = load_settings(path)
    assert s.source == str(path)
    assert s.listen == load_settings(None).listen
    assert s.smtp == load_settings(None).smtp


def test_empty_sections_mean_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "smtp:\n  # max_message_size: 1024\nrelay:\noutbox:\n")
    s = load_settings(path)
    assert s.smtp.max_message_size == 25 * 1024 * 1024
    assert s.relay.timeout == 60
    assert s.outbox.max_attempts == 30


def test_file_values_are_read(tmp_path: Path) -> None:
    path = write(tmp_path, """\
listen: "[::1]:2600"
next_hop: smtp://mail.example.com:2525
metrics: 127.0.0.1:9100
workers: 4
trusted_networks: [10.0.0.0/8, "2001:db8::/32"]
smtp:
  max_message_size: 4096
  bare_newlines: reject
  max_sessions_per_client: 3
relay:
  timeout: 5
""")
    s = load_settings(path)
    assert s.listen_address == ("::1", 2600)
    assert s.next_hop == NextHop(kind="smtp", host="mail.example.com", port=2525)
    assert s.metrics_address == ("127.0.0.1", 9100)
    assert s.workers == 4
    assert len(s.networks) == 2
    assert s.smtp.max_message_size == 4096
    assert s.smtp.bare_newlines == "reject"
    assert s.smtp.max_sessions_per_client == 3
    assert s.smtp.idle_timeout == 300  # untouched settings keep their default
    assert s.relay.timeout == 5


def test_overrides_win_over_the_file_and_none_is_ignored(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "listen: 127.0.0.1:2600\nworkers: 2\nrules: ./from-file\n")
    monkeypatch.chdir(tmp_path / "..")
    s = load_settings(path, {"listen": "127.0.0.1:2700", "workers": None,
                             "next_hop": "maildir:/tmp/md", "store": "sqlite:///x.db"})
    assert s.listen == "127.0.0.1:2700"
    assert s.workers == 2
    assert s.rules == str(tmp_path / "from-file")
    assert s.effective_next_hop == NextHop(kind="maildir", path="/tmp/md")
    # relative on the command line: to the current folder
    assert s.store_url == f"sqlite:///{tmp_path.parent / 'x.db'}"


# -- relative paths -----------------------------------------------------------------


def test_paths_in_a_file_are_relative_to_its_folder(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "etc"
    conf.mkdir()
    path = write(conf, "state_dir: state\nrules: ../rules\nnext_hop: maildir:mail\n"
                       "plugin_dirs: [plugins, /opt/plugins]\n"
                       "smtp:\n  tls_cert: tls/cert.pem\n  tls_key: /etc/ssl/key.pem\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    s = load_settings(Path("../etc/mailflow.yaml"))
    assert s.source == str(path)  # named in full in every message
    assert s.state_dir == str(conf / "state")
    assert s.store_url == f"sqlite:///{conf / 'state' / 'mailflow.sqlite3'}"
    assert s.rules == str(tmp_path / "rules")
    assert s.next_hop == NextHop(kind="maildir", path=str(conf / "mail"))
    assert s.plugin_dirs == (str(conf / "plugins"), "/opt/plugins")
    assert (s.smtp.tls_cert, s.smtp.tls_key) == (str(conf / "tls/cert.pem"), "/etc/ssl/key.pem")
    # what the file leaves out is next to it too; the command line's is the current folder's
    s = load_settings(write(conf, "store: sqlite:///db/x.sqlite3?busy_timeout=2\n", "b.yaml"),
                      {"state_dir": "here"})
    assert s.rules == str(conf / "rules")
    assert s.store_url == f"sqlite:///{conf / 'db/x.sqlite3'}?busy_timeout=2"
    assert s.state_dir == str(elsewhere / "here")


def test_defaults_are_the_checkout_s_from_any_folder(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Installed in editable mode (as ``make run`` does), the defaults' var/ and rules/
    are the checkout's whatever the current folder, so the CLI finds the demo's store."""
    checkout = settings_module.project_checkout()
    assert checkout == REPO  # `pip install -e .`, as the Makefile does
    monkeypatch.chdir(tmp_path)
    s = load_settings(None)
    assert (s.state_dir, s.rules) == (str(checkout / "var"), str(checkout / "rules"))
    assert s.effective_next_hop.path == str(checkout / "var" / "maildir")


def test_settings_are_frozen() -> None:
    s = load_settings(None)
    with pytest.raises(ValueError, match="frozen"):
        s.workers = 3  # type: ignore[misc]


def test_override_errors_do_not_invent_a_position() -> None:
    assert problems(None, {"workers": 0}) == [
        "<defaults>: 'workers': input should be greater than or equal to 1"]


# -- errors with positions --------------------------------------------------------


def test_bad_type_points_at_the_value(tmp_path: Path) -> None:
    path = write(tmp_path, "listen: 127.0.0.1:2525\nsmtp:\n  hostname: mx\n"
                           "  max_message_size: lots\n")
    (only,) = problems(path)
    assert only.startswith(f"{path}:4:21: 'smtp.max_message_size': input should be a valid "
                           "integer")


def test_unknown_key_points_at_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "workers: 1\nrelay:\n  timeout: 5\n  tiemout: 6\nlisten_on: x\n")
    assert sorted(problems(path)) == sorted([
        f"{path}:4:3: unknown setting 'tiemout'",
        f"{path}:5:1: unknown setting 'listen_on'",
    ])


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, "workers: 0\nsmtp:\n  max_line_length: 80\n"
                           "trusted_networks: [10.0.0.0/8, nowhere]\n")
    found = problems(path)
    assert len(found) == 3
    assert f"{path}:1:10: 'workers': input should be greater than or equal to 1" in found
    assert (f"{path}:3:20: 'smtp.max_line_length': input should be greater than or equal "
            "to 1001") in found
    assert (f"{path}:4:1: 'trusted_networks': 'nowhere' is not a network like "
            "192.0.2.0/24") in found


def test_bad_listen_port(tmp_path: Path) -> None:
    path = write(tmp_path, "\nlisten: 127.0.0.1:99999\n")
    assert problems(path) == [
        f"{path}:2:9: 'listen': '99999' is not a port number (0 to 65535)"]


@pytest.mark.parametrize(("text", "where", "what"), [
    ("listen: [\n", "2:1", "expected the node content"),
    ("smtp:\n  hostname: mx\n bad: indent\n", "3:2", ""),
    ("\tworkers: 1\n", "1:1", "found character '\\t' that cannot start any token"),
    ("workers: 1\nworkers: 2\n", "2:1", 'found duplicate key "workers"'),
    ("listen: '127.0.0.1:2525\n", "1:9", "found unexpected end of stream"),
])
def test_yaml_syntax_errors_carry_line_and_column(tmp_path: Path, text: str, where: str,
                                                  what: str) -> None:
    path = write(tmp_path, text)
    (only,) = problems(path)
    assert only.startswith(f"{path}:{where}: "), only
    assert f" — YAML: {what}" in only, only  # the plain words first, then the parser's


def test_not_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "- listen\n- workers\n")
    assert problems(path) == [f"{path}:1:1: the configuration must be a mapping of settings"]


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    assert problems(path) == [f"{path}: file not found"]


def test_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"smtp:\n  hostname: caf\xe9\n")
    (only,) = problems(path)
    assert only.startswith(f"{path}: not UTF-8 text")


def test_problem_formatting() -> None:
    assert str(Problem("a.yaml", 3, 7, "boom")) == "a.yaml:3:7: boom"
    assert str(Problem("a.yaml", 0, 0, "boom")) == "a.yaml: boom"


# -- next hop ---------------------------------------------------------------------


@pytest.mark.parametrize(("text", "hop", "shown"), [
    ("smtp://mail.example.com:2525", NextHop(kind="smtp", host="mail.example.com", port=2525),
     "smtp://mail.example.com:2525"),
    ("smtp://mail.example.com", NextHop(kind="smtp", host="mail.example.com", port=25),
     "smtp://mail.example.com:25"),
    ("smtp://[2001:db8::1]:26", NextHop(kind="smtp", host="2001:db8::1", port=26),
     "smtp://[2001:db8::1]:26"),
    ("maildir:./var/maildir", NextHop(kind="maildir", path="./var/maildir"),
     "maildir:./var/maildir"),
    ("maildir:/srv/mail", NextHop(kind="maildir", path="/srv/mail"), "maildir:/srv/mail"),
])
def test_next_hop_parsing(text: str, hop: NextHop, shown: str) -> None:
    assert NextHop.parse(text) == hop
    assert str(hop) == shown
    assert NextHop.parse(str(hop)) == hop


@pytest.mark.parametrize(("text", "message"), [
    ("maildir:", "maildir: needs a folder"),
    ("ftp://mail.example.com", "is not smtp://HOST:PORT or maildir:PATH"),
    ("mail.example.com:25", "is not smtp://HOST:PORT or maildir:PATH"),
    ("smtp://", "is not smtp://HOST:PORT or maildir:PATH"),
    ("smtp://mail.example.com:notaport", "port"),
    ("smtp://mail.example.com:70000", "ort"),
])
def test_bad_next_hop(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NextHop.parse(text)
    path = write(tmp_path, f"workers: 1\nnext_hop: '{text}'\n")
    (only,) = problems(path)
    assert only.startswith(f"{path}:2:11: 'next_hop': ")
    assert message in only


def test_parse_host_port() -> None:
    assert parse_host_port("192.0.2.1:25") == ("192.0.2.1", 25)
    assert parse_host_port("[::1]:2525") == ("::1", 2525)
    assert parse_host_port(":2525") == ("127.0.0.1", 2525)
    assert parse_host_port("mx", default_port=25) == ("mx", 25)
    with pytest.raises(ValueError, match="needs a port"):
        parse_host_port("mx")
    with pytest.raises(ValueError, match="not a port number"):
        parse_host_port("mx:-1")


# -- deadlines --------------------------------------------------------------------


def test_deadlines_must_fit_inside_the_idle_timeout(tmp_path: Path) -> None:
    path = write(tmp_path, "workers: 1\nchain_timeout: 100\nrelay:\n  timeout: 60\n"
                           "smtp:\n  idle_timeout: 200\n")
    (only,) = problems(path)
    assert only == (f"{path}:2:1: chain_timeout (100s) + relay.timeout (60s) must end well "
                    "inside smtp.idle_timeout (200s): keep them under 80% of it")


def test_deadline_problem_points_at_what_the_file_sets(tmp_path: Path) -> None:
    path = write(tmp_path, "workers: 1\nsmtp:\n  hostname: mx\n  idle_timeout: 60\n")
    (only,) = problems(path)
    assert only.startswith(f"{path}:4:3: chain_timeout (60s) + relay.timeout (60s)")


def test_deadline_boundary() -> None:
    # 80% of 300 s is 240 s: 239 fits, 240 does not
    fits = Settings(chain_timeout=179, relay={"timeout": 60})  # type: ignore[arg-type]
    assert fits.check_deadlines() == []
    too_long = Settings(chain_timeout=180, relay={"timeout": 60})  # type: ignore[arg-type]
    (message,) = too_long.check_deadlines()
    assert "chain_timeout (180s) + relay.timeout (60s)" in message
    assert "smtp.idle_timeout (300s)" in message


@pytest.mark.parametrize("direct_url", [
    None,  # installed from an index: no direct_url.json
    '{"url": "file:///opt/src/mailflow", "dir_info": {}}',  # a wheel built from a folder
    '{"url": "https://example.test/mailflow.tar.gz", "archive_info": {}}',
    "not JSON",
])
def test_no_checkout_unless_installed_editable(direct_url: str | None,
                                                monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    class Distribution:
        def read_text(self, name: str) -> str | None:
            assert name == "direct_url.json"
            return direct_url

    monkeypatch.setattr(importlib.metadata, "distribution", lambda name: Distribution())
    assert settings_module.project_checkout() is None
    monkeypatch.chdir(tmp_path)
    assert load_settings(None).rules == str(tmp_path / "rules")  # the current folder's


def test_an_editable_install_without_rules_is_no_checkout(monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    class Distribution:
        def read_text(self, name: str) -> str:
            return f'{{"url": "{tmp_path.as_uri()}", "dir_info": {{"editable": true}}}}'

    monkeypatch.setattr(importlib.metadata, "distribution", lambda name: Distribution())
    assert settings_module.project_checkout() is None
    (tmp_path / "rules").mkdir()
    assert settings_module.project_checkout() == tmp_path
