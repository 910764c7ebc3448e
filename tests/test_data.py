"""The echo series and the stateful window layout."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from echo_keras.config import TrainConfig
from echo_keras.data import epoch_windows, eval_rng, generate_series, make_windows


def test_row_i_of_window_k_plus_1_continues_row_i_of_window_k():
    series = np.arange(2 * 3 * 4)  # batch 2, 3 windows of 4
    windows = make_windows(series, batch_size=2, window=4)
    assert windows.shape == (3, 2, 4)
    assert windows[0].tolist() == [[0, 1, 2, 3], [12, 13, 14, 15]]
    for k in range(2):
        for row in range(2):
            assert windows[k + 1, row, 0] == windows[k, row, -1] + 1


def test_rows_are_consecutive_pieces_of_the_series_and_the_remainder_is_dropped():
    series = np.arange(2 * 3 * 4 + 5)
    windows = make_windows(series, batch_size=2, window=4)
    rows = windows.transpose(1, 0, 2).reshape(2, -1)
    assert np.array_equal(rows.ravel(), series[:24])


def test_y_is_x_shifted_right_by_echo_step():
    x, y = generate_series(np.random.default_rng(1), 100, num_classes=2, echo_step=3)
    assert y[:3].tolist() == [0, 0, 0]
    assert np.array_equal(y[3:], x[:-3])
    assert set(np.unique(x)) <= {0, 1}
    assert x.dtype == np.uint8


def test_symbols_are_balanced_and_cover_every_class():
    x, _ = generate_series(np.random.default_rng(2), 60000, num_classes=3, echo_step=1)
    counts = np.bincount(x, minlength=3) / len(x)
    assert np.allclose(counts, 1 / 3, atol=0.01)


def test_fresh_data_every_epoch_and_the_same_for_the_same_seed():
    config = TrainConfig(total_series_length=3000)
    first, again, second = (
        epoch_windows(config, 0),
        epoch_windows(config, 0),
        epoch_windows(config, 1),
    )
    assert np.array_equal(first[0], again[0])
    assert not np.array_equal(first[0], second[0])
    other_seed = epoch_windows(TrainConfig(total_series_length=3000, seed=1), 0)
    assert not np.array_equal(first[0], other_seed[0])


def test_evaluation_stream_differs_from_every_training_epoch():
    config = TrainConfig(total_series_length=3000)
    x_eval = eval_rng(config.seed).integers(0, 2, 3000, dtype=np.uint8)
    for epoch in range(20):
        x_train, _ = epoch_windows(config, epoch)
        assert not np.array_equal(make_windows(x_eval, 5, 15), x_train)


@settings(max_examples=60, deadline=None)
@given(
    length=st.integers(1, 400),
    batch_size=st.integers(1, 9),
    window=st.integers(1, 12),
    num_classes=st.integers(2, 300),
    echo_step=st.integers(0, 20),
    seed=st.integers(0, 2**32 - 1),
)
def test_data_generation_properties(length, batch_size, window, num_classes, echo_step, seed):
    echo_step = min(echo_step, length - 1)
    x, y = generate_series(np.random.default_rng(seed), length, num_classes, echo_step)
    assert x.shape == y.shape == (length,)
    assert x.max() < num_classes and x.itemsize == (1 if num_classes <= 256 else 2)
    assert np.array_equal(y[echo_step:], x[: length - echo_step]) and not y[:echo_step].any()
    windows = make_windows(x, batch_size, window)
    num_windows = length // batch_size // window
    assert windows.shape == (num_windows, batch_size, window)
    used = num_windows * batch_size * window
    # Every kept symbol appears once, in order along each row; only the tail is dropped.
    assert np.array_equal(windows.transpose(1, 0, 2).ravel(), x[:used])
    again, _ = generate_series(np.random.default_rng(seed), length, num_classes, echo_step)
    assert np.array_equal(x, again)


def test_the_note_on_data_left_out_counts_its_windows_in_words():
    from echo_keras.data import _dropped

    assert "(1 window of 2 x 5)" in _dropped("`data`", "symbols", 10, 30, (1, 2, 5))
    assert "(3 windows of 2 x 5)" in _dropped("`data`", "symbols", 30, 30, (3, 2, 5))
