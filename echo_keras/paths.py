"""Paths a caller names: checked to be paths, and placed relative to a folder.

The library takes a path as a `str` or an `os.PathLike`; `as_path` turns anything else
into a `ConfigError` naming the argument, as a wrong setting is, and `file_path` also a
file's path written as a folder's. `inside` is the one
test of "this output would land in that folder" (a run folder an overwrite replaces
whole). Nothing here touches the disk but to follow symlinks.
"""

from __future__ import annotations

import os
from pathlib import Path

from echo_keras.errors import ConfigError


def as_path(value, argument: str) -> Path:
    """`value`, a path the caller named for `argument`, as a Path; ConfigError (naming
    `argument`) for anything else: None, bytes, a number, or an empty string (which
    Python would read as the current folder), or a NUL character."""
    text = os.fspath(value) if isinstance(value, os.PathLike) else value
    if not isinstance(text, str):
        raise ConfigError(argument, f"must be a path (str or os.PathLike), got {value!r:.40}")
    if not text:
        raise ConfigError(argument, "must name a file or folder, got ''")
    if "\0" in text:  # no system call takes it
        raise ConfigError(argument, f"must not hold a NUL character, got {text!r:.40}")
    return Path(text)


def file_path(value, argument: str) -> Path:
    """`as_path` for an argument that names a file: a path that ends in a separator is
    refused too, as naming a folder (a Path would drop the slash and take the file)."""
    path = as_path(value, argument)
    problem = names_a_folder(value)
    if problem:
        raise ConfigError(argument, problem)
    return path


def names_a_folder(value) -> str | None:
    """Why `value`, given for a file, names a folder (a text that ends in a separator), or
    None."""
    if isinstance(value, str) and value.endswith(("/", os.sep)):
        return f"{value} ends in /, so it names a folder: give a file"
    return None


def kept_path(place: Path | str) -> str:
    """`place` made whole, to be kept (a run's data file): through symlinks when it leads to
    a regular file; else as written, made absolute, so that opening it names what it is (a
    pipe such as /dev/fd/63 would resolve to a name no one can open, a symlink loop to
    nothing at all)."""
    return os.path.realpath(place) if os.path.isfile(place) else os.path.abspath(place)


def inside(path: Path | str, folder: Path | str) -> bool:
    """Whether `path` is `folder` or lies in it, both followed through symlinks (a link
    that leads nowhere is taken as written)."""
    return real_path(path).is_relative_to(real_path(folder))


def real_path(place: Path | str) -> Path:
    """Where `place` really is: `.`, `x/..` and symlinks followed; a symlink loop (which
    opening it will report) taken as written, made absolute."""
    try:
        return Path(place).resolve()
    except (OSError, RuntimeError):  # RuntimeError: Python 3.11's word for a symlink loop
        return Path(os.path.abspath(place))
