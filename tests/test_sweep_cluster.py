"""`echo-keras sweep --address`: a sweep on a real Ray head started with `ray start`.

The head listens on 127.0.0.1 only and requires a token (RAY_AUTH_MODE=token, the token in a
file named by RAY_AUTH_TOKEN_PATH). The sweep runs as a separate process with that token file but
without RAY_AUTH_MODE: joining by address, Ray would send no token; the sweep must turn token
mode on itself. `ray stop` ends the head whatever happens.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from echo_keras.sweep import results

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _gcs_environment(folder: Path) -> bytes:
    """The environment of the GCS server whose command line names `folder`."""
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes()
            if b"gcs_server" in command and str(folder).encode() in command:
                return (entry / "environ").read_bytes()
        except OSError:
            continue
    raise AssertionError("no GCS server of the head found")


@pytest.fixture
def ray_head():
    """A Ray head on 127.0.0.1 with 2 CPUs and token authentication; yields (address, env)."""
    folder = Path(tempfile.mkdtemp(prefix="ekc-", dir="/tmp"))  # short: Unix socket paths
    token = folder / "token"
    token.write_text(secrets.token_hex(32))
    env = {
        **os.environ,
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_AUTH_TOKEN_PATH": str(token),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    for name in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_TMPDIR"):
        env.pop(name, None)
    port = _free_port()
    start = [str(BIN / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1"]
    start += ["--port", str(port), "--num-cpus", "2", "--temp-dir", str(folder / "ray")]
    start += ["--include-dashboard=false", "--disable-usage-stats"]
    try:
        started = subprocess.run(
            start, env={**env, "RAY_AUTH_MODE": "token"}, capture_output=True, text=True
        )
        assert started.returncode == 0, started.stdout + started.stderr
        assert b"RAY_AUTH_MODE=token" in _gcs_environment(folder)  # the head wants a token
        yield f"127.0.0.1:{port}", env
    finally:
        subprocess.run([str(BIN / "ray"), "stop"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_a_sweep_runs_on_an_authenticated_ray_head(ray_head, tmp_path):
    address, env = ray_head
    out = tmp_path / "out"
    command = [str(BIN / "echo-keras"), "sweep", "--out", str(out), "--address", address]
    command += ["--echo-step", "1,6", "--window", "3", "--epochs", "3", "--series-length", "6000"]
    done = subprocess.run([*command, "--json"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["address"] == address and summary["cpus"] == 2
    assert summary["points"] == 2 and summary["ok"] == 2
    rows = {results.point_name(r): r for r in results.read_results(out / "results.csv")}
    assert set(rows) == {"echo1-window3-state4-lstm-seed0", "echo6-window3-state4-lstm-seed0"}
    assert all(r["status"] == "ok" and r["host"] == socket.gethostname() for r in rows.values())
    assert float(rows["echo1-window3-state4-lstm-seed0"]["boundary_accuracy"]) >= 0.99
    assert float(rows["echo6-window3-state4-lstm-seed0"]["boundary_accuracy"]) <= 0.65
    assert json.loads((out / "sweep.json").read_text())["address"] == address
    assert (out / "heatmap.png").is_file()
