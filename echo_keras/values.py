"""Checks and conversions of single values a caller hands the library (a seed, a switch, a
temperature, numpy's numbers), and how a message shows a number. ConfigError names the
field; nothing here knows of the command line.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from echo_keras.errors import ConfigError

LONGEST_SHOWN = 20  # digits of an integer a message shows whole


def float32(value: float) -> float:
    """`value` rounded to float32, as the optimizer will see it (0 or inf when out of range)."""
    with np.errstate(over="ignore", under="ignore"):
        return float(np.float32(value))


def check_seed(seed, field: str = "seed") -> int | None:
    """`seed` as an int (None stays None); ConfigError unless a whole number from 0."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ConfigError(field, f"must be a whole number from 0, got {seed!r:.40}")
    return int(seed)


def plain(value: Any) -> Any:
    """A numpy number or bool as Python's own (what a config holds and JSON writes); else
    `value` as it is."""
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, int)):
        return float(value)
    return value


def check_switch(value, field: str) -> bool:
    """`value` as a bool (numpy's too); ConfigError for anything else, so that neither
    "no" nor 1 is taken for a yes."""
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(field, f"must be True or False, got {value!r:.40}")
    return bool(value)


def check_temperature(temperature) -> float:
    """`temperature` as a float; ConfigError unless it is a finite number above 0."""
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise ConfigError("temperature", f"must be a number above 0, got {temperature!r}")
    if not (finite(temperature) and temperature > 0):
        shown = readable(temperature)
        raise ConfigError("temperature", f"must be a finite number above 0, got {shown}")
    return float(temperature)


def finite(value: float) -> bool:
    """Whether a number is finite as a float (an integer past 1e308 is not)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def readable(value: float) -> str:
    """A number as messages show it: an integer too long to read in scientific notation."""
    if isinstance(value, int) and abs(value) >= 10**LONGEST_SHOWN:
        digits = str(abs(value))
        sign = "-" if value < 0 else ""
        return f"{sign}{digits[0]}.{digits[1:3]}e+{len(digits) - 1}"
    return str(value)
