"""The export folder, without TensorFlow: what `out` may be, and what lives beside it.

An export is written to a staging folder beside its target, `.NAME.export-PID-XXXXXX`,
and renamed into place once verified. The exporter holds `.NAME.export.lock` beside the
target from start to end (`lock.FileLock`: the system drops it when the process dies),
so while it is held no other export to the target runs, and once taken every staging
folder of that name belongs to a dead export and is deleted.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from pathlib import Path

from echo_keras.run import fileio, files
from echo_keras.run.lock import FileLock

# The longest suffix added to NAME beside the target: `.` + NAME + `.export-PID-XXXXXX`.
_SUFFIX_BYTES = len("..export--") + 10 + 6


def out_problem(out: Path, run_dir: Path | None = None) -> str | None:
    """Why `out` cannot be an export folder, or None: it must name a new or empty folder,
    not through a symlink, in an existing folder; not `.`, `..`, `/` or the current
    folder (a folder cannot be replaced from inside it); not a mount point; not inside the
    run folder `run_dir` (which an overwrite replaces whole); and its name must leave room
    for the staging folder's beside it."""
    out = Path(out)
    try:  # first: a name too long for the file system fails every other look at it
        limit = os.pathconf(out.parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    if len(os.fsencode(out.name)) + _SUFFIX_BYTES > limit:
        return f"the name {out.name[:16]}... is too long for the staging folder beside it"
    around = files.run_folder_around(out, run_dir)  # this run's, or another's
    if around is not None:
        return f"{out} is inside {around}, which `overwrite=True` replaces whole"
    if out.name in ("", ".", ".."):
        return f"{out} names no new folder; give a new folder's name"
    if out.is_symlink():
        return f"{out} is a symlink; give the folder's own path"
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        return f"{out} already exists; give a new folder"
    if not out.parent.is_dir():
        return fileio.not_a_folder(out.parent)
    if out.exists():
        with contextlib.suppress(OSError):  # a deleted current folder cannot be `out`
            if out.resolve() == Path.cwd().resolve():
                return f"{out} is the current folder; give a new folder's name"
        if os.path.ismount(out):
            return f"{out} is a mount point, which an export cannot replace"
    return None


def lock(out: Path) -> FileLock:
    """The exporter's lock beside `out`."""
    return FileLock(out.parent / f".{out.name}.export.lock")


def new_staging(out: Path) -> Path:
    """Make a staging folder beside `out`, with the mode a plain `mkdir` gives (0777 less
    the umask), not mkdtemp's 0700: a server running as another user must read it."""
    while True:
        staging = out.parent / f".{out.name}.export-{os.getpid()}-{secrets.token_hex(3)}"
        with contextlib.suppress(FileExistsError):
            staging.mkdir(0o777)
            return staging


def remove_dead_staging(out: Path) -> list[Path]:
    """Delete the staging folders killed exports to `out` left behind; call it only with
    `lock(out)` held, when no other export to `out` can be alive. Returns what it deleted."""
    pattern = re.compile(rf"\.{re.escape(out.name)}\.export-\d+-[0-9a-f]{{6}}")
    removed = []
    with contextlib.suppress(OSError):
        for path in out.parent.iterdir():
            if pattern.fullmatch(path.name) and path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed
