"""`RunFolder`: the one owner of a run folder's life: lock, start, status, swap, recovery, reads.

- **One writer.** Training holds an exclusive `flock` (`lock.FileLock`) on
  `.NAME.lock` beside the folder for the whole run (beside, because `--overwrite`
  replaces the folder itself). The system drops the lock when the process dies, so
  it never goes stale; a second writer is refused, naming the first one's pid.
- **Status that cannot lie.** `status.json` says `running` while training writes
  it; if no process holds the lock any more, the run is reported `interrupted`.
- **Swap.** `--overwrite` (and the retry of a run that never completed an epoch)
  trains in `.NAME.new-*` beside the folder and swaps it in only when complete:
  the old folder is renamed to `.NAME.old-*`, the new one into place, then the
  old one is deleted. A process killed between the two renames leaves the old run
  in `.NAME.old-*`; the next command on the folder puts it back and clears the
  leftovers of dead processes.
- **Consistent reads.** Readers open the folder once and read every file through
  that handle, so a swap in the middle of a read cannot mix the old config with
  the new model; a reader whose folder was swapped away and deleted starts again.

Nothing here imports TensorFlow.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from echo_keras.errors import (
    ConfigError,
    RunBusy,
    RunExists,
    RunFolderError,
    listed,
    tell,
    warn,
)
from echo_keras.options import RESUME_HINT
from echo_keras.paths import as_path, inside, real_path
from echo_keras.run import arrays, fileio, files
from echo_keras.run.lock import FileLock

T = TypeVar("T")
LOCK_WAIT = 1.0  # seconds a writer waits out a reader's brief look at the lock


def _rename(source: Path, target: Path) -> None:
    """Rename a folder, flushing the parent's entries (every swap step goes through here)."""
    os.rename(source, target)
    fileio.sync_folder(Path(target).parent)


def holds_run(run_dir: Path) -> bool:
    """Whether `run_dir` exists with something in it (an empty folder is free to use)."""
    run_dir = Path(run_dir)
    return run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir()))


class RunFolder:
    """A run folder, named as the user named it (`path`), written where it really is (`real`).

    A symlinked run folder is written through: the lock, the swap and the
    leftovers live beside its target, and the link stays a link. A `path` that is not
    a path (None, bytes, '') is a ConfigError naming `run_dir`.

    Example:

    ```python
    folder = RunFolder("runs/echo")
    with folder.writing():                     # RunBusy if another process trains it
        work = folder.begin(notify=print)      # where to write; RunExists if taken
        ...                                    # write config, history, checkpoints
        folder.finish(work)                    # swap in a replacement; no-op in place
    config = folder.read(lambda view: files.load_config(view, folder.path))
    ```
    """

    def __init__(self, path: Path | str):
        self.path = as_path(path, "run_dir")
        self.real = real_path(self.path)  # symlinks of the folder or above it followed
        self.lock = FileLock(self.real.parent / f".{self.real.name}.lock")
        self._leftover = re.compile(rf"\.{re.escape(self.real.name)}\.(old|new)-\d+-[0-9a-f]{{6}}")

    def unwritable(self) -> str | None:
        """Why training could not write here (a file in the way, no permission), or None.

        Both the folder and the one it sits in must take new files: the lock and a
        replacement live beside the run.
        """
        try:
            os.lstat(self.path)
        except (FileNotFoundError, NotADirectoryError):  # said below
            pass
        except OSError as error:  # a name too long, say
            return f"{fileio.shortened(self.path)} cannot be a folder ({error.strerror})"
        if self.path.is_symlink() and not self.path.exists():
            if self.real.is_symlink() or not self.real.parent.is_dir():
                return f"{self.path} is a symlink that leads nowhere (a loop?)"
        if self.real.exists() and not self.real.is_dir():
            return f"{self.path} is a file, not a folder"
        # A run's config.json marks it (its other names, checkpoint say, are common ones).
        above = files.enclosing_run(self.real.parent)
        if above is not None:  # replacing that run (overwrite) would delete this one with it
            return f"{self.path} lies inside the run folder {above}"
        problem = fileio.nearest_folder_problem(self.real.parent)
        if problem is None and self.real.is_dir():
            problem = fileio.write_probe_problem(self.real)
        return problem

    # --- the lock ------------------------------------------------------------------------

    def _busy(self) -> RunBusy:
        pid = self.lock.holder()
        if pid == os.getpid():  # another thread of ours, or a callback of this very training
            return RunBusy(f"{self.path} is being trained by this process, in another call")
        return RunBusy(f"{self.path} is being trained by another process (pid {pid or 'unknown'})")

    def _held(self) -> bool:
        """Whether another process holds the writer's lock for longer than a reader's look."""
        deadline = time.monotonic() + LOCK_WAIT
        while self.lock.held():
            if time.monotonic() > deadline:
                return True
            time.sleep(0.02)
        return False

    @contextlib.contextmanager
    def writing(self) -> Iterator[RunFolder]:
        """Hold the writer's lock for the block; RunBusy if another process holds it.

        A reader may hold it for a moment (to repair a killed swap), so a held lock
        is waited on for up to LOCK_WAIT seconds before the writer is refused.
        """
        self.real.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + LOCK_WAIT
        while not self.lock.acquire(stamp=True):
            if time.monotonic() > deadline:
                raise self._busy()
            time.sleep(0.02)
        try:
            self.recover()
            yield self
        finally:
            self.lock.release()

    # --- status --------------------------------------------------------------------------

    def status(self) -> dict:
        """The status record, with a `running` run whose process is gone read as interrupted.

        So is a run that holds nothing but its config.json: its process stopped (a kill,
        a full disk) before it could record any status.
        """
        record = files.read_status(self.real)
        if record["status"] in ("running", "unknown") and not self._trainer_alive(record):
            record = files.read_status(self.real)  # it may have just finished
            if record["status"] == "running":
                hint = (
                    f"; {RESUME_HINT}"
                    if arrays.has_checkpoint(self.real)
                    else "; no epoch was completed"
                )
                record = {**record, "status": "interrupted"}
                record["message"] = f"the training process is gone{hint}"
            elif record["status"] == "unknown" and files.config_only(self.real):
                record = {
                    **record,
                    "status": "interrupted",
                    "message": "the training process stopped before it recorded a status; "
                    "no epoch was completed",
                }
        return record

    def _trainer_alive(self, record: dict) -> bool:
        """Whether the process that wrote `record` may still be training.

        Another process holding the lock is one. Under this folder's own lock (a
        writer deciding whether to replace a dead run) only a record this very
        process wrote is alive: the lock's holder is us, not the record's writer.
        """
        if self.lock.held_here:
            return record.get("pid") == os.getpid()
        return self.lock.held()

    def warning(self, checkpoint: bool = False, model: bool = True) -> str | None:
        """A one-line warning when the run is not complete, else None.

        With `checkpoint` (evaluate), it says which epoch's checkpoint stands in for the
        missing model.keras; with `model` (predict, export: they use model.keras), that a
        model.keras left by an earlier training predates the resumed one's checkpoint.
        """
        record = self.status()
        if record["status"] == "complete":
            return None
        lines = record.get("message", "").strip().splitlines()  # an error's may run on
        if record["status"] == "unknown" and not lines:  # status.json missing or damaged
            lines = [f"{files.STATUS} is missing or damaged, so it may be unfinished"]
        detail = f": {lines[0]}{' ...' if len(lines) > 1 else ''}" if lines else ""
        epochs, at = (self.checkpoint_epochs() if checkpoint or model else None), ""
        if epochs and checkpoint:
            at = f"; evaluated at its checkpoint, after epoch {epochs}"
        elif epochs and (self.real / files.MODEL).exists() and self._resumed_past(epochs):
            at = f"; its {files.MODEL} predates this training (checkpoint: epoch {epochs})"
        return f"Warning: run {self.path} is {record['status']}{detail}{at}"

    def warn_if_unfinished(self, checkpoint: bool = False, model: bool = True) -> None:
        """`warning` (of the same arguments), if any, given to the library's caller as an
        EchoKerasWarning at its line."""
        if warning := self.warning(checkpoint, model):
            warn(warning)

    def _resumed_past(self, epochs: int) -> bool:
        """Whether a resume set more epochs than the checkpoint's: model.keras predates it."""
        try:
            return epochs < files.load_config(self.real).num_epochs
        except RunFolderError:
            return False

    def checkpoint_epochs(self) -> int | None:
        """The epochs the run's checkpoint completed; None without a readable one."""
        try:
            return self.read(lambda view: arrays.checkpoint_epochs(view, self.path))
        except RunFolderError:
            return None

    def is_run(self) -> bool:
        """Whether the folder holds a run of ours (damaged or not), rather than other files."""
        names = (files.STATUS, files.HISTORY, files.MODEL, files.CHECKPOINT)
        if any((self.real / name).exists() for name in names):
            return True
        return files.is_written_config(self.real)  # a run stopped before its first status

    def restartable(self) -> bool:
        """An unfinished run of ours with nothing worth keeping: it failed or was interrupted
        before completing an epoch, and the folder holds nothing a run does not write then.
        Anything else, other files above all, stays."""
        return self.without_epoch() and not files.not_first_epoch(self.real)

    def yields_to(self, *, overwrite: bool) -> bool:
        """Whether a replacement that completed an epoch, then was interrupted, takes the
        run's place: the run never completed one, and the folder holds nothing of the user's,
        or `overwrite` gave it up."""
        return self.without_epoch() if overwrite else self.restartable()

    def without_epoch(self) -> bool:
        """Whether the folder holds a run of ours that stopped before completing an epoch."""
        if arrays.has_checkpoint(self.real) or (self.real / files.MODEL).exists():
            return False
        if files.read_status(self.real)["status"] not in ("failed", "interrupted", "running"):
            if not files.config_only(self.real):
                return False
        try:
            files.load_config(self.real)
        except RunFolderError:
            return False
        return self.status()["status"] in ("failed", "interrupted")

    # --- starting and finishing a run (with the lock held) --------------------------------

    def replacing_deletes(self, path: Path, *, overwrite: bool, resume: bool) -> bool:
        """Whether training here as asked would delete `path`: it lies in the folder, and the
        folder is replaced whole (an overwrite of the run it holds, or a new run in place of
        an unfinished one: see `begin`)."""
        if resume or not inside(path, self.real) or not holds_run(self.real):
            return False
        return self.is_run() and (overwrite or self.restartable())

    def check(self, *, overwrite: bool = False, resume: bool = False) -> None:
        """Whether training may start as asked: RunBusy, RunExists, RunFolderError, or
        ConfigError (the folder holds the current folder, and would be replaced).

        The CLI calls it before importing TensorFlow; `begin` again under the lock.
        """
        if not self.lock.held_here and self._held():
            raise self._busy()
        if resume and not self.real.is_dir() and not self._leftovers("old"):
            raise RunFolderError(f"run folder {self.path} does not exist")
        if resume and (bad := files.unreplaceable(self.real)):  # refused before training
            raise RunFolderError(f"{self.path / bad.name} is damaged: it is not a regular file")
        occupied = holds_run(self.real) and not files.only_temporaries(self.real)
        if occupied and not resume and not self.is_run():
            raise RunExists(
                f"{self.path} holds files but no run; train into a new or empty folder "
                "(`overwrite=True` replaces only a run folder)"
            )
        if not (resume or overwrite) and occupied and not self.restartable():
            if self.without_epoch():  # and other files: the user's, kept
                shown = listed(files.not_first_epoch(self.real))
                raise RunExists(
                    f"{self.path} holds a run that never completed an epoch and files no run "
                    f"writes ({shown}); move them out to train here again, or pass "
                    "`overwrite=True` to replace the folder, them with it"
                )
            raise RunExists(
                f"{self.path} already holds a run; pass `overwrite=True` to replace it "
                "or `resume=True` to continue it"
            )
        try:
            here = Path.cwd()
        except OSError:  # deleted already: no current folder to keep
            here = None
        if here is not None and self.replacing_deletes(here, overwrite=overwrite, resume=resume):
            raise ConfigError(
                "run_dir",
                f"{self.path} holds the current folder, which replacing its run would delete; "
                "train from outside it",
            )

    def begin(
        self,
        *,
        overwrite: bool = False,
        resume: bool = False,
        notify: Callable[[str], None] | None = None,
    ) -> Path:
        """The folder to train in: the run folder itself, or a new one to swap in at the end.

        Neither `overwrite` nor `resume`: RunExists if the folder holds a run, unless
        that run never completed an epoch: it is replaced, with a notice to `notify`.
        """
        self.check(overwrite=overwrite, resume=resume)
        if resume:
            return self.real
        if not holds_run(self.real) or files.only_temporaries(self.real):
            self.real.mkdir(parents=True, exist_ok=True)
            files.remove_temporaries(self.real)  # of a training killed before its config
            return self.real
        if not overwrite and notify:
            record = self.status()
            notify(
                f"Note: replacing the unfinished run in {self.path} ({record['status']}, "
                "no epoch completed)"
            )
        work = self.real.parent / f".{self.real.name}.new-{os.getpid()}-{secrets.token_hex(3)}"
        os.mkdir(work)
        os.chmod(work, self.real.stat().st_mode & 0o7777)  # the folder keeps its mode
        return work

    def finish(self, work: Path) -> None:
        """Put a completed replacement in place; the old run is deleted only after."""
        if Path(work) == self.real:
            return
        old = self.real.parent / f".{self.real.name}.old-{os.getpid()}-{secrets.token_hex(3)}"
        _rename(self.real, old)
        try:
            _rename(work, self.real)
        except BaseException:
            with contextlib.suppress(OSError):  # put the old run back; else recover() will
                _rename(old, self.real)
            raise
        shutil.rmtree(old, ignore_errors=True)

    def abandon(self, work: Path) -> None:
        """Delete an unfinished replacement: the run in place stays exactly as it was."""
        if Path(work) != self.real:
            shutil.rmtree(work, ignore_errors=True)

    # --- recovery ------------------------------------------------------------------------

    def _leftovers(self, kind: str) -> list[Path]:
        try:
            entries = [
                p
                for p in self.real.parent.iterdir()
                if (match := self._leftover.fullmatch(p.name)) and match.group(1) == kind
            ]
        except OSError:
            return []
        return sorted(entries, key=lambda p: p.stat().st_mtime if p.exists() else 0)

    def recover(self, notify: Callable[[str], None] | None = None) -> None:
        """Undo what a killed swap left behind; needs the lock (or no writer at all).

        If the run folder is missing but a `.NAME.old-*` holds a run, that run is
        put back. Every other leftover belongs to a dead process and is deleted.
        """
        olds = self._leftovers("old")
        if not self.real.exists() and olds:
            _rename(olds.pop(), self.real)
            (notify or tell)(
                f"Note: restored the previous run into {self.path} "
                "(a replacement was stopped in the middle of its swap)"
            )
        for leftover in olds + self._leftovers("new"):
            shutil.rmtree(leftover, ignore_errors=True)

    def recover_if_idle(self, notify: Callable[[str], None] | None = None) -> None:
        """Recover when leftovers exist and no process writes the folder (for readers)."""
        if not (self._leftovers("old") or self._leftovers("new")):
            return
        reader = FileLock(self.lock.path)
        try:
            if not reader.acquire():
                return  # a writer is at work: the leftovers are its own
        except OSError:
            return  # a read-only place: nothing to repair from here
        try:
            self.recover(notify)
        finally:
            reader.release()

    # --- consistent reads ----------------------------------------------------------------

    def read(self, reader: Callable[[Path], T], attempts: int = 5) -> T:
        """`reader(view)` with `view` one fixed version of the folder, whatever swaps meanwhile.

        The folder is opened once; on Linux `view` reaches it through that handle
        (/proc/self/fd), so every file comes from the same folder. If that folder
        is swapped away and deleted mid-read, the read starts again on the new one.
        """
        self.recover_if_idle()
        for attempt in range(attempts):
            try:
                fd = os.open(self.real, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except FileNotFoundError:
                if attempt + 1 < attempts and self._leftovers("old") and self.lock.held():
                    time.sleep(0.05)  # between the two renames of a swap
                    continue
                raise RunFolderError(f"run folder {self.path} does not exist") from None
            except NotADirectoryError:
                raise RunFolderError(f"{self.path} is not a folder") from None
            except OSError as error:
                raise RunFolderError(
                    f"cannot open run folder {self.path}: {error.strerror}"
                ) from None
            try:
                pinned = Path(f"/proc/self/fd/{fd}")
                view = pinned if pinned.is_dir() else self.real
                try:
                    return reader(view)
                except (RunFolderError, OSError):
                    if attempt + 1 == attempts or not self._swapped(fd):
                        raise
            finally:
                os.close(fd)
        raise AssertionError("unreachable")

    def read_config(self):
        """The run's TrainConfig, read as `read` reads: RunFolderError names the file; RunBusy
        says that a training starting in the folder has not written it yet."""
        try:
            return self.read(lambda view: files.load_config(view, self.path))
        except RunFolderError:
            if self.real.is_dir() and not (self.real / files.CONFIG).exists() and self._held():
                busy = self._busy()
                raise RunBusy(f"{busy} and has no {files.CONFIG} yet: wait for it") from None
            raise

    def read_vocabulary(self, config=None):
        """The Vocabulary of a run on its own data, read as `read` reads (RunFolderError
        unless it agrees with `config`, config.json's TrainConfig, if given)."""
        return self.read(lambda view: files.read_vocabulary(view, self.path, config))[0]

    def _swapped(self, fd: int) -> bool:
        try:
            return os.stat(self.real).st_ino != os.fstat(fd).st_ino
        except OSError:
            return True
