"""Configuration: generic machinery (``loading``), shared value types
(``types``) and the daemon's own settings (``settings``)."""

from mailflow.config.loading import (
    ConfigError,
    Model,
    Problem,
    load_yaml,
    parse_host_port,
    position,
    validate,
)
from mailflow.config.settings import (
    DEFAULT_LISTEN,
    DEFAULT_RULES_DIR,
    DEFAULT_STATE_DIR,
    OVERRIDES,
    NextHop,
    OutboxSettings,
    RelaySettings,
    SchedulerSettings,
    Settings,
    SmtpSettings,
    StatisticsSettings,
    load_settings,
)
from mailflow.config.types import ClockTime, TimeRange, TimeZoneName

__all__ = [
    "DEFAULT_LISTEN", "DEFAULT_RULES_DIR", "DEFAULT_STATE_DIR", "OVERRIDES", "ClockTime",
    "ConfigError", "Model", "NextHop", "OutboxSettings", "Problem", "RelaySettings",
    "SchedulerSettings", "Settings", "SmtpSettings", "StatisticsSettings", "TimeRange",
    "TimeZoneName",
    "load_settings", "load_yaml", "parse_host_port", "position", "validate",
]
