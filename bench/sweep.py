"""`make bench` (sweep part): `echo-keras sweep` against the shell loop a user would write.

Two grids: the default one (36 points) and six points (`--echo-step 1,2,8 --window 4,12`).
Each sweep runs as a whole process (`echo-keras sweep --workers W`: Ray start-up, every
point, the heat map) with 1 and with 2 workers, BENCH_SWEEP_REPEATS times (default 3; the
median is shown), one after the other in pairs (1 then 2, 2 then 1, ...) so that the
machine's drift hits both alike; each pair's ratio is printed too. BENCH_SWEEP_GRIDS=six
(or default) runs one grid. The loop (`bench/sweep_loop.sh`: `train` + `evaluate` +
`evaluate --reset-each-window` per point, `xargs -P 2`) runs once per grid: it takes minutes
(BENCH_SWEEP_LOOP=0 skips it). Then, per point, where a 2-worker sweep's time went, as the
sweep itself reports it (`--json`).
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
from pathlib import Path

from bench_env import whole_number

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WORK = ROOT / "bench" / "results"
REPEATS = whole_number("BENCH_SWEEP_REPEATS", 3)
LOOP = os.environ.get("BENCH_SWEEP_LOOP", "1") != "0"  # 0: skip the loop (minutes)
GRIDS = {
    "default grid": [],
    "six points": ["--echo-step", "1,2,8", "--window", "4,12"],
}
# BENCH_SWEEP_GRIDS=six (or default): one grid only, say with more repeats.
ONLY = os.environ.get("BENCH_SWEEP_GRIDS")
if ONLY:
    if set(ONLY.split(",")) - {name.split()[0] for name in GRIDS}:
        raise SystemExit(f"bench: BENCH_SWEEP_GRIDS={ONLY}: name default, six or both")
    GRIDS = {name: args for name, args in GRIDS.items() if name.split()[0] in ONLY.split(",")}


def sweep(name: str, args: list[str], workers: int) -> dict:
    """One whole `echo-keras sweep` process: its wall time and its --json summary."""
    out = WORK / f"sweep-{workers}"
    command = [str(BIN / "echo-keras"), "sweep", "--out", str(out), "--overwrite", *args]
    command += ["--workers", str(workers), "--json"]
    load = os.getloadavg()[0]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"bench: {' '.join(command)} failed:\n{done.stderr}")
    summary = json.loads(done.stdout)
    print(
        f"  {name}, {workers} worker(s): {wall:.1f} s (load {load:.1f} -> "
        f"{os.getloadavg()[0]:.1f})",
        file=sys.stderr,
    )
    return {"wall": wall, **summary}


def loop(name: str, args: list[str]) -> float:
    """Wall seconds of bench/sweep_loop.sh over the grid's points."""
    from echo_keras.sweep.grid import make_spec

    spec = make_spec(_grid_texts(args), None, {})
    lines = "".join(
        f"{p.echo_step} {p.truncated_backprop_length} {p.state_size} {p.cell} {p.seed}\n"
        for p in spec.points()
    )
    out = WORK / "loop"
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "ECHO_KERAS": str(BIN / "echo-keras")}
    started = time.perf_counter()
    done = subprocess.run(
        ["sh", str(ROOT / "bench" / "sweep_loop.sh"), str(out)],
        input=lines,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"bench: the loop failed:\n{done.stderr}")
    print(f"  {name}, the loop: {wall:.1f} s", file=sys.stderr)
    return wall


def _grid_texts(args: list[str]) -> dict[str, str]:
    names = {"--echo-step": "echo_step", "--window": "truncated_backprop_length"}
    return {names[flag]: value for flag, value in zip(args[::2], args[1::2], strict=True)}


def median_run(runs: list[dict]) -> dict:
    return sorted(runs, key=lambda run: run["wall"])[len(runs) // 2]


def main() -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    table = {}
    for name, args in GRIDS.items():
        runs: dict[int, list[dict]] = {1: [], 2: []}
        for repeat in range(REPEATS):  # 1 and 2 workers alternated: drift hits both alike
            for workers in (1, 2) if repeat % 2 == 0 else (2, 1):
                runs[workers].append(sweep(name, args, workers))
        table[name] = {"runs": runs, "loop": loop(name, args) if LOOP else None}

    print(
        f"\nSweeps, whole process ({platform.machine()}, {os.cpu_count()} cores; median of "
        f"{REPEATS}; the loop once):"
    )
    print("| grid | points | 1 worker | 2 workers | 1 -> 2 | loop, xargs -P 2 | loop / sweep |")
    print("|---|---|---|---|---|---|---|")
    for name, result in table.items():
        one = statistics.median(run["wall"] for run in result["runs"][1])
        two = statistics.median(run["wall"] for run in result["runs"][2])
        points = result["runs"][2][0]["points"]
        loop_seconds = result["loop"]
        against = (
            f"{loop_seconds:.1f} s | {loop_seconds / two:.1f}x"
            if loop_seconds
            else "not run | (BENCH_SWEEP_LOOP=0)"
        )
        print(f"| {name} | {points} | {one:.1f} s | {two:.1f} s | {one / two:.2f}x | {against} |")
    for name, result in table.items():
        pairs = zip(result["runs"][1], result["runs"][2], strict=True)
        ratios = [one["wall"] / two["wall"] for one, two in pairs]
        print(
            f"\n1 -> 2 workers, {name}, each pair run back to back: "
            + ", ".join(f"{ratio:.2f}x" for ratio in ratios)
            + f" (median {statistics.median(ratios):.2f}x)"
        )

    for name, result in table.items():
        run = median_run(result["runs"][2])
        startup = run["startup_seconds"]
        print(
            f"\nWhere the time goes, {name}, 2 workers (the median run, {run['wall']:.1f} s "
            f"in all; Ray start-up {startup:.1f} s), in seconds per point of worker time:"
        )
        parts = run["parts"]
        total = sum(parts.values())
        for part, seconds in parts.items():
            share = seconds / total if total else 0.0
            print(f"- {part}: {seconds / run['ran']:.3f} s ({share:.0%})")


if __name__ == "__main__":
    main()
