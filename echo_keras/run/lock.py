"""`FileLock`: an exclusive `flock` on a file, which the system drops when its process dies.

A writer takes it for as long as it writes and stamps its pid in the file (for
messages); anyone can ask whether it is held, with a shared lock that never
blocks. The file is removed on release, and a taker checks that the file it
locked is still the one at the path, so a release racing a take cannot leave two
holders. The file is never opened through a symlink. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import stat
import tempfile
from pathlib import Path


class FileLock:
    """The lock file at `path` (its folder must exist to take it).

    Example:

    ```python
    lock = FileLock(Path("runs/.echo.lock"))
    if lock.acquire(stamp=True):
        try:
            ...
        finally:
            lock.release()
    ```
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held_here(self) -> bool:
        return self._fd is not None

    def _open(self) -> int:
        """The lock file, never through a symlink; read-only if another user left it so."""
        flags = os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            try:
                fd = os.open(self.path, os.O_RDWR | flags, 0o666)
            except PermissionError:
                fd = os.open(self.path, os.O_RDONLY | flags)  # flock works on it too
        except OSError as error:
            if error.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink: never write through it
                raise OSError(errno.ELOOP, "the lock file is a symlink", str(self.path)) from None
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(errno.EINVAL, "the lock file is not a regular file", str(self.path))
        return fd

    def acquire(self, stamp: bool = False) -> bool:
        """Take the lock without waiting; False if another holder has it. `stamp` writes our pid."""
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            try:  # a releasing holder may have unlinked the file we opened: lock the new one
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    if stamp and os.access(f"/proc/self/fd/{fd}", os.W_OK):
                        with contextlib.suppress(OSError):  # the pid is a courtesy
                            os.ftruncate(fd, 0)
                            os.write(fd, f"{os.getpid()}\n".encode())
                    self._fd = fd
                    return True
            except FileNotFoundError:
                pass
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                self.path.unlink()
        os.close(fd)

    def held(self) -> bool:
        """Whether a holder (this process included) has the lock right now."""
        if self._fd is not None:
            return True
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    def holder(self) -> int | None:
        """The pid stamped in the lock file by its last writer, if any."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            try:
                return int(os.read(fd, 32).strip() or 0) or None
            finally:
                os.close(fd)
        except (OSError, ValueError):
            return None


OWNER_LOCK = "echo-keras-owner.lock"  # held by the process a scratch folder belongs to
# A process's own temporary folder, for what TensorFlow writes there (the commands, the
# sweep's workers): removed at its end, or by a later process once its owner is gone.
PRIVATE_PREFIX = "echo-keras-tmp-"


def owned_folder(base: str | Path, prefix: str, on_dead=None) -> tuple[Path, FileLock]:
    """A new folder `base/prefix*` and its owner's lock, held: `remove_dead_folders` never
    takes a folder whose owner lives. First removes what dead owners left there (`on_dead`:
    see there)."""
    remove_dead_folders(base, prefix, on_dead)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    lock = FileLock(folder / OWNER_LOCK)
    lock.acquire(stamp=True)
    return folder, lock


def use_private_tempdir() -> tuple[Path, FileLock]:
    """Make this process's temporary folder (`tempfile.gettempdir()`) a new one of its own,
    for what TensorFlow writes there (AutoGraph's `__autograph_generated_file*.py`), which it
    removes only at an interpreter exit that a command skips and a Ray worker never has.
    Return the folder and its owner's lock, to be held until the process ends: a later
    process removes the folder once its owner is gone. Processes this one starts keep the
    system's temporary folder."""
    folder, lock = owned_folder(tempfile.gettempdir(), PRIVATE_PREFIX)
    tempfile.tempdir = str(folder)
    return folder, lock


def system_tempdir() -> Path:
    """The temporary folder this machine gives processes: where private folders are made
    (`tempfile.gettempdir()` is this process's own once `use_private_tempdir` ran)."""
    current = Path(tempfile.gettempdir())
    return current.parent if current.name.startswith(PRIVATE_PREFIX) else current


def remove_dead_folders(base: str | Path, prefix: str, on_dead=None) -> None:
    """Remove the folders `base/prefix*` that processes killed with SIGKILL left: those whose
    owner's lock no process holds (`on_dead(folder)` is called first, the lock held). A
    folder whose lock file holds no pid yet is being made (its owner creates the file, then
    locks it, then stamps it), or is not ours: it is left alone. (Taking the lock between
    the owner's creating and locking it removed a live process's folder: two of a sweep's
    workers, started together, could fail so.)"""
    for folder in Path(base).glob(f"{prefix}*"):
        lock = FileLock(folder / OWNER_LOCK)
        try:
            if folder.is_symlink() or not lock.path.is_file() or lock.holder() is None:
                continue
            if not lock.acquire():
                continue
        except OSError:
            continue
        try:
            if on_dead is not None:
                on_dead(folder)
            shutil.rmtree(folder, ignore_errors=True)  # its owner is gone
        finally:
            lock.release()
