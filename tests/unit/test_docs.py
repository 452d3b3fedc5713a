"""The documentation and the deployment files cannot drift from the code.

- every hook in ``mailflow.hookspecs`` has a heading in docs/plugin_hooks.md;
- every Settings key (nested sections included) has a row in the settings
  table of docs/configuration.md, with the default the code really has, and
  the table lists nothing the code does not accept;
- every metric the framework and the built-in stages create is listed in
  docs/configuration.md;
- the systemd unit keeps what operations rely on, and the example
  configuration validates and agrees with the unit and the Postfix files.
"""

from __future__ import annotations

import ast
import inspect
import ipaddress
import itertools
import re
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pydantic import BaseModel
from pydantic_core import PydanticUndefined
from ruamel.yaml import YAML

from mailflow import hookspecs
from mailflow.config import Settings, load_settings
from mailflow.config.loading import parse_host_port
from mailflow.daemon import SHUTDOWN_GRACE
from mailflow.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
PLUGIN_HOOKS = REPO / "docs" / "plugin_hooks.md"
CONFIGURATION = REPO / "docs" / "configuration.md"
UNIT = REPO / "deploy" / "systemd" / "mailflow.service"
EXAMPLE_CONFIG = REPO / "deploy" / "mailflow.yaml"
POSTFIX = REPO / "deploy" / "postfix"
STAGES = REPO / "src" / "mailflow" / "stages"


# ---------------------------------------------------------------------------
# hooks
# ---------------------------------------------------------------------------


def hook_names() -> set[str]:
    return {name for name, obj in vars(hookspecs).items()
            if name.startswith("mailflow_") and inspect.isfunction(obj)}


def documented_hooks() -> set[str]:
    text = PLUGIN_HOOKS.read_text(encoding="utf-8")
    return set(re.findall(r"^#{2,6}\s+`?(mailflow_\w+)`?\s*$", text, re.MULTILINE))


def test_hookspecs_found() -> None:
    assert "mailflow_stages" in hook_names()


GUIDE = REPO / "docs" / "plugins.md"


def test_the_guide_names_only_what_exists() -> None:
    """docs/plugins.md: every ``mailflow_*`` it names is a hook or a shipped fixture, and
    every name it imports from ``mailflow.plugin`` is on the public surface."""
    import mailflow.plugin
    from mailflow.testing import pytest_plugin

    text = GUIDE.read_text(encoding="utf-8")
    fixtures = {name for name in vars(pytest_plugin) if name.startswith("mailflow_")}
    named = set(re.findall(r"\b(mailflow_[a-z_]+)\b", text)) - {"mailflow_vip"}  # its package
    assert named, "the guide names no hook nor fixture"
    assert named <= hook_names() | fixtures, named - hook_names() - fixtures
    imported = {name.strip() for block in re.findall(
        r"from mailflow\.plugin import ([^\n]+)", text) for name in block.split(",")}
    assert imported and imported <= set(mailflow.plugin.__all__), imported
    assert set(mailflow.plugin.__all__) <= set(dir(mailflow.plugin))


def test_every_hook_has_a_heading() -> None:
    missing = hook_names() - documented_hooks()
    assert not missing, f"hooks not documented as a heading in {PLUGIN_HOOKS.name}: {missing}"


def test_no_heading_for_a_hook_that_does_not_exist() -> None:
    stale = documented_hooks() - hook_names()
    assert not stale, f"{PLUGIN_HOOKS.name} documents hooks hookspecs.py lacks: {stale}"


def documented_signatures() -> dict[str, list[str]]:
    """Hook -> parameter names of its reference signature (``def mailflow_x(...) -> T: ...``)."""
    text = PLUGIN_HOOKS.read_text(encoding="utf-8")
    found: dict[str, list[str]] = {}
    for m in re.finditer(r"^def (mailflow_\w+)\([^`]*?\) -> [^`]*?: \.\.\.$", text,
                         re.MULTILINE | re.DOTALL):
        function = ast.parse(m.group(0)).body[0]
        assert isinstance(function, ast.FunctionDef)
        found[m.group(1)] = [a.arg for a in function.args.args]
    return found


def test_each_hook_reference_signature_matches_the_code() -> None:
    documented = documented_signatures()
    assert set(documented) == hook_names()
    for name, params in documented.items():
        expected = list(inspect.signature(getattr(hookspecs, name)).parameters)
        assert params == expected, f"{name}: documented {params}, hookspecs has {expected}"


# ---------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models inside an annotation (``NextHop | None`` → [NextHop])."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models(arg)]


def setting_fields(model: type[BaseModel] = Settings,
                   prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, pydantic FieldInfo) for every field, nested models included."""
    for name, info in model.model_fields.items():
        key = prefix + name
        yield key, info
        for sub in _models(info.annotation):
            yield from setting_fields(sub, key + ".")


def render_default(value: Any) -> str:
    """A default as the table writes it: YAML spelling."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(render_default(v) for v in value) + "]"
    if isinstance(value, str):
        return value or '""'
    return str(value)


def settings_table() -> dict[str, str]:
    """Rows of the settings table in configuration.md: key → default cell."""
    text = CONFIGURATION.read_text(encoding="utf-8")
    text = text.partition("\n## Settings\n")[2].partition("\n## ")[0]  # not other tables
    rows = re.findall(r"^\| `([a-z_][a-z0-9_.]*)` \| ([^|]*?) \|", text, re.MULTILINE)
    return {key: cell for key, cell in rows if not key.startswith("mailflow_")
            and not key.startswith("--")}


def test_every_setting_has_a_row() -> None:
    keys = {key for key, _ in setting_fields()}
    assert {"listen", "smtp.max_message_size", "outbox.max_attempts"} <= keys
    missing = sorted(keys - settings_table().keys())
    assert not missing, f"Settings keys missing from {CONFIGURATION.name}: {missing}"


def test_no_row_for_a_setting_that_does_not_exist() -> None:
    keys = {key for key, _ in setting_fields()}
    stale = sorted(settings_table().keys() - keys)
    assert not stale, f"{CONFIGURATION.name} documents settings config.py lacks: {stale}"


SETTING_FIELDS = list(setting_fields())


@pytest.mark.parametrize("key,info", SETTING_FIELDS, ids=[key for key, _ in SETTING_FIELDS])
def test_documented_default_is_the_real_one(key: str, info: Any) -> None:
    default = info.default
    if (info.default_factory is not None or default is PydanticUndefined
            or isinstance(default, BaseModel)):
        return  # computed, required, or a section: the cell is prose
    cell = settings_table().get(key)
    assert cell is not None, f"{key} has no row in {CONFIGURATION.name}"
    assert cell == f"`{render_default(default)}`", (
        f"{key}: {CONFIGURATION.name} says {cell}, config.py says {render_default(default)!r}")


# ---------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------


def framework_metric_names() -> set[str]:
    registry = CollectorRegistry()
    Metrics(registry)
    names = set()
    for family in registry.collect():
        names.add(f"{family.name}_total" if family.type == "counter" else family.name)
    return names


def stage_metric_names() -> set[str]:
    """Names the built-in stages (and the statistics they share) pass to
    ``env.metrics.counter/gauge/histogram``."""
    names = set()
    for path in [*STAGES.glob("*.py"), *(STAGES.parent / "stats").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("counter", "gauge", "histogram") and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)
                    and node.args[0].value.startswith("mailflow_")):
                names.add(node.args[0].value)
    return names


def documented_metrics() -> set[str]:
    text = CONFIGURATION.read_text(encoding="utf-8")
    return set(re.findall(r"^\| `(mailflow_\w+)` \|", text, re.MULTILINE))


def test_every_framework_metric_is_documented() -> None:
    names = framework_metric_names()
    assert "mailflow_messages_total" in names
    missing = sorted(names - documented_metrics())
    assert not missing, f"metrics of mailflow.metrics.Metrics missing from docs: {missing}"


def test_every_stage_metric_is_documented() -> None:
    missing = sorted(stage_metric_names() - documented_metrics())
    assert not missing, f"metrics of built-in stages missing from docs: {missing}"


def test_no_documented_metric_that_nothing_creates() -> None:
    stale = sorted(documented_metrics() - framework_metric_names() - stage_metric_names())
    assert not stale, f"{CONFIGURATION.name} lists metrics nobody exports: {stale}"


# ---------------------------------------------------------------------------
# deployment files
# ---------------------------------------------------------------------------


def unit_settings() -> dict[str, list[str]]:
    """``Key`` → values (a key may repeat) across all sections of the unit."""
    values: dict[str, list[str]] = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a Key=value line in {UNIT.name}: {line!r}"
        values.setdefault(key.strip(), []).append(value.strip())
    return values


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|sec|min)?", value)
    assert match, f"unexpected time span {value!r}"
    return float(match[1]) * (60 if match[2] == "min" else 1)


def test_systemd_unit() -> None:
    unit = unit_settings()
    assert unit["Type"] == ["notify"]
    assert unit["NotifyAccess"] == ["main"]
    assert _seconds(unit["WatchdogSec"][-1]) > 0
    assert "serve" in unit["ExecStart"][-1].split()
    assert unit["ExecReload"][-1].endswith("kill -HUP $MAINPID")
    assert unit["User"][-1] and unit["User"][-1] != "root"
    assert unit["StateDirectory"] == ["mailflow"]
    assert unit["NoNewPrivileges"] == ["yes"]
    assert unit["ProtectSystem"] == ["strict"]
    # messages in flight get SHUTDOWN_GRACE seconds: systemd must wait longer
    assert _seconds(unit["TimeoutStopSec"][-1]) > SHUTDOWN_GRACE


def test_example_config_validates_and_matches_the_unit() -> None:
    settings = load_settings(EXAMPLE_CONFIG)
    unit = unit_settings()
    assert settings.state_dir == f"/var/lib/{unit['StateDirectory'][-1]}"
    assert f"--config /etc/{unit['ConfigurationDirectory'][-1]}/mailflow.yaml" in (
        unit["ExecStart"][-1])
    assert settings.next_hop is not None and settings.next_hop.kind == "smtp"
    assert settings.metrics_address is not None
    assert settings.metrics_address[0] in ("127.0.0.1", "::1")


def main_cf() -> dict[str, str]:
    """deploy/postfix/main.cf's parameters, as Postfix reads them: comments skipped, a
    line starting with whitespace continues the one before, the last value wins."""
    values: dict[str, str] = {}
    key = ""
    for line in (POSTFIX / "main.cf").read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace():
            assert key, f"a continuation line with nothing to continue: {line!r}"
            values[key] += " " + line.strip()
            continue
        key, sep, value = (part.strip() for part in line.partition("="))
        assert sep, f"not a 'name = value' line in main.cf: {line!r}"
        values[key] = value
    return values


def master_cf() -> dict[tuple[str, str], list[str]]:
    """deploy/postfix/master.cf's services: (name, type) -> the fields and -o options."""
    entries: dict[tuple[str, str], list[str]] = {}
    current: list[str] | None = None
    for line in (POSTFIX / "master.cf").read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace():
            assert current is not None, line
            current.extend(line.split())
            continue
        fields = line.split()
        assert (fields[0], fields[1]) not in entries, f"two {fields[:2]} entries in master.cf"
        current = entries[fields[0], fields[1]] = fields[2:]
    return entries


def options(entry: list[str]) -> dict[str, str]:
    """A master.cf entry's ``-o name=value`` options."""
    found = {}
    for flag, option in itertools.pairwise(entry):
        if flag == "-o":
            name, _, value = option.partition("=")
            found[name] = value
    return found


def test_example_config_matches_the_postfix_files() -> None:
    """mailflow.yaml and deploy/postfix/ name the same ports, domains and networks."""
    settings = load_settings(EXAMPLE_CONFIG)
    main, master = main_cf(), master_cf()
    host, port = settings.listen_address
    assert main["content_filter"] == f"mailflow:[{host}]:{port}"
    hop = settings.next_hop
    assert hop is not None and hop.kind == "smtp"
    reinject = master[f"{hop.host}:{hop.port}", "inet"]
    assert options(reinject)["content_filter"] == ""  # not filtered twice
    assert settings.submission_listen is not None
    sub_host, sub_port = parse_host_port(settings.submission_listen)
    submission = master["submission", "inet"]
    assert options(submission)["content_filter"] == (
        f"mailflow-submission:[{sub_host}]:{sub_port}")
    for transport in ("mailflow", "mailflow-submission"):
        assert master[transport, "unix"][5] == "smtp", transport
        # maxproc: messages in mailflow at once, within its sessions
        assert int(master[transport, "unix"][4]) < settings.smtp.max_sessions
    # every pooled connection of mailflow's relay holds one reinjection smtpd
    assert int(reinject[4]) >= settings.relay.pool_size * settings.workers
    # the company's domains: the rules' local domains, each with a route in "transport"
    rules = YAML(typ="safe").load((REPO / "rules" / "domains.yaml").read_text(encoding="utf-8"))
    domains = main["relay_domains"].replace(",", " ").split()
    assert sorted(domains) == sorted(rules["local_domains"])
    routes = [line.split()[0] for line in (POSTFIX / "transport").read_text(
        encoding="utf-8").splitlines() if line.strip() and not line.startswith("#")]
    assert sorted(routes) == sorted(domains)
    # who may relay through Postfix is trusted by mailflow (XFORWARD names them)
    trusted = settings.networks
    for net in main["mynetworks"].replace(",", " ").split():
        network = ipaddress.ip_network(net.strip("[]").replace("]/", "/"), strict=False)
        assert any(network.version == t.version and network.subnet_of(t)  # type: ignore[arg-type]
                   for t in trusted), f"{network} in mynetworks, not in trusted_networks"
    assert int(main["message_size_limit"]) <= settings.smtp.max_message_size


def test_postfix_files_name_only_what_is_shipped() -> None:
    """The tables main.cf names are files of deploy/postfix/ (installed under
    /etc/postfix), and the guide names every file there."""
    main = main_cf()
    for key in ("header_checks", "transport_maps"):
        table = main[key].partition(":")[2]
        assert table.startswith("/etc/postfix/"), (key, table)
        assert (POSTFIX / table.removeprefix("/etc/postfix/")).is_file(), (key, table)
    assert main["smtpd_sasl_type"] == "cyrus"
    assert (POSTFIX / "sasl" / f"{main['smtpd_sasl_path']}.conf").is_file()
    guide = (POSTFIX / "README.md").read_text(encoding="utf-8")
    for path in POSTFIX.rglob("*"):
        if path.is_file() and path.name != "README.md":
            assert f"`{path.relative_to(POSTFIX)}`" in guide, f"README.md never names {path}"
