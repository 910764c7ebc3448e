"""The command line as a whole: the help of every command, what start-up imports (no TensorFlow
or Ray for help and plot), one-line errors, and closed or broken standard streams. Each
command's own behaviour is tested with its feature (test_train.py, test_predict.py, ...)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import typer

from echo_keras.run import files
from tests.helpers import (
    ECHO_KERAS,
    REAL_ECHO_KERAS,
    TINY_FLAGS,
    SignalInFinalizer,
    full_device,
    invoke,
    one_line_error,
    signal_mask,
)

# --- help ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command, shows",
    [
        ([], "train"),
        (["train"], "--run-dir"),
        (["evaluate"], "--run-dir"),
        (["plot"], "--run-dir"),
        (["predict"], "--state-in"),
        (["export"], "--out"),
        (["sweep"], "--out"),
    ],
    ids=lambda value: " ".join(value) or "echo-keras" if isinstance(value, list) else value,
)
def test_help(command, shows):
    result = invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and shows in result.output


def test_python_dash_m_runs_the_tool():
    out = subprocess.run([*ECHO_KERAS, "--help"], capture_output=True, text=True, check=True)
    assert "train" in out.stdout and "evaluate" in out.stdout and "plot" in out.stdout


# --- what start-up imports -----------------------------------------------------------------


def modules_after(*commands: list[str]) -> list[str]:
    """Whether TensorFlow, Keras and Ray are imported after running `commands` in a fresh
    process (each must succeed): three words, True or False."""
    code = (
        "import sys; from typer.testing import CliRunner; from echo_keras.cli.app import app\n"
        f"for args in {list(commands)!r}:\n"
        "    r = CliRunner().invoke(app, args); assert r.exit_code == 0, r.output\n"
        "print(*(m in sys.modules for m in ('tensorflow', 'keras', 'ray')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_help_does_not_import_tensorflow():
    assert modules_after(["train", "--help"])[:2] == ["False", "False"]


def test_help_of_predict_and_export_imports_neither_tensorflow_nor_ray():
    assert modules_after(["predict", "--help"], ["export", "--help"]) == ["False"] * 3


def test_sweep_help_imports_neither_tensorflow_nor_ray():
    assert modules_after(["sweep", "--help"]) == ["False", "False", "False"]


def test_plot_does_not_import_tensorflow(tiny_run, tmp_path):
    plot = ["plot", "--run-dir", str(tiny_run), "--out", str(tmp_path / "p.png")]
    assert modules_after(plot)[:2] == ["False", "False"]


def test_train_help_and_plot_do_not_import_ray(run_copy):
    commands = (["train", "--help"], ["plot", "--run-dir", str(run_copy)], ["--help"])
    assert modules_after(*commands)[2] == "False"


# --- one-line errors -----------------------------------------------------------------------


@pytest.mark.parametrize("command", ["train", "evaluate", "plot"])
def test_an_empty_run_dir_is_refused(command):
    result = invoke(command, "--run-dir", "")
    one_line_error(result, "--run-dir", "must not be empty", code=2)


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--tensorboard"],
        ["train", "--data"],
        ["train", "--data", "x.txt", "--validation"],
        ["evaluate", "--data"],
        ["plot", "--out"],
        ["predict", "01", "--state-out"],
        ["predict", "01", "--state-in"],
        ["predict", "--input"],
        ["export", "--out"],
        ["sweep", "--out"],
    ],
)
def test_an_empty_path_is_refused_not_taken_as_the_current_folder(args, tiny_run, tmp_path):
    """`Path("")` is the current folder: TensorBoard's logs went there, and a sweep took it
    for its folder."""
    run_dir = (
        []
        if args[0] == "sweep"
        else ["--run-dir", tiny_run if args[0] != "train" else tmp_path / "new"]
    )
    result = invoke(*args[:1], *run_dir, *args[1:], "")
    one_line_error(result, f"'{args[-1]}'", "must not be empty", code=2)
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["plot", "--out", "plot.png/"],
        ["predict", "01", "--state-out", "state.npz/"],
        ["predict", "01", "--state-in", "state.npz/"],
        ["evaluate", "--data", "corpus.txt/"],
        ["train", "--data", "corpus.txt/"],
        ["train", "--data", "corpus.txt", "--validation", "corpus.txt/"],
    ],
)
def test_a_file_named_with_a_trailing_slash_is_refused(args, tiny_run, tmp_path):
    """`Path` drops the slash: the state went to state.npz, the figure to plot.png."""
    for name in ("corpus.txt", "state.npz", "plot.png"):
        (tmp_path / name).write_text("abc abc\n")
    named = [
        f"{tmp_path}/{arg}" if arg.endswith((".txt", ".npz", ".png", "/")) else arg for arg in args
    ]
    run_dir = tmp_path / "new" if args[0] == "train" else tiny_run
    result = invoke(*named[:1], "--run-dir", run_dir, *named[1:])
    one_line_error(result, f"{tmp_path / args[-1]}", "ends in /, so it names a folder", code=2)
    assert not (tmp_path / "new").exists()
    assert all((tmp_path / name).read_text() == "abc abc\n" for name in ("state.npz", "plot.png"))


def test_an_output_under_a_file_says_the_file_is_in_the_way(tiny_run, tmp_path):
    (tmp_path / "f").touch()
    for args in (
        ["plot", "--out", tmp_path / "f" / "x.png"],
        ["export", "--out", tmp_path / "f" / "e"],
        ["predict", "01", "--state-out", tmp_path / "f" / "s.npz"],
    ):
        result = invoke(args[0], "--run-dir", tiny_run, *args[1:])
        one_line_error(result, f"{tmp_path / 'f'} is a file, not a folder", code=2)


# --- signals before a command's work ------------------------------------------------------


def _started(argv, phase: str):
    """`argv` started, and waited for until it is in `phase`: "held" (the console script
    holds the signals back while the app loads) or "caught" (the app's handler has them)."""
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    term = 1 << (signal.SIGTERM - 1)
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"never {phase}"
        with contextlib.suppress(OSError):
            blocked = signal_mask(process.pid, "SigBlk")
            caught = signal_mask(process.pid, "SigCgt")
            if (phase == "held" and blocked & term) or (
                phase == "caught" and caught & term and not blocked & term
            ):
                return process
        time.sleep(0.001)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
@pytest.mark.parametrize("phase", ["held", "caught"])
def test_a_signal_while_a_command_starts_is_one_line_and_its_exit_status(phase, tiny_run):
    """While the app loads (the signal waits for it), and once it runs (TensorFlow then
    loads): one line, 128 + signal, and under --json its object; it was a traceback, or a
    silent death."""
    for signum, command in ((signal.SIGTERM, ["evaluate"]), (signal.SIGINT, ["predict", "01"])):
        argv = [*REAL_ECHO_KERAS, *command, "--run-dir", str(tiny_run), "--json"]
        process = _started(argv, phase)
        process.send_signal(signum)
        out, err = process.communicate(timeout=60)
        name = signal.Signals(signum).name
        assert process.returncode == 128 + signum, err
        assert err.strip() == f"Error: Interrupted ({name})", err
        assert json.loads(out) == {"error": f"Interrupted ({name})", "exit_status": 128 + signum}


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_a_signal_before_training_starts_writes_no_run(tmp_path):
    run_dir = tmp_path / "run"
    argv = [*REAL_ECHO_KERAS, "train", "--run-dir", str(run_dir), *TINY_FLAGS]
    process = _started(argv, "caught")
    process.send_signal(signal.SIGTERM)  # TensorFlow has yet to load
    _, err = process.communicate(timeout=60)
    assert (process.returncode, err.strip()) == (143, "Error: Interrupted (SIGTERM)")
    assert not run_dir.exists()


def test_a_signal_whose_raise_a_finalizer_swallowed_is_raised_after_and_not_printed(
    monkeypatch,
):
    """Python runs a signal handler wherever the main thread is, a `__del__` too, and prints a
    raise there as "Exception ignored" with a traceback. A catcher that raises keeps such a
    `Signalled` off stderr and raises it again at `raise_if_received`; other unraisable
    errors are printed as ever, and the hook goes back when the catcher does."""
    from echo_keras.signals import SignalCatcher, Signalled, raise_signalled

    class Broken:
        def __del__(self):
            raise ValueError("a finalizer's own error")

    printed = []
    hook = lambda unraisable: printed.append(type(unraisable.exc_value).__name__)  # noqa: E731
    monkeypatch.setattr(sys, "unraisablehook", hook)
    with SignalCatcher((signal.SIGTERM,), on_signal=raise_signalled) as catcher:
        SignalInFinalizer(signal.SIGTERM)  # dropped at once: its __del__ runs now
        Broken()
        with pytest.raises(Signalled, match="SIGTERM"):
            catcher.raise_if_received()
    assert printed == ["ValueError"]
    assert sys.unraisablehook is hook


# --- closed or broken standard streams -----------------------------------------------------


def test_a_name_too_long_for_the_file_system_is_a_usage_error(tiny_run, tmp_path):
    long = tmp_path / ("x" * 300)
    commands = [
        ("train", "--run-dir", long, *TINY_FLAGS),
        ("export", "--run-dir", tiny_run, "--out", long),
        ("plot", "--run-dir", tiny_run, "--out", f"{long}.png"),
        ("predict", "0110", "--run-dir", tiny_run, "--state-out", long),
    ]
    for command in commands:
        one_line_error(invoke(*command), "too long", code=2)
    assert list(tmp_path.iterdir()) == []


def _train_with(tmp_path, **popen):
    run_dir = tmp_path / "run"
    argv = [*ECHO_KERAS, "train", "--run-dir", str(run_dir)]
    process = subprocess.Popen([*argv, *TINY_FLAGS[:-1], "--json"], **popen)
    process.wait(timeout=300)
    return process.returncode, run_dir


@pytest.mark.parametrize("closed", [1, 2])
def test_a_closed_stdout_or_stderr_gives_no_traceback(tmp_path, closed):
    other = tmp_path / "other-stream.txt"  # the stream left open
    with open(other, "w") as stream:
        code, run_dir = _train_with(
            tmp_path,
            stderr=stream if closed == 1 else None,
            stdout=stream if closed == 2 else None,
            preexec_fn=lambda: os.close(closed),
        )
    assert code == 0
    text = other.read_text()
    assert "Traceback" not in text
    if closed == 2:
        assert json.loads(text)["epochs"] == 2  # stdout still holds its JSON, alone
    assert files.read_status(run_dir)["status"] == "complete"
    assert json.loads((run_dir / files.CONFIG).read_text())["seed"] == 0  # no stray output


def test_no_writable_temporary_folder_is_named_in_one_line(tiny_run, tmp_path):
    """A process that can write no file (as on a full disk) meets it first where TensorFlow's
    import asks for a temporary folder: named as such, not as an unexpected error."""
    import resource

    def no_file_may_grow():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write fails instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))

    done = subprocess.run(
        [*REAL_ECHO_KERAS, "predict", "--run-dir", str(tiny_run), "0110"],
        capture_output=True, text=True, preexec_fn=no_file_may_grow, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1 and done.stdout == "", done.stderr
    assert done.stderr.startswith("Error: no temporary folder can take a file ("), done.stderr
    assert len(done.stderr.splitlines()) == 1


def test_evaluate_with_a_closed_stdout_says_so_and_exits_1(tiny_run, tmp_path):
    """Its metrics are all it makes: exit 0 would report a result nobody can see."""
    err = tmp_path / "stderr.txt"
    with open(err, "w") as stderr:
        done = subprocess.run(
            [*ECHO_KERAS, "evaluate", "--run-dir", str(tiny_run)],
            stderr=stderr,
            preexec_fn=lambda: os.close(1),
            timeout=300,
        )
    assert done.returncode == 1
    assert err.read_text() == "Error: cannot print the evaluation: stdout is closed\n"
    with open(err, "w") as stderr:  # a bad flag is named first, as with any stdout
        done = subprocess.run(
            [*ECHO_KERAS, "evaluate", "--run-dir", str(tiny_run), "--series-length", "-5"],
            stderr=stderr,
            preexec_fn=lambda: os.close(1),
            timeout=300,
        )
    assert done.returncode == 2 and "--series-length" in err.read_text()


def test_a_broken_stdout_pipe_keeps_the_run_and_exits_0(tmp_path):
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will read: every write gets EPIPE
    err = tmp_path / "stderr.txt"
    with open(err, "w") as stderr:
        code, run_dir = _train_with(tmp_path, stdout=write_end, stderr=stderr)
    os.close(write_end)
    assert code == 0
    assert "Traceback" not in err.read_text()
    assert files.read_status(run_dir)["status"] == "complete"


def test_a_report_of_work_kept_that_cannot_be_printed_changes_no_exit_status(tiny_run, tmp_path):
    """plot and export have written what they make; evaluate's output is its work: a reader
    gone ends it as SIGPIPE would (141), quietly, and a full disk is its one-line error."""
    full = full_device(tmp_path)
    read_end, broken = os.pipe()
    os.close(read_end)  # nobody will read: every write gets EPIPE
    commands = {
        "plot": ["plot", "--out", tmp_path / "fig{}.png"],
        "export": ["export", "--out", tmp_path / "export{}"],
        "evaluate": ["evaluate"],
    }
    with open(full, "wb") as disk:
        for name, argv in commands.items():
            for turn, stdout in enumerate((broken, disk)):
                argv_ = [str(a).format(turn) for a in argv] + ["--run-dir", str(tiny_run)]
                done = subprocess.run(
                    [*ECHO_KERAS, *argv_], stdout=stdout, stderr=subprocess.PIPE, text=True,
                    timeout=300,
                )  # fmt: skip
                if name != "evaluate":
                    assert (done.returncode, done.stderr) == (0, ""), (name, turn)
                elif turn == 0:
                    assert (done.returncode, done.stderr) == (141, "")
                else:
                    assert done.returncode == 1, done.stderr
                    assert done.stderr == (
                        "Error: cannot write the evaluation: No space left on device\n"
                    )
    os.close(broken)
    assert (tmp_path / "fig0.png").stat().st_size and (tmp_path / "fig1.png").stat().st_size
    assert (tmp_path / "export0" / "saved_model.pb").exists()
    assert (tmp_path / "export1" / "saved_model.pb").exists()


def test_a_sweeps_summary_that_cannot_be_printed_leaves_its_exit_status(monkeypatch, capsys):
    from echo_keras.cli import sweep as sweep_command

    read_end, write_end = os.pipe()
    os.close(read_end)
    broken = open(write_end, "w")  # noqa: SIM115  (closed below)
    monkeypatch.setattr(sys, "stdout", broken)
    done = dict(points=4, ran=4, skipped=0, ok=4, failed=0, seconds=1.0, cpus=2.0, out="s")
    sweep_command._report(types.SimpleNamespace(**done, failures=[]), False, False)  # no raise
    failed = {**done, "ok": 3, "failed": 1, "failures": ["echo1-...: boom"], "out": "a b;c"}
    with pytest.raises(typer.Exit) as stopped:
        sweep_command._report(types.SimpleNamespace(**failed), False, False)
    assert stopped.value.exit_code == 1
    monkeypatch.undo()
    with contextlib.suppress(OSError):
        broken.close()
    # The command that reruns the failed points is quoted for the shell.
    assert "rerun them with: echo-keras sweep --out 'a b;c' --resume" in capsys.readouterr().err


def test_a_sweep_whose_stderr_is_broken_still_sweeps(tmp_path):
    """Its notices are lost, not fatal (it stopped before its first point, exit 1)."""
    script = (
        "import sys, types\n"
        "from echo_keras.sweep import runner\n"
        "def fake(spec, out, on_row=None, **options):\n"
        "    on_row(None, 0, 2)  # Ray is up: the notice 'Sweeping 2 points ...'\n"
        "    return types.SimpleNamespace(out=str(out), points=2, ran=2, skipped=0, ok=2,\n"
        "        failed=0, seconds=1.0, cpus=1.0, failures=[])\n"
        "runner.run_sweep = fake\n"
        "from echo_keras.cli.launch import main\n"
        "sys.argv = ['echo-keras', 'sweep', '--out', sys.argv[1], '--echo-step', '1,2']\n"
        "main()\n"
    )
    read_end, broken = os.pipe()
    os.close(read_end)
    with open(full_device(tmp_path), "w") as full:
        for stderr in (broken, full):  # a reader gone, a full disk
            done = subprocess.run(
                [sys.executable, "-c", script, str(tmp_path / "out")], stdout=subprocess.PIPE,
                stderr=stderr, text=True, timeout=120,
            )  # fmt: skip
            assert done.returncode == 0
            assert done.stdout.startswith("Swept 2 points (2 ok, 0 failed)")
    os.close(broken)


def test_commands_leave_nothing_in_the_temporary_folder(tmp_path):
    """TensorFlow's AutoGraph writes `__autograph_generated_file*.py` files there, several per
    command, and removes them only at an interpreter exit that the command skips."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    # What a command killed with SIGKILL left: its folder, whose owner's lock nobody holds.
    dead = scratch / "echo-keras-tmp-dead"
    dead.mkdir()
    (dead / "echo-keras-owner.lock").write_text("12345\n")
    (dead / "__autograph_generated_filexyz.py").write_text("")
    env = {**os.environ, "TMPDIR": str(scratch)}
    run = tmp_path / "run"
    for argv, text in (
        (["train", "--run-dir", run, *TINY_FLAGS], None),
        (["predict", "--run-dir", run], "0110 1\n"),
    ):
        done = subprocess.run(
            [*ECHO_KERAS, *map(str, argv)], env=env, input=text, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in scratch.iterdir()) == []


def test_the_cli_conventions_version_short_help_completion_and_a_bare_call():
    from importlib.metadata import version

    bare = invoke()
    assert bare.exit_code == 0 and "Error" not in bare.output
    assert bare.stdout.startswith("Usage: ") and "Commands:" in bare.stdout
    shown = invoke("--version")
    assert shown.exit_code == 0 and shown.stdout == f"echo-keras {version('echo-keras')}\n"
    assert invoke("-h").stdout == invoke("--help").stdout
    assert "--install-completion" in invoke("-h").stdout
    commands = bare.stdout.split("Commands:")[1]
    assert "..." not in commands and "…" not in commands  # whole command lines
    for command in ("train", "evaluate", "plot", "predict", "export", "sweep"):
        short = invoke(command, "-h")
        first = short.stdout.splitlines()[0]
        assert short.exit_code == 0 and f" {command} [OPTIONS]" in first, first


@pytest.mark.parametrize(
    "argv, code",
    [
        (["train", "--window", "0"], 2),
        (["evaluate", "--run-dir", "{missing}"], 1),
        (["sweep", "--workers", "0"], 2),
        (["predict", "--run-dir", "{missing}", "01"], 1),
    ],
)
def test_under_json_a_failure_is_one_json_object_on_stdout(tmp_path, argv, code):
    argv = [arg.format(missing=tmp_path / "none") for arg in argv]
    result = invoke(*argv, "--json")
    assert result.exit_code == code, result.output
    assert json.loads(result.stdout) == {
        "error": result.stderr.strip().removeprefix("Error: "),
        "exit_status": code,
    }


def test_a_command_that_takes_no_json_answers_json_with_its_usage_error_alone(tmp_path):
    for command in ("plot", "export"):
        result = invoke(command, "--run-dir", tmp_path, "--json")
        one_line_error(result, "No such option: --json", code=2)
        assert result.stdout == ""


def test_every_placeholder_in_help_has_one_style():
    import re

    for command in ("train", "evaluate", "plot", "predict", "export", "sweep"):
        shown = invoke(command, "--help").stdout
        options = [line for line in shown.splitlines() if line.strip().startswith("--")]
        for line in options:
            words = line.split()
            if len(words) > 1 and words[1][0] == "<":  # an option that takes a value
                assert re.fullmatch(r"<[a-z]+>", words[1]), (command, line)
            elif len(words) > 1:  # a flag: what follows is its help
                assert words[1] not in ("FILE", "DIR", "PATH", "F", "R"), (command, line)


def test_every_line_on_stderr_is_one_line_whatever_a_path_holds(capsys):
    from echo_keras.errors import one_line, tell

    tell("Note: replacing the unfinished run in a\nb\x1b[2J\u2028c\td")
    assert (
        capsys.readouterr().err
        == "Note: replacing the unfinished run in a\\nb\\x1b[2J\\u2028c\td\n"
    )
    assert one_line("é 日本") == "é 日本"
