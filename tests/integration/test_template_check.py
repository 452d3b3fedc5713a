"""A broken template or YAML file never reaches a customer's message.

With the real daemon: a SIGHUP reload whose acknowledgement template has a
field typo is refused (logged at file:line:column) and the running templates
keep acknowledging new cases (250, not 451); ``serve`` refuses to start on a
template typo or a YAML error, in the rules or in its own configuration.
"""

from __future__ import annotations

import json
import signal
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from conftest import Daemon, Sink, full_chain_rules, is_ack, parse_email
from mailflow.config.yaml_errors import INDENTATION

pytestmark = pytest.mark.slow  # starts the daemon: `pytest -m 'not slow'` leaves it out

TEMPLATE = ("Subject: [{{ case }}] Accusé de réception\n\n"
            "Bonjour {{ customer_name }},\n"
            "modèle en service : réponse au plus tard le {{ promised }}.\n")
TYPO = TEMPLATE.replace("modèle en service", "modèle cassé").replace("{{ promised }}",
                                                                      "{{ promise }}")
TYPO_AT = "4:43"  # line 4, where "promise" starts


def message(n: int) -> bytes:
    return (f"From: Claire Martin <claire{n}@client.test>\r\nTo: sav@example.com\r\n"
            f"Subject: Commande {4700 + n}\r\nMessage-ID: <tpl-{n}@client.test>\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n"
            f"Bonjour, ma commande {4700 + n} n'est pas arrivée, merci de vérifier.\r\n"
            ).encode()


def rules_with(tmp_path: Path, template: str) -> Path:
    rules = full_chain_rules(tmp_path / "rules-src")
    (rules / "templates" / "ack.fr.txt").write_text(template, encoding="utf-8")
    return rules


def acks(sink: Sink, count: int, timeout: float = 10.0) -> list[EmailMessage]:
    """The first ``count`` acknowledgements the next hop got, waiting for them."""
    deadline = time.monotonic() + timeout
    found: list[EmailMessage] = []
    while time.monotonic() < deadline:
        found = [msg for m in sink.messages if is_ack(m, msg := parse_email(m.data))]
        if len(found) >= count:
            return found
        time.sleep(0.05)
    raise AssertionError(f"{len(found)} acknowledgement(s), expected {count}")


def body(msg: EmailMessage) -> str:
    part = msg.get_body(("plain",))
    assert part is not None
    return str(part.get_content())  # type: ignore[attr-defined]


def events(d: Daemon, name: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The daemon's JSON log lines for event ``name``, waiting for the first."""
    d.wait_for_log(f'"event": "{name}"', timeout)
    found = []
    for line in d.log.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("event") == name:
            found.append(entry)
    return found


def test_sighup_with_a_template_typo_keeps_the_running_template(daemon_factory: Any,
                                                                tmp_path: Path,
                                                                sink: Sink) -> None:
    d: Daemon = daemon_factory(rules=rules_with(tmp_path, TEMPLATE))
    d.wait_for_log('"event": "ready"')
    assert d.send(message(1), mail_from="claire1@client.test")[0] == 250
    assert "modèle en service" in body(acks(sink, 1)[0])

    template = d.rules / "templates" / "ack.fr.txt"
    template.write_text(TYPO, encoding="utf-8")
    d.signal(signal.SIGHUP)
    (failed,) = events(d, "reload_failed")
    assert failed["errors"] == [
        f"{template.resolve()}:{TYPO_AT}: unknown field 'promise' (did you mean 'promised'?); "
        "known fields: case, customer, customer_name, subject, received, promised, route, "
        "priority, mailbox, language"], failed
    assert '"event": "reloaded"' not in d.log
    assert d.proc is not None and d.proc.poll() is None

    code, text = d.send(message(2), mail_from="claire2@client.test")
    assert code == 250, text  # not 451: the running template still renders
    second = body(acks(sink, 2)[1])
    assert "modèle en service : réponse au plus tard le " in second
    assert "cassé" not in second and "{{" not in second

    template.write_text(TEMPLATE.replace("en service", "corrigé"), encoding="utf-8")
    d.signal(signal.SIGHUP)
    events(d, "reloaded")
    assert d.send(message(3), mail_from="claire3@client.test")[0] == 250
    assert "modèle corrigé" in body(acks(sink, 3)[2])


def test_sighup_with_a_yaml_error_in_the_configuration_keeps_it(daemon_factory: Any,
                                                                tmp_path: Path,
                                                                sink: Sink) -> None:
    d: Daemon = daemon_factory(rules=rules_with(tmp_path, TEMPLATE))
    d.wait_for_log('"event": "ready"')
    good = d.config_path.read_text(encoding="utf-8")
    d.config_path.write_text(good + "smtp:\n  hostname: mx\n bad: indent\n", encoding="utf-8")
    d.signal(signal.SIGHUP)
    (failed,) = events(d, "reload_failed")
    (error,) = failed["errors"]
    assert error.startswith(f"{d.config_path}:"), error
    assert f": {INDENTATION} — YAML: expected <block end>" in error, error
    assert d.send(message(1), mail_from="claire1@client.test")[0] == 250
    assert "modèle en service" in body(acks(sink, 1)[0])


def broken_template(d: Daemon) -> str:
    (d.rules / "templates" / "ack.fr.txt").write_text(TYPO, encoding="utf-8")
    return f"{(d.rules / 'templates' / 'ack.fr.txt').resolve()}:{TYPO_AT}: unknown field"


def broken_rules_yaml(d: Daemon) -> str:
    (d.rules / "zz-broken.yaml").write_text("headers:\n  add:\n\tX-Team: sav\n",
                                            encoding="utf-8")
    return f"{d.rules / 'zz-broken.yaml'}:3:1: a tab character"


def broken_configuration(d: Daemon) -> str:
    d.write_config()
    text = d.config_path.read_text(encoding="utf-8")
    d.config_path.write_text(text.replace("listen: ", "listen:", 1), encoding="utf-8")
    d.write_config = lambda: None  # type: ignore[method-assign]  # start with this very file
    line = next(n for n, row in enumerate(text.splitlines(), 1) if row.startswith("listen:"))
    return f"{d.config_path}:{line}:7: a colon must be followed by a space"


@pytest.mark.parametrize("breaking", [broken_template, broken_rules_yaml, broken_configuration],
                         ids=["template-typo", "rules-yaml-error", "configuration-yaml-error"])
def test_serve_refuses_to_start(daemon_factory: Any, tmp_path: Path, breaking: Any) -> None:
    d: Daemon = daemon_factory(rules=rules_with(tmp_path, TEMPLATE), start=False)
    where = breaking(d)
    with pytest.raises(RuntimeError, match="daemon exited with 2"):
        d.start()
    assert where in d.log, d.log[-3000:]
    assert '"event": "ready"' not in d.log
