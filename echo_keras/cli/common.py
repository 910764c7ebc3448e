"""What the command modules share: the run folder option, printing, and usage errors.

Nothing here imports TensorFlow or Ray, so every command's `--help` answers at once.
"""

from __future__ import annotations

import contextlib
import json
import shlex
from pathlib import Path

import typer

from echo_keras.cli import stdio
from echo_keras.errors import one_line, tell
from echo_keras.options import OPTIONS, as_flags
from echo_keras.paths import names_a_folder
from echo_keras.run.folder import RunFolder


def nonempty_path(value: str | Path) -> Path:
    """The parser of the path options (`predict --input`, which also takes `-`, checks
    alike): an empty one is refused, not taken as the current folder (`Path("")` is)."""
    if isinstance(value, Path):
        return value
    if not value.strip():
        raise typer.BadParameter("must not be empty")
    return Path(value)


def file_path(value: str | Path) -> Path:
    """The parser of the options that name a file: `nonempty_path`, and a path ending in /
    refused (it names a folder; `Path` would drop the slash and take the file)."""
    path = nonempty_path(value)
    problem = names_a_folder(value)
    if problem:
        raise typer.BadParameter(problem)
    return path


RUN_DIR = typer.Option(
    Path("runs/echo"), "--run-dir", parser=nonempty_path, metavar="<dir>", help="The run folder."
)
AS_JSON = typer.Option(False, "--json", help="Print one JSON object, nothing else.")
QUIET = typer.Option(
    False, "--quiet", help="Print nothing but errors: no progress bar, notices or summary."
)


def setting(field: str, help: str | None = None, **options):
    """The option that sets config field `field`, from the table of options."""
    option = OPTIONS[field]
    return typer.Option(
        None, option.flag, help=help or option.help_text(), metavar=option.metavar, **options
    )


def given_settings(values: dict) -> dict:
    """The config fields among a command's parameters that were given (not None)."""
    return {name: value for name, value in values.items() if name in OPTIONS and value is not None}


class JsonOutput:
    """Under `--json`, stdout holds exactly one JSON object whatever happens: the command's
    result, or, when it fails before printing one, `{"error": ..., "exit_status": ...}`."""

    wanted = False  # --json was given (set by the app)
    printed = False  # the command printed its object

    @classmethod
    def echo(cls, text: str) -> None:
        """Print the command's JSON object (one line)."""
        cls.printed = True
        typer.echo(text)

    @classmethod
    def error(cls, message: str, code: int) -> None:
        """Print the error object, if the command's own was not printed; never fails."""
        if cls.wanted and not cls.printed:
            cls.printed = True
            with contextlib.suppress(OSError, ValueError):
                typer.echo(json.dumps({"error": message, "exit_status": code}))


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print `Error: message` on stderr (and, under --json, its object on stdout); return
    the Exit to raise. The message is `one_line` in both (`notice` makes it so on stderr)."""
    notice(f"Error: {message}")
    JsonOutput.error(one_line(message), code)
    return typer.Exit(code)


class Resume:
    """The command that resumes what this command works on (its run or sweep), once it
    knows it: the library's `resume=True` is worded as that command (`error_line`)."""

    command: str | None = None

    @staticmethod
    def training(run_dir: Path) -> str:
        return f"echo-keras train --run-dir {shlex.quote(str(run_dir))} --resume"

    @staticmethod
    def sweep(out: Path) -> str:
        return f"echo-keras sweep --out {shlex.quote(str(out))} --resume"


@contextlib.contextmanager
def output_errors(what: str):
    """For a block that writes the command's output (`stdio.stdout_writer`): a reader that
    went away (`| head`) ends the command quietly, with the status of SIGPIPE; any other
    failed write is one line, `cannot write WHAT: reason`, exit 1."""
    try:
        yield
    except BrokenPipeError:
        stdio.quiet_broken_pipe()
        raise typer.Exit(stdio.EXIT_BROKEN_PIPE) from None
    except stdio.OutputError as error:
        raise fail(f"cannot write {what}: {error}") from None
    except OSError as error:  # a line printed (`typer.echo`) to a full disk, say
        stdio.quiet_broken_pipe()  # what stayed in stdout's buffer goes nowhere, quietly
        raise fail(f"cannot write {what}: {error.strerror or error}") from None


@contextlib.contextmanager
def report_of_kept_work():
    """For the lines that report work done and kept (a run trained, a figure or an export
    written, a sweep run): a stdout that cannot take them (closed, a reader gone, a full
    disk) changes nothing, and the exit status still says the work was done."""
    try:
        yield
    except OSError:
        stdio.quiet_broken_pipe()


def notice(message: str) -> None:
    """A line on stderr (errors, notices, warnings); lost, not fatal, if stderr is broken."""
    tell(message)


def warn_if_unfinished(run_dir: Path, checkpoint: bool = False, model: bool = True) -> None:
    """Warn on stderr when the run is not complete (failed, interrupted, still running),
    as `RunFolder.warning` words it."""
    warning = RunFolder(run_dir).warning(checkpoint, model)
    if warning:
        notice(as_flags(warning, Resume.training(run_dir)))


def bad_parameter(flag: str, reason: str) -> typer.BadParameter:
    return typer.BadParameter(reason, param_hint=f"'{flag}'")
