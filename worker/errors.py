"""Errors shared by the core and the shell.

`ConfigError` names the parameter and what it may be, so a refused start tells the operator exactly
what to fix.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value that cannot work; raised at start, never on the hot path."""

    def __init__(self, parameter: str, allowed: str) -> None:
        super().__init__(f"invalid configuration: {parameter} must be {allowed}")
        self.parameter = parameter
        self.allowed = allowed
