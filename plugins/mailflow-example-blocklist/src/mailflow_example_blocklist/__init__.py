"""Example mailflow plugin: a sender blocklist (see README.md)."""

__version__ = "0.1.0"
