"""The benches' settings from the environment: a bad value ends the bench with one line."""

from __future__ import annotations

import os


def whole_number(name: str, default: int, minimum: int = 1) -> int:
    """The environment variable `name` as a whole number of at least `minimum` (`default`
    when unset); SystemExit with one line naming it otherwise."""
    text = os.environ.get(name, "").strip() or str(default)
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise SystemExit(f"bench: {name}={text!r}: expected a whole number of at least {minimum}")
    return value
