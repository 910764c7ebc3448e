"""`echo-keras predict`: stream symbols through a trained run, printing each line's predictions;
or, for a run on its own data, generate text (`--generate N`).

TensorFlow is imported only inside the command body, so `--help` stays fast.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import sys
from pathlib import Path

import typer

from echo_keras.cli import stdio
from echo_keras.cli.common import (
    AS_JSON,
    RUN_DIR,
    JsonOutput,
    bad_parameter,
    fail,
    file_path,
    notice,
    output_errors,
    warn_if_unfinished,
)
from echo_keras.errors import ConfigError, StateFileError, UsageError
from echo_keras.paths import inside
from echo_keras.run import fileio
from echo_keras.run.folder import RunFolder
from echo_keras.stream.symbols import check_stream
from echo_keras.stream.text import check_text, read_text
from echo_keras.values import check_seed, check_temperature


def predict(
    symbols: str | None = typer.Argument(
        None,
        help="Symbols to predict, e.g. 011010011101 (a run on its own data: its text or "
        "integers).  [default: read --input or stdin]",
        show_default=False,
        metavar="SYMBOLS",
    ),
    run_dir: Path = RUN_DIR,
    input_path: str | None = typer.Option(
        None,
        "--input",
        metavar="<file>",
        help="Read symbols from this file, or - for stdin (the default when stdin is a pipe).",
    ),
    state_in: Path | None = typer.Option(
        None,
        "--state-in",
        parser=file_path,
        metavar="<file>",
        help="Start from the state saved by an earlier --state-out.",
    ),
    state_out: Path | None = typer.Option(
        None,
        "--state-out",
        parser=file_path,
        metavar="<file>",
        help="Save the state after the last symbol (written on success).",
    ),
    probabilities: bool = typer.Option(
        False, "--probabilities", help="Print every symbol's class probabilities."
    ),
    generate: int | None = typer.Option(
        None,
        "--generate",
        metavar="<int>",
        min=0,
        help="Generate N symbols instead (a run on its own data), each printed as it comes "
        "(0: none, say to save the state after --prime with --state-out).",
    ),
    prime: str | None = typer.Option(
        None, "--prime", metavar="<text>", help="With --generate: read this text first."
    ),
    temperature: float | None = typer.Option(
        None,
        "--temperature",
        metavar="<float>",
        help="With --generate: above 0; below 1 sharpens, above 1 flattens.  [default: 1]",
    ),
    seed: int | None = typer.Option(
        None,
        "--seed",
        metavar="<int>",
        help="With --generate: the same seed, the same text.  [default: fresh; --json shows it]",
    ),
    as_json: bool = AS_JSON,
) -> None:
    """Predict the echo of a stream of symbols, carrying the state across lines and calls.

    Symbols are digits (whitespace ignored), or whitespace-separated integers for more
    than ten classes. Each input line gets one output line, printed at once; the
    accuracy of the echo (positions from echo_step on) ends on stderr.

    A run on its own data (train --data) reads its text (every character a symbol,
    newlines too: its output does not follow the lines) or integers, and prints the
    predicted symbols as they come (for the next task, the symbol predicted to follow
    each one). A run trained with --documents leaves blank lines out and starts the
    symbol after one from a zeroed state, as training did. With --generate N it samples
    N symbols, each fed back in, from the state after --state-in and --prime.
    """
    if generate is None:
        for flag, value in (("--prime", prime), ("--temperature", temperature), ("--seed", seed)):
            if value is not None:
                raise UsageError(f"{flag} goes with --generate N")
    else:
        if symbols is not None or input_path is not None:
            raise UsageError(
                "--generate reads no symbols; give the text to start from with --prime"
            )
        if temperature is not None:
            check_temperature(temperature)
        check_seed(seed)
    if symbols is not None and input_path is not None:
        raise UsageError("give the symbols either as an argument or with --input, not both")
    if generate is None and symbols is None and input_path is None and sys.stdin.isatty():
        raise UsageError(
            "no symbols: give them as an argument (echo-keras predict 0110), "
            "with --input FILE, or on stdin (--input -, or a pipe)"
        )
    config = RunFolder(run_dir).read_config()  # a folder that holds no run, first
    if state_out is not None:
        state_out = _state_out_target(state_out, run_dir, input_path)
    if state_in is not None and not state_in.is_file():
        reason = (
            "is a folder"
            if state_in.is_dir()
            else "is not a regular file"
            if state_in.exists() or state_in.is_symlink()
            else "does not exist"
        )
        raise bad_parameter("--state-in", f"{state_in} {reason}")
    vocabulary = _vocabulary(run_dir, config)
    if generate is not None:
        if vocabulary is None:
            raise UsageError(
                "--generate needs a run trained on its own data (train --data); "
                f"{run_dir} is an echo run, which has no vocabulary"
            )
        if config.task != "next":
            raise UsageError("--generate needs a run trained on the next task (train --task next)")
        if probabilities:
            raise UsageError("--probabilities goes with predicting, not --generate")
        # Nothing generated, the state saved: whitespace ending the prime's line waits in
        # the state file, as `predict --state-out` leaves it at the end of its input.
        hold = generate == 0 and state_out is not None
        if prime:
            read_text(prime, vocabulary, "--prime: ", config.documents, hold=hold)  # before TF
        # A fresh seed is drawn here, so that --json can say which one gives this text again.
        seed = secrets.randbelow(2**32) if seed is None else seed
        options = {"prime": prime, "temperature": temperature or 1.0, "seed": seed, "hold": hold}
        _generate(run_dir, (config, vocabulary), generate, options, state_in, state_out, as_json)
        return
    source = _open_source(symbols, input_path, vocabulary is None)
    try:
        _predict(source, run_dir, config, vocabulary, state_in, state_out, probabilities, as_json)
    finally:
        if source is not sys.stdin.buffer:
            source.close()


def _vocabulary(run_dir: Path, config):
    """The run's vocabulary (a run on its own data), or None (the echo series)."""
    if config.data is None:
        return None
    return RunFolder(run_dir).read_vocabulary(config)


def _state_out_target(state_out: Path, run_dir: Path, input_path: str | None) -> Path:
    """Where --state-out is written; refuses what must not be replaced (exit 2)."""
    try:
        target = fileio.output_path(state_out)
    except ValueError as error:
        raise bad_parameter("--state-out", str(error)) from None
    if inside(target, run_dir):
        raise bad_parameter(
            "--state-out", f"{state_out} is inside the run folder; keep state files beside it"
        )
    if input_path not in (None, "-") and Path(input_path).exists():
        if target.resolve() == Path(input_path).resolve():
            raise bad_parameter("--state-out", f"{state_out} is the --input file")
    return target


def _open_source(symbols: str | None, input_path: str | None, line: bool = True):
    """A binary reader of the symbols: the argument (a line of it, unless its text is
    symbols to the last character, newlines too), a file, or stdin."""
    if symbols is not None:
        return io.BytesIO(os.fsencode(symbols) + (b"\n" if line else b""))
    if input_path is None or input_path == "-":
        return sys.stdin.buffer
    if not input_path.strip():
        raise bad_parameter("--input", "must not be empty")
    path = Path(input_path)
    if path.is_dir():
        raise bad_parameter("--input", f"{path} is a folder, not a file")
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise bad_parameter("--input", f"{path} does not exist") from None
    except OSError as error:
        raise bad_parameter("--input", f"{path} cannot be read ({error.strerror})") from None


def _check_input(source, config, vocabulary, line=None, hold=False) -> None:
    """A file: every symbol checked before any prediction is printed (a pipe is not), read
    as `predict_stream` will read it (`line`, `hold`)."""
    if not source.seekable():
        return
    start = source.tell()  # a redirected stdin may have been read in part already
    try:
        if vocabulary is None:
            check_stream(_read_function(source), config.num_classes)
        else:
            check_text(_read_function(source), vocabulary, config.documents, line, hold)
    except OSError as error:
        raise fail(f"cannot read the input: {error}") from None
    source.seek(start)


def _read_function(source):
    """read(n): up to n bytes, as soon as some are there (a pipe answers line by line)."""
    return getattr(source, "read1", source.read)


def _predict(
    source, run_dir, config, vocabulary, state_in, state_out, probabilities, as_json
) -> None:
    # Documents read on from a state file are read from where it left their line: known
    # once the state file is read, after the model. Any other input is checked first.
    later = config.documents and state_in is not None
    hold = state_out is not None  # the stream goes on in another call
    if not later:
        _check_input(source, config, vocabulary, hold=hold)
    from echo_keras.stream.model import load_stream_model, predict_stream
    from echo_keras.stream.state import write_state

    model = load_stream_model(run_dir, read_with=(config, vocabulary))
    state, line = _start_state(model, state_in, state_out)
    if later:
        _check_input(source, config, vocabulary, line, hold)
    if not as_json:
        warn_if_unfinished(run_dir)
    write = stdio.stdout_writer()

    with output_errors("the predictions"):
        try:
            result = predict_stream(
                model,
                _read_function(source),
                None if as_json else write,
                state,
                probabilities=probabilities,
                collect=as_json,
                line=line,
                hold=hold,
            )
        except (BrokenPipeError, stdio.OutputError):
            raise  # the output's: output_errors words them
        except OSError as error:
            raise fail(f"cannot read the input: {error}") from None
        if as_json:
            text = _json_text(result, probabilities, model.vocabulary)
            _print_json_then_save(write, text, state_out, model, result.state, result.line)
    if state_out is not None and not as_json:
        write_state(state_out, model, result.state, result.line)
    if not as_json:
        # The predictions and the state are written: a stderr that cannot take this
        # line (a full disk, a closed pipe) loses it and no more.
        notice(_accuracy_line(result, config))


def _generate(run_dir, read, length, options, state_in, state_out, as_json) -> None:
    """Sample `length` symbols, printing each as it comes; then save the state. `read`:
    the (config, vocabulary) the options were checked with."""
    from echo_keras.stream.documents import line_after
    from echo_keras.stream.generate import sample
    from echo_keras.stream.model import load_stream_model
    from echo_keras.stream.state import write_state

    model = load_stream_model(run_dir, read_with=read)
    state, line = _start_state(model, state_in, state_out)
    if not as_json:
        warn_if_unfinished(run_dir)
    write = stdio.stdout_writer()
    with output_errors("the text"):
        text, state = sample(
            model,
            model.config,
            model.vocabulary,
            length,
            state=state,
            line=line,
            write=None if as_json else lambda piece: write(piece.encode("utf-8")),
            **options,
        )
        documents = model.config.documents  # the stream's line, after all it read
        saved = documents and state_out is not None
        read = (options["prime"] or "", text)
        after = line_after(line, *read, hold=options["hold"]) if saved else None
        if as_json:
            printed = json.dumps({"text": text, "seed": options["seed"]})
            _print_json_then_save(write, printed, state_out, model, state, after)
        elif text and not text.endswith("\n"):
            write(b"\n")
    if state_out is not None and not as_json:
        write_state(state_out, model, state, after)


def _print_json_then_save(write, text: str, state_out, model, state, line) -> None:
    """Under --json: the state file written beside its place first (a full disk is then
    the error object, not a result printed for a state never saved), then the object
    printed whole, then the state file put in place (the output came first: a state saved
    for output nobody read would move the stream on for nothing)."""
    from echo_keras.stream.state import commit_state, stage_state

    staged = None if state_out is None else stage_state(state_out, model, state, line)
    try:
        JsonOutput.printed = True
        write(text.encode() + b"\n")
    except BaseException:
        if staged is not None:
            staged.discard()
        raise
    if staged is not None:
        commit_state(staged)


def _start_state(model, state_in, state_out) -> tuple[list, tuple | None]:
    """(state, line) to start from: zeros, or --state-in's (with, for a run on documents,
    where it left the stream in its line); refuses a --state-out that is a file but not a
    state file of this run."""
    from echo_keras.stream.state import read_state_and_line, state_target

    state, line = model.zero_state(), None
    if state_in is not None:
        try:
            state, line = read_state_and_line(state_in, model)
        except StateFileError as error:
            if error.damaged:
                raise
            raise bad_parameter("--state-in", str(error)) from None
    if state_out is not None:
        try:
            state_target(state_out, model)
        except ConfigError as error:
            raise bad_parameter("--state-out", error.reason) from None
    return state, line


def _accuracy_line(result, config) -> str:
    if config.task == "next":
        if result.accuracy is None and result.symbols == 0:  # blank lines that end a document
            return "Accuracy: n/a (no symbols: blank lines alone)"
        if result.accuracy is None:
            return f"Accuracy: n/a ({result.symbols} symbol; nothing follows it)"
        return (
            f"Accuracy {result.accuracy:.4f} over {result.scored} position"
            f"{'s' * (result.scored != 1)} (the next symbol of this input)"
        )
    echo_step = config.echo_step
    if result.accuracy is None:
        return (
            f"Accuracy: n/a ({result.symbols} symbol{'s' * (result.symbols != 1)}; the echo "
            f"starts at position {echo_step})"
        )
    return (
        f"Accuracy {result.accuracy:.4f} over {result.scored} position"
        f"{'s' * (result.scored != 1)} (the echo of this input's symbols, from position "
        f"{echo_step} on)"
    )


def _json_text(result, probabilities: bool, vocabulary=None) -> str:
    payload = {
        "predictions": result.collected["predictions"].tolist(),
        "symbols": result.collected["symbols"].tolist(),
        "accuracy": result.accuracy,
    }
    if vocabulary is not None:  # the ids above, through the vocabulary
        payload["predicted_text"] = vocabulary.decode(result.collected["predictions"])
    if probabilities:
        payload["probabilities"] = result.collected["probabilities"].tolist()
    return json.dumps(payload)
