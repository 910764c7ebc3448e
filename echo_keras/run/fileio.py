"""File I/O that survives kills and full disks, and reads that trust nothing.

Every byte echo-keras writes goes through `atomic_write` (a temporary file beside
the target, flushed to disk, then renamed over it) or `append` (flushed); the
tests inject faults here. Reads go through `open_regular`, which refuses
symlinks, FIFOs and devices, and `read_npz`, which checks every array's header
before reading its data. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

MAX_JSON_BYTES = 1 << 20  # config.json and status.json are a few hundred bytes

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` for a temporary path beside `path` (same suffix), then rename it over.

    The data is flushed to disk before the rename, so after a crash `path` holds
    the old file or the new one, whole. On any error the temporary file is
    removed and `path` is left as it was.
    """
    staged_write(path, write).commit()


class Staged:
    """A file written and flushed to disk beside `path`, not yet in its place: `commit`
    renames it over `path` (removing it if that fails), `discard` removes it."""

    def __init__(self, path: Path, tmp: Path):
        self.path, self.tmp = path, tmp

    def commit(self) -> None:
        try:
            os.replace(self.tmp, self.path)
        except BaseException:
            self.discard()
            raise
        sync_folder(self.path.parent)

    def discard(self) -> None:
        self.tmp.unlink(missing_ok=True)


def never_replaced(path: Path) -> bool:
    """Whether `path` is there but is what `atomic_write` never replaces: a folder, a FIFO,
    a device (a symlink is written through); other errors of looking it up are raised."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISLNK(mode))


def lookup_problem(path: Path) -> str | None:
    """Why `path` cannot even be looked up (a name too long, say), or None: it is there,
    or merely missing (or a file stands where a folder of it should)."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as error:
        return error.strerror or str(error)
    return None


def staged_write(path: Path, write: Callable[[Path], None]) -> Staged:
    """`atomic_write`'s first half: `write(tmp)` beside `path` and flushed to disk, for the
    caller to commit once whatever must come first has (a command's output, say). On any
    error the temporary file is removed."""
    path = Path(path)
    if never_replaced(path):
        raise OSError(errno.EEXIST, "it exists and is not a regular file", str(path))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    tmp = Path(tmp)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)  # a file replaced keeps its mode
    except OSError:
        mode = 0o666 & ~_UMASK
    try:
        write(tmp)
        os.chmod(tmp, mode)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return Staged(path, tmp)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def append(path: Path, data: str) -> None:
    """Append `data` to `path` (created if missing) and flush it to disk."""
    with open(path, "a") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def sync_folder(folder: Path) -> None:
    """Flush a folder's entries (renames, new files) to disk, where the system allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def shortened(path: Path | str, keep: int = 40) -> str:
    """`path` for a message: whole, or its first `keep` characters and "..."."""
    text = str(path)
    return text if len(text) <= keep else f"{text[:keep]}..."


def output_path(path: Path) -> Path:
    """Where a file the user named for output is written; ValueError if it cannot be.

    A symlink is written through (its target is replaced, the link stays); an
    existing device, FIFO, socket or folder is refused, never replaced.
    """
    path = Path(path)
    if problem := lookup_problem(path):  # a name too long, say (a missing one: said below)
        raise ValueError(f"{shortened(path)} cannot be written ({problem})")
    try:
        target = path.resolve() if path.is_symlink() else path
    except (OSError, RuntimeError):  # RuntimeError: Python 3.11's word for a symlink loop
        raise ValueError(f"{path} is a symlink that leads nowhere (a loop?)") from None
    if target.exists() and not target.is_file():
        raise ValueError(f"{path} exists and is not a regular file; it is left alone")
    if not target.parent.is_dir():
        raise ValueError(not_a_folder(target.parent))
    return target


def not_a_folder(folder: Path) -> str:
    """Why the folder an output was named in cannot take it: a file in its place, or none."""
    if folder.exists():
        return f"{folder} is {kind_of(folder)}, not a folder"
    return f"folder {folder} does not exist"


def kind_of(path: Path) -> str:
    """What is at `path` that is not a folder, for a message: "a file", "a FIFO", ..."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "a file"
    kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"))  # fmt: skip
    return next((name for test, name in kinds if test(mode)), "a file")


def folder_problem(path: Path) -> str | None:
    """Why a folder the user named for output could not be made or written at `path`
    (a symlink loop, a file in the way, no permission), or None; nothing is created."""
    path = Path(path)
    try:
        target = path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: Python 3.11's word for a symlink loop
        return f"{path} is a symlink that leads nowhere (a loop?)"
    if target.exists() and not target.is_dir():
        return f"{path} is {kind_of(target)}, not a folder"
    return nearest_folder_problem(target)


def nearest_folder_problem(path: Path) -> str | None:
    """Why no file could be made in the nearest folder that exists at or above `path`
    (a file on the way, no permission), or None."""
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is {kind_of(existing)}, not a folder"
    return write_probe_problem(existing)


def write_probe_problem(folder: Path) -> str | None:
    """Why no file can be made in `folder`, or None: a real probe, for permissions alone do
    not tell (root, read-only mounts, /proc)."""
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        return f"{folder} cannot be written ({error.strerror})"
    return None


def open_regular(path: Path, mode: str = "rb", **options):
    """Open a run file for reading, refusing anything but a regular file.

    A symlink (to /dev/zero, say), a FIFO (which would block forever) or a device
    in a run folder is damage, not data: OSError, without reading a byte.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "it is not a regular file")
        return open(fd, mode, **options)
    except BaseException:
        os.close(fd)
        raise


def read_json(path: Path, limit: int = MAX_JSON_BYTES) -> object:
    with open_regular(path) as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"it is larger than {limit} bytes")
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("it is nested too deeply") from None


_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def read_npz(
    path: Path, check: Callable[[str, tuple, np.dtype], None], only: set[str] | None = None
) -> dict[str, np.ndarray]:
    """Load an uncompressed npz whose arrays `check(name, shape, dtype)` accepts (with
    `only`, just the arrays of those names; the others are neither checked nor read).

    Each array's header is read and checked before its data, and its stored size
    must be what the header promises, so a hostile file (an array a million times
    larger than expected, a zip bomb) is refused without being read.
    Raises ValueError, OSError or zipfile.BadZipFile for a damaged file.
    """
    arrays = {}
    with open_regular(path) as handle, zipfile.ZipFile(handle) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                raise ValueError(f"unexpected member {info.filename!r}")
            name = info.filename[: -len(".npy")]
            if name in arrays:  # which copy counts would be the reader's guess
                raise ValueError(f"{name} is in it twice")
            if only is not None and name not in only:
                continue
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                if version not in _HEADER_READERS:
                    raise ValueError(f"{name} has npy format version {version}")
                shape, fortran, dtype = _HEADER_READERS[version](member)
                if dtype.hasobject:
                    raise ValueError(f"{name} holds Python objects")
                check(name, shape, dtype)
                expected = member.tell() + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
                if info.file_size != expected:
                    raise ValueError(
                        f"{name} is {info.file_size} bytes, its header says {expected}"
                    )
                data = member.read()
            array = np.frombuffer(data, dtype=dtype)
            arrays[name] = array.reshape(shape, order="F" if fortran else "C")
    return arrays


def savez(path: Path, arrays: dict) -> None:
    atomic_write(path, _npz_writer(arrays))


def staged_savez(path: Path, arrays: dict) -> Staged:
    """`savez`'s file, staged (`staged_write`)."""
    return staged_write(path, _npz_writer(arrays))


def _npz_writer(arrays: dict) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        with tmp.open("wb") as handle:
            np.savez(handle, **arrays)

    return write
