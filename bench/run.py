"""`make bench`: time echo-keras against a plain model.fit baseline and print the table.

Every configuration runs as a whole process (import, build, compile, train,
save), a few times side by side; the table quotes medians and ratios. Peak
memory is each process's own maximum RSS (from wait4). Set BENCH_REPEATS to
change the number of repeats (default 3).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from importlib.metadata import version as package_version
from pathlib import Path

from bench_env import whole_number

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WORK = ROOT / "bench" / "results" / "runs"
REPEATS = whole_number("BENCH_REPEATS", 3)
TUTORIAL_BATCHES = 666  # windows per epoch of the tutorial's configuration


def measure(command: list[str]) -> dict:
    """Run a command; return its wall seconds, peak RSS (MiB) and parsed JSON output."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    out, err = process.stdout.read(), process.stderr.read()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"bench: {' '.join(command)} failed:\n{err}")
    lines = [line for line in out.splitlines() if line.startswith("{")]
    return {
        "wall": wall,
        "rss_mib": usage.ru_maxrss / 1024,
        "json": json.loads(lines[-1]) if lines else {},
    }


def echo_keras(*args) -> list[str]:
    return [str(BIN / "echo-keras"), *map(str, args)]


def ours(epochs: int, *extra) -> list[str]:
    run = WORK / f"ours-{epochs}{'-'.join(map(str, extra))}"
    return echo_keras(
        "train", "--run-dir", run, "--overwrite", "--epochs", epochs, "--json", *extra
    )


def baseline(epochs: int) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "bench" / "baseline.py"),
        WORK / f"baseline-{epochs}",
        epochs,
    ]


def median(results: list[dict], key) -> float:
    return statistics.median(key(r) for r in results)


def main() -> None:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    jobs = {
        "ours 5": lambda: ours(5),
        "baseline 5": lambda: baseline(5),
        "ours 20": lambda: ours(20),
        "baseline 20": lambda: baseline(20),
        "ours 20 --plot-every 100": lambda: ours(20, "--plot-every", 100),
    }
    results = {name: [] for name in jobs}
    for repeat in range(REPEATS):  # interleaved, so drifts in machine load hit all alike
        for name, job in jobs.items():
            results[name].append(measure([str(c) for c in job()]))
            print(
                f"  repeat {repeat + 1}/{REPEATS}: {name:<26} {results[name][-1]['wall']:.2f} s",
                file=sys.stderr,
            )

    def train_seconds(r):
        return r["json"]["train_seconds"]

    accuracy = {}
    for name, run in (("ours", "ours-5"), ("baseline", "baseline-5")):
        metrics = measure(echo_keras("evaluate", "--run-dir", WORK / run, "--json"))["json"]
        accuracy[name] = metrics

    # Warm cost of a batch: the extra training time of 20 over 5 epochs, per extra batch.
    warm = {}
    for who in ("ours", "baseline"):
        extra = median(results[f"{who} 20"], train_seconds) - median(
            results[f"{who} 5"], train_seconds
        )
        warm[who] = 1000 * extra / (15 * TUTORIAL_BATCHES)

    startup = {"help": statistics.median(measure(echo_keras("--help"))["wall"] for _ in range(5))}
    startup["plot"] = statistics.median(
        measure(echo_keras("plot", "--run-dir", WORK / "ours-5"))["wall"] for _ in range(3)
    )
    # A command that loads TensorFlow, and what loading TensorFlow and Keras alone takes.
    startup["predict"] = statistics.median(
        measure(echo_keras("predict", "--run-dir", WORK / "ours-5", "011010011101"))["wall"]
        for _ in range(5)
    )
    load = [str(BIN / "python"), "-c", "import echo_keras.backend"]
    startup["tensorflow"] = statistics.median(measure(load)["wall"] for _ in range(5))
    scale_flags = ["--state-size", 128, "--batch-size", 64, "--window", 50, "--quiet"]
    scale = measure(
        echo_keras(
            "train",
            "--run-dir",
            WORK / "scale",
            "--series-length",
            1_000_000,
            "--epochs",
            1,
            "--json",
            *scale_flags,
        )
    )
    memory = {}
    for length in (2_000_000, 20_000_000):
        memory[length] = measure(
            echo_keras(
                "train",
                "--run-dir",
                WORK / f"memory-{length}",
                "--series-length",
                length,
                "--epochs",
                1,
                "--json",
                "--state-size",
                16,
                "--batch-size",
                64,
                "--window",
                50,
            )
        )
    print(report(results, warm, accuracy, startup, scale, memory))


def report(results, warm, accuracy, startup, scale, memory) -> str:
    def wall(name):
        return median(results[name], lambda r: r["wall"])

    def train_s(name):
        return median(results[name], lambda r: r["json"]["train_seconds"])

    def rss(name):
        return median(results[name], lambda r: r["rss_mib"])

    def scores(who):
        return f"{accuracy[who]['accuracy']:.4f} / {accuracy[who]['boundary_accuracy']:.4f}"

    lines = [
        f"echo-keras bench: {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; medians of {REPEATS} runs",
        "",
        "| run (tutorial configuration) | whole process s | training s | ms per batch, warm "
        "| whole-process speed-up | warm speed-up | peak RSS MiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for epochs in (5, 20):
        base, mine = f"baseline {epochs}", f"ours {epochs}"
        lines.append(
            f"| baseline `model.fit`, {epochs} epochs | {wall(base):.2f} | {train_s(base):.2f} | "
            f"{warm['baseline']:.3f} | 1.0x | 1.0x | {rss(base):.0f} |"
        )
        lines.append(
            f"| `echo-keras train`, {epochs} epochs | {wall(mine):.2f} | {train_s(mine):.2f} | "
            f"{warm['ours']:.3f} | {wall(base) / wall(mine):.1f}x | "
            f"{warm['baseline'] / warm['ours']:.1f}x | {rss(mine):.0f} |"
        )
    live, plain = "ours 20 --plot-every 100", "ours 20"
    lines.append(
        f"| `echo-keras train`, 20 epochs, `--plot-every 100` | {wall(live):.2f} | "
        f"{train_s(live):.2f} | | | | {rss(live):.0f} |"
    )
    lines += [
        "",
        f"- live plot cost: training {100 * (train_s(live) / train_s(plain) - 1):+.1f}% "
        "with `--plot-every 100` (20 epochs)",
        "- evaluation of the 5-epoch runs (accuracy / boundary accuracy): "
        f"echo-keras {scores('ours')}, baseline {scores('baseline')}",
        f"- start-up: `echo-keras --help` {startup['help']:.2f} s, `echo-keras plot` "
        f"{startup['plot']:.2f} s, `echo-keras predict 011010011101` {startup['predict']:.2f} s, "
        "of which loading TensorFlow and Keras (`python -c 'import echo_keras.backend'`) "
        f"{startup['tensorflow']:.2f} s; "
        f"ml_dtypes {package_version('ml_dtypes')}",
    ]
    scale_json = scale["json"]
    time_steps = scale_json["steps"] * 64 * 50
    lines.append(
        f"- scale (`--state-size 128 --batch-size 64 --window 50 --series-length 1000000`, "
        f"1 epoch): {scale_json['steps']} batches in {scale_json['train_seconds']:.1f} s, "
        f"{time_steps / scale_json['train_seconds']:,.0f} time steps/s, "
        f"{1000 * scale_json['train_seconds'] / scale_json['steps']:.1f} ms per batch, "
        f"whole process {scale['wall']:.1f} s, peak RSS {scale['rss_mib']:.0f} MiB"
    )
    small, large = sorted(memory)
    grown = (memory[large]["rss_mib"] - memory[small]["rss_mib"]) * 2**20
    lines.append(
        f"- memory (`--state-size 16 --batch-size 64 --window 50`, 1 epoch): peak RSS "
        f"{memory[small]['rss_mib']:.0f} MiB at {small:,} symbols, "
        f"{memory[large]['rss_mib']:.0f} MiB at {large:,}: "
        f"{grown / (large - small):.1f} bytes per extra symbol"
    )
    text = "\n".join(lines)
    (ROOT / "bench" / "results" / "latest.md").write_text(text + "\n")
    return text


if __name__ == "__main__":
    main()
