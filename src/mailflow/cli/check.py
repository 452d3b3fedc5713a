"""``mailflow check``: validate configuration, rules and plugins without starting anything."""

from __future__ import annotations

import argparse
from pathlib import Path

from mailflow.cli.options import settings_from
from mailflow.config.settings import HOSTNAME_ADVICE, is_domain_name


def run(args: argparse.Namespace) -> int:
    """Load everything the daemon would load; a problem raises ConfigError."""
    from mailflow.runtime import load_runtime

    settings = settings_from(args)
    runtime = load_runtime(settings)
    for warning in runtime.warnings:
        message = warning.message.removeprefix("warning: ")
        print(f"{warning.file}:{warning.line}:{warning.column}: warning: {message}")
    if not is_domain_name(settings.smtp.hostname):
        print(f"{settings.source}: warning: smtp.hostname "
              + HOSTNAME_ADVICE.format(settings.smtp.hostname))
    print(f"configuration OK: {settings.source}")
    print(f"rules OK: {Path(settings.rules).resolve()} "
          f"({len(runtime.rules.local_domains)} local domain(s))")
    print(f"chain: {', '.join(runtime.chain.names) or '(empty)'}")
    scope = runtime.chain.scope
    print("service mailboxes: " + (", ".join(sorted(scope.service_mailboxes)) or
                                   "(none declared: all mail for the local domains is"
                                   " treated as customer mail)"))
    print(f"agents: {len(scope.agents)} known (their replies are recorded on the cases)")
    plugins = sorted(name for name, _ in runtime.pm.list_name_plugin())
    print(f"plugins: {', '.join(plugins)}")
    return 0
