"""What the CLI tests share: invoking the app, and checking a one-line error."""

from __future__ import annotations

from typer.testing import CliRunner

from echo_keras.cli.app import app

runner = CliRunner()


def invoke(*args, input=None):
    """Run `echo-keras ARGS` in this process (every argument as text)."""
    return runner.invoke(app, [str(arg) for arg in args], input=input)


def one_line_error(result, *fragments, code: int | None = None):
    """The command failed with exactly one line, `Error: ...`, holding every fragment."""
    if code is not None:
        assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.output
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def error_exit(result, code: int, *fragments):
    """`one_line_error` with the exit status it must have."""
    one_line_error(result, *fragments, code=code)
