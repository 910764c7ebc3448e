"""The configuration: TrainConfig's validation in the library's terms, worded as flags by the
table of options (the table itself: test_layout.py), the optimizers' default learning rates,
and the bad values and impossible sizes the command line refuses up front, before TensorFlow
and before anything is written."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from echo_keras.config import DEFAULT_LEARNING_RATES, OPTIMIZERS, TrainConfig
from echo_keras.errors import ConfigError, UsageError
from echo_keras.options import flag as flag_of
from echo_keras.run import files
from echo_keras.sweep.grid import make_spec
from tests.helpers import invoke, one_line_error

# --- TrainConfig, its fields worded as flags --------------------------------------------------


@pytest.mark.parametrize(
    "field, value, flag",
    [
        ("num_epochs", 0, "--epochs"),
        ("batch_size", -1, "--batch-size"),
        ("truncated_backprop_length", 0, "--window"),
        ("state_size", 0, "--state-size"),
        ("total_series_length", 0, "--series-length"),
        ("num_classes", 1, "--num-classes"),
        ("echo_step", -1, "--echo-step"),
        ("echo_step", 50000, "--echo-step"),
        ("learning_rate", 0.0, "--learning-rate"),
        ("learning_rate", float("inf"), "--learning-rate"),
        ("learning_rate", float("nan"), "--learning-rate"),
        ("total_series_length", 74, "--series-length"),  # < batch 5 x window 15
    ],
)
def test_config_validation_names_the_flag(field, value, flag):
    with pytest.raises(ConfigError) as error:
        TrainConfig(**{field: value}).validate()
    assert flag_of(error.value.field) == flag


@pytest.mark.parametrize(
    "field, value",
    [
        ("batch_size", 0),
        ("truncated_backprop_length", -3),
        ("total_series_length", "5000"),
        ("batch_size", True),
        ("truncated_backprop_length", 1.5),
    ],
)
def test_the_windows_of_a_config_that_cannot_work_name_its_setting(field, value):
    """num_batches and used_length divide by the window and the batch: a setting that
    cannot work is a ConfigError naming it, as validate() words it, not Python's own error."""
    config = TrainConfig(**{field: value})
    for derived in ("num_batches", "used_length"):
        with pytest.raises(ConfigError) as error:
            getattr(config, derived)
        assert error.value.field == field
    assert TrainConfig(batch_size=4, truncated_backprop_length=5).num_batches == 2500


def test_the_windows_of_a_config_take_any_integer_and_check_a_data_runs_too(tmp_path):
    import enum

    class Size(enum.IntEnum):  # an int as validate() takes it
        FIVE = 5

    assert TrainConfig(batch_size=Size.FIVE).num_batches == 666
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("some text\n")
    data_run = TrainConfig(data=str(corpus), data_windows=7, batch_size=4, state_size=8)
    assert data_run.used_length == 7 * 4 * 15
    with pytest.raises(ConfigError) as error:
        _ = dataclasses.replace(data_run, truncated_backprop_length=0).used_length
    assert error.value.field == "truncated_backprop_length"


def test_optimizers_get_their_own_default_learning_rate(tmp_path):
    result = invoke(
        "train",
        "--run-dir",
        tmp_path / "r",
        "--optimizer",
        "adam",
        "--series-length",
        "750",
        "--epochs",
        1,
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    assert files.load_config(tmp_path / "r").learning_rate == 0.01
    # The library alike: an optimizer without a rate takes its own, not adagrad's 0.3.
    assert [TrainConfig(optimizer=name).learning_rate for name in OPTIMIZERS] == [
        DEFAULT_LEARNING_RATES[name] for name in OPTIMIZERS
    ]
    assert TrainConfig().learning_rate == 0.3  # the tutorial's, with its adagrad
    assert TrainConfig(optimizer="adam", learning_rate=0.3).learning_rate == 0.3
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    with pytest.raises(ConfigError, match="learning_rate: must be a number, got None"):
        TrainConfig.from_dict({**saved, "learning_rate": None})  # a file says its own rate
    for not_a_mapping in (None, [("num_epochs", 2)], "config.json"):
        with pytest.raises(UsageError, match="a config must be a mapping of fields, got"):
            TrainConfig.from_dict(not_a_mapping)
    with pytest.raises(ConfigError, match="optimizer: must be one of"):
        TrainConfig(optimizer=["adam"]).validate()  # not a TypeError at construction
    replaced = dataclasses.replace(TrainConfig(), optimizer="adam", learning_rate=None)
    assert replaced.learning_rate == 0.01
    spec = make_spec({}, None, {"optimizer": "sgd"})
    assert spec.settings["learning_rate"] == 0.5  # a sweep records the rate it uses
    with pytest.raises(UsageError, match="learning_rate must be a number, got None"):
        make_spec(
            {},
            None,
            {},
            dataclasses.replace(spec, settings={**spec.settings, "learning_rate": None}),
        )


# --- bad values on the command line: one line, exit 2, nothing written ---------------------


@pytest.mark.parametrize(
    "args, flag",
    [
        (["--epochs", "0"], "--epochs"),
        (["--batch-size", "0"], "--batch-size"),
        (["--window", "-3"], "--window"),
        (["--state-size", "0"], "--state-size"),
        (["--series-length", "0"], "--series-length"),
        (["--num-classes", "1"], "--num-classes"),
        (["--echo-step", "-1"], "--echo-step"),
        (["--echo-step", "50000"], "--echo-step"),
        (["--series-length", "20"], "--series-length"),
        (["--learning-rate", "0"], "--learning-rate"),
        (["--learning-rate", "-1"], "--learning-rate"),
        (["--learning-rate", "nan"], "--learning-rate"),
        (["--learning-rate", "inf"], "--learning-rate"),
        (["--epochs", "five"], "--epochs"),
        (["--learning-rate", "fast"], "--learning-rate"),
        (["--plot-every", "0"], "--plot-every"),
        (["--seed", "-1"], "--seed"),
    ],
)
def test_bad_values_get_one_line_and_exit_2_and_write_nothing(tmp_path, args, flag):
    run_dir = tmp_path / "run"
    result = invoke("train", "--run-dir", run_dir, *args)
    one_line_error(result, flag, code=2)
    assert not run_dir.exists()


@pytest.mark.parametrize(
    "args, flag",
    [
        (["--cell", "lstmm"], "--cell"),
        (["--optimizer", "adadelta"], "--optimizer"),
        (["--layers", "0"], "--layers"),
        (["--dropout", "1.0"], "--dropout"),
        (["--dropout", "-0.1"], "--dropout"),
        (["--dropout", "nan"], "--dropout"),
        (["--tensorboard", "README.md"], "--tensorboard"),
    ],
)
def test_bad_variant_values(tmp_path, args, flag):
    result = invoke("train", "--run-dir", tmp_path / "run", *args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0]
    assert not (tmp_path / "run").exists()


# --- sizes that cannot work, refused before TensorFlow -------------------------------------


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--series-length", str(10**12)], "--series-length 1000000000000 needs about"),
        (["--epochs", str(10**8)], "--epochs 100000000 of 666 batches each need about"),
        (["--state-size", "1000000"], "memory"),
        (["--layers", "1000"], "--layers"),
        (["--learning-rate", "1e-300"], "0 in float32"),
        (["--learning-rate", "1e39"], "inf in float32"),
        (["--seed", str(2**32)], "--seed"),
        (["--num-classes", "70000"], "--num-classes"),
        # Integers past any float, which sizes are estimated in.
        (["--epochs", str(10**400)], "--epochs 1.00e+400"),
        (["--series-length", str(10**400)], "--series-length 1.00e+400"),
        (["--state-size", str(10**400)], "--state-size 1.00e+400"),
        (["--echo-step", str(10**400)], "got 1.00e+400"),
        (["--seed", str(10**400)], "got 1.00e+400"),
        (["--layers", str(10**400)], "got 1.00e+400"),
        (["--batch-size", str(10**400)], "--window = 1.50e+401"),
        (["--epochs", "1e400"], "--epochs"),
    ],
)
def test_configurations_that_cannot_work_are_refused_up_front(tmp_path, flags, fragment):
    result = invoke("train", "--run-dir", tmp_path / "run", *flags)
    assert result.exit_code == 2, result.output
    one_line_error(result, fragment)
    assert list(tmp_path.iterdir()) == []


def test_a_data_runs_model_too_large_is_named_without_a_symbol_count_it_does_not_set():
    """--num-classes cannot go with --data: the message names what the data gives, once
    it is read, and nothing before."""
    from echo_keras.memory import memory_problem

    echo = TrainConfig(state_size=10**6)
    assert "`num_classes` 2, " in memory_problem(echo)
    unread = TrainConfig(data="/x.txt", state_size=10**6)
    assert "num_classes" not in memory_problem(unread) and "symbols" not in memory_problem(unread)
    read = dataclasses.replace(unread, num_classes=82, data_windows=10)
    assert "`num_layers` 1, 82 symbols, `batch_size`" in memory_problem(read)


def test_up_front_refusals_import_no_tensorflow(tmp_path):
    code = (
        "import sys; from typer.testing import CliRunner; from echo_keras.cli.app import app; "
        f"r = CliRunner().invoke(app, ['train', '--run-dir', {str(tmp_path / 'r')!r}, "
        "'--state-size', '1000000']); assert r.exit_code == 2, r.output; "
        "print('tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"]


def test_generate_temperature_past_every_float_is_a_config_error():
    from echo_keras.values import check_temperature

    assert check_temperature(0.7) == 0.7
    for value in (10**400, -(10**400), float("nan"), 0, True, "1"):
        with pytest.raises(ConfigError, match="temperature: must be"):
            check_temperature(value)


def test_a_message_names_three_items_then_an_ellipsis_and_configs_their_changed_fields():
    from echo_keras.config import changed_fields
    from echo_keras.errors import listed

    assert listed(["a", "b", "c"]) == "a, b, c" and listed([]) == ""
    assert listed(list("abcd"), "; ") == "a; b; c; ..."
    changed = dataclasses.replace(TrainConfig(), seed=9, state_size=8)
    assert changed_fields(TrainConfig(), changed) == ["state_size", "seed"]  # config's order
    assert changed_fields(changed, changed) == []
