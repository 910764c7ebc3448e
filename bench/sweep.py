"""`make bench` (sweep part): the default sweep's wall time with 1 and with 2 workers.

Each sweep runs as a whole process (`echo-keras sweep --workers W`: Ray start-up, every point,
the heat map). To show where the time goes, it also measures the ceiling of this machine for
two trainings at once, without Ray: a sample of the grid's points trained by `run_point` one
after the other in one process, then split over two processes side by side (TensorFlow on one
thread each, as in the sweep's tasks). Set BENCH_SWEEP_SAMPLE to change the sample (default 8).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WORK = ROOT / "bench" / "results"
SAMPLE = int(os.environ.get("BENCH_SWEEP_SAMPLE", "8"))


def sweep(workers: int) -> dict:
    out = WORK / f"sweep-{workers}"
    command = [str(BIN / "echo-keras"), "sweep", "--out", str(out), "--overwrite"]
    command += ["--workers", str(workers), "--json"]
    load = os.getloadavg()[0]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"bench: {' '.join(command)} failed:\n{done.stderr}")
    # The machine's 1-minute load average before and after: other work skews the times.
    load = f"load {load:.1f} -> {os.getloadavg()[0]:.1f}"
    return {"wall": wall, "load": load, **json.loads(done.stdout.splitlines()[-1])}


def train_points(groups: list[list[dict]]) -> float:
    """Wall seconds to train each group of points in its own process, the groups side by side."""
    from echo_keras.sweep.runner import TASK_ENV

    code = (
        "import json, sys\nfrom echo_keras.sweep.runner import run_point\n"
        "for settings in json.loads(sys.argv[1]):\n"
        "    row = run_point(settings, False)['row']\n"
        "    assert row['status'] == 'ok', row['error']\n"
    )
    env = {**os.environ, **TASK_ENV}
    logs = [(WORK / f"sample-{index}.log").open("w") for index in range(len(groups))]
    started = time.perf_counter()
    processes = [
        subprocess.Popen([sys.executable, "-c", code, json.dumps(group)], env=env, stderr=log)
        for group, log in zip(groups, logs, strict=True)
    ]
    failed = [process.wait() != 0 for process in processes]
    seconds = time.perf_counter() - started
    for log in logs:
        log.close()
    if any(failed):
        raise SystemExit(f"bench: training the sample failed; see {[log.name for log in logs]}")
    return seconds


def main() -> None:
    from echo_keras.sweep.grid import make_spec

    WORK.mkdir(parents=True, exist_ok=True)
    spec = make_spec({}, None, {})
    points = [config.to_dict() for config in spec.points()]
    results = {}
    for workers in (1, 2):
        results[workers] = sweep(workers)
        print(f"  sweep, {workers} worker(s): {results[workers]['wall']:.1f} s", file=sys.stderr)
    sample = points[:: max(1, len(points) // SAMPLE)][:SAMPLE]
    one_by_one = train_points([sample])
    side_by_side = train_points([sample[0::2], sample[1::2]])

    one, two = results[1], results[2]
    grid = spec.grid
    print(
        f"\nDefault sweep ({len(points)} points: echo step {grid['echo_step'][0]}-"
        f"{grid['echo_step'][-1]} x window {grid['truncated_backprop_length'][0]}-"
        f"{grid['truncated_backprop_length'][-1]}, state size {grid['state_size'][0]}, "
        f"{spec.settings['num_epochs']} epochs of {spec.settings['total_series_length']} "
        f"symbols), whole process, {platform.machine()}, {os.cpu_count()} cores:"
    )
    for workers, result in results.items():
        ok = f"{result['ok']} ok, {result['failed']} failed"
        print(
            f"- sweep, {workers} worker{'s' * (workers > 1)}: {result['wall']:.1f} s "
            f"(Ray start-up {result['startup_seconds']:.1f} s; {ok}; {result['load']})"
        )
    print(f"- speed-up with 2 workers: {one['wall'] / two['wall']:.2f}x")
    ceiling = one_by_one / side_by_side
    print(
        f"- without Ray, {len(sample)} of the points: {one_by_one:.1f} s one after the other, "
        f"{side_by_side:.1f} s in two processes side by side: {ceiling:.2f}x, the most two "
        "trainings at once gain on this machine"
    )
    work = one["wall"] - one["startup_seconds"]
    expected = two["startup_seconds"] + work / ceiling
    print(
        f"- with that ceiling, 2 workers would take {expected:.1f} s (Ray start-up, then the "
        f"1-worker time past start-up / {ceiling:.2f}); the other {two['wall'] - expected:.1f} s "
        "go to Ray's own processes on the same 2 cores and to the last points running alone"
    )


if __name__ == "__main__":
    main()
