"""Errors shared by the core and the shell, and the value checks configurations raise them on.

`ConfigError` names the parameter and what it may be, so a refused start tells the operator exactly
what to fix. `is_whole` / `is_finite_number` refuse `True` (a bool is an int in Python) and NaN/inf,
which would otherwise pass range checks silently.
"""

from __future__ import annotations

import math
from typing import Any


def is_whole(value: Any) -> bool:
    """An int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    """An int or float, not a bool, neither NaN nor infinite."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class ConfigError(ValueError):
    """A configuration value that cannot work; raised at start, never on the hot path."""

    def __init__(self, parameter: str, allowed: str) -> None:
        super().__init__(f"invalid configuration: {parameter} must be {allowed}")
        self.parameter = parameter
        self.allowed = allowed
