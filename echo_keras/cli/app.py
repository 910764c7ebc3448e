"""The `echo-keras` app: registers one module per command, and maps every error to one line.

Command modules never import this one: it imports them and adds their functions (Typer's
one-file-per-command layout). `main`, which the console script (`launch.py`) runs, guards
the standard streams, runs the app, and turns any library error, and any signal, into
`Error: ...` and its exit status (`errors.py` holds the table), wording config fields as
the flags that set them.
"""

from __future__ import annotations

import inspect
import os
import shutil
import sys
import warnings

import typer
from typer.core import TyperGroup

from echo_keras.cli import evaluate, export, plot, predict, stdio, sweep, train
from echo_keras.cli.common import JsonOutput, Resume, fail, notice
from echo_keras.errors import ConfigError, EchoKerasError, EchoKerasWarning, first_line
from echo_keras.options import as_flags, flag
from echo_keras.run.files import package_versions
from echo_keras.run.lock import use_private_tempdir
from echo_keras.signals import SignalCatcher, Signalled, raise_signalled
from echo_keras.signals import release as release_held_signals


def error_line(error: EchoKerasError) -> str:
    """How the command line words a library error (without `Error: `)."""
    if isinstance(error, ConfigError):
        return f"Invalid value for '{flag(error.field)}': {as_flags(error.reason, Resume.command)}"
    return as_flags(str(error), Resume.command)


HELP = {"help_option_names": ["-h", "--help"]}


class _OneLineErrors(TyperGroup):
    """Report every error as one line, `Error: ...`, with its exit status (2 for usage)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        given = sys.argv[1:] if args is None else list(args)
        named = next((word for word in given if not word.startswith("-")), None)
        JsonOutput.wanted = "--json" in given and named in TAKE_JSON  # (plot: no such option)
        JsonOutput.printed = False
        Resume.command = None
        # A signal stops the command where it stands; training, export and the sweep take
        # the signals over while they work, to stop cleanly. Held back while the app loaded
        # (`launch.main`): one that came meanwhile arrives now.
        catcher = SignalCatcher(on_signal=raise_signalled)
        try:
            catcher.install()
            release_held_signals()
            with warnings.catch_warnings():  # the library's notes: each command prints its own
                warnings.simplefilter("ignore", EchoKerasWarning)
                code = super().main(
                    args=args,
                    prog_name=prog_name,
                    complete_var=complete_var,
                    standalone_mode=False,
                    **extra,
                )
            catcher.raise_if_received()  # one whose raise was lost in a finalizer
        except Signalled as stop:
            _fail(f"Interrupted ({stop})", 128 + stop.signum)
        except EchoKerasError as error:
            _fail(error_line(error), error.exit_status)
        except typer.TyperException as error:
            if type(error).__name__ == "NoArgsIsHelpError":  # a bare `echo-keras`: its help
                typer.echo(error.ctx.get_help())
                sys.exit(0)
            _fail(error.format_message(), getattr(error, "exit_code", 1))
        except typer.Abort:
            notice("Aborted.")
            sys.exit(1)
        except BrokenPipeError:  # the reader of our output went away (`| head`): not a bug
            sys.exit(1)
        except Exception as error:  # a bug or an environment problem: still one line
            if os.environ.get("ECHO_KERAS_DEBUG"):
                raise
            _fail(
                f"unexpected {type(error).__name__}: {first_line(error)} "
                "(set ECHO_KERAS_DEBUG=1 to see the traceback)",
                1,
            )
        finally:
            catcher.restore()
        sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int) -> None:
    """One line on stderr (and, under --json, the error object on stdout), then exit."""
    sys.exit(fail(message, code).exit_code)


app = typer.Typer(
    cls=_OneLineErrors,
    help="Train, evaluate, plot, run and export a stateful Keras LSTM on the echo task "
    "or your own sequence (truncated backpropagation through time, state carried across "
    "windows), and sweep how far truncated backprop reaches.",
    no_args_is_help=True,
    add_completion=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings=HELP,
)


def _show_version(asked: bool) -> None:
    if asked:
        typer.echo(f"echo-keras {package_versions('echo-keras')['echo-keras'] or 'unknown'}")
        raise typer.Exit()


@app.callback()
def _group(
    version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Train, evaluate, plot, run and export a stateful Keras LSTM on the echo task."""


# Each command's line in `echo-keras --help`, whole (its docstring's first sentence would be
# cut with "..." to fit the terminal); `echo-keras COMMAND --help` shows the docstring.
COMMANDS = (
    (train.train, "Train a stateful LSTM on the echo task or your own file into a run folder."),
    (evaluate.evaluate, "Evaluate a run on fresh or held-out data, the state carried or reset."),
    (plot.plot, "Draw a run's figure: loss curve and the last batch, or a text run's sample."),
    (predict.predict, "Predict a stream of symbols with batch 1, or generate text."),
    (export.export, "Export a SavedModel with the state as explicit inputs."),
    (sweep.sweep, "Map how far truncated backprop reaches, on Ray."),
)
for command, summary in COMMANDS:
    app.command(context_settings=HELP, short_help=summary)(command)
# The commands that take --json: under it, even their errors are a JSON object on stdout.
TAKE_JSON = {
    command.__name__
    for command, _ in COMMANDS
    if "as_json" in inspect.signature(command).parameters
}


def main() -> None:
    stdio.open_standard_streams()
    scratch = _private_tempdir()
    try:
        app()
        code = 0
    except SystemExit as exit:
        code = exit.code
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    stdio.flush_standard_streams()
    if "tensorflow" in sys.modules:
        # Every file is written and closed by now. TensorFlow's teardown at interpreter
        # exit takes most of a second and does nothing for us: skip it.
        os._exit(code or 0)
    sys.exit(code)


def _private_tempdir() -> str | None:
    """The command's own temporary folder (see `use_private_tempdir`); `main` removes it."""
    global _OWNER
    try:
        folder, _OWNER = use_private_tempdir()
    except OSError:
        return None  # no writable temporary folder: TensorFlow will say so if it needs one
    return str(folder)


_OWNER = None  # the lock of the private temporary folder, held until the process ends
