"""Whether a training configuration fits in this machine's memory, said before anything
is built: the library's and the command line's one check (a state size of 10^7 would
otherwise die inside TensorFlow, and 10^9 epochs of history fill the machine)."""

from __future__ import annotations

import os

from echo_keras.config import TrainConfig
from echo_keras.values import readable

HUGE_BYTES = 1024**5 * 10**6  # a million PiB: memory estimates beyond it are all "too much"


def available_memory() -> int:
    """Bytes of memory this machine can still give a process (MemAvailable, else all of it)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def memory_problem(config: TrainConfig, available: int | None = None) -> str | None:
    """A one-line reason when `config` cannot fit in memory, else None."""
    available = available_memory() if available is None else available
    estimate = config.memory_estimate()
    if estimate["data"] > available:
        what = f"`total_series_length` {readable(config.total_series_length)} needs"
        need = f"{_about(estimate['data'])} of memory for its data"
    elif estimate["history"] > available:
        epochs, batches = readable(config.num_epochs), readable(config.num_batches)
        what = f"`num_epochs` {epochs} of {batches} batches each need"
        need = f"{_about(estimate['history'])} of memory for the loss of every batch"
    elif estimate["model"] > available:
        classes = f"`num_classes` {config.num_classes}, "
        if config.data is not None:  # not a setting but the data's: unknown until it is read
            classes = f"{config.num_classes} symbols, " if config.data_windows else ""
        what = (
            f"the model (`state_size` {readable(config.state_size)}, "
            f"`num_layers` {config.num_layers}, {classes}"
            f"`batch_size` {config.batch_size}, "
            f"`truncated_backprop_length` {config.truncated_backprop_length}) needs"
        )
        need = f"{_about(estimate['model'])} of memory"
    elif sum(estimate.values()) > available:
        what = "data, history and model together need"
        need = f"{_about(sum(estimate.values()))} of memory"
    else:
        return None
    return f"{what} {need} (estimated), more than the {_size(available)} available"


def _about(count: int) -> str:
    """An estimate of bytes in words: `about 5.5 TiB`, or past any machine, no number."""
    if count > HUGE_BYTES:  # past what a float holds, too
        return "more than a million PiB"
    return f"about {_size(count)}"


def _size(count: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if count < 1024 or unit == "PiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")
