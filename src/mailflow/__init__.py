"""mailflow: a plugin framework for mail-processing rules, as an SMTP daemon."""

__version__ = "0.1.0"
