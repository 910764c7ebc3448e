"""The sweep's workers: Ray actors that stay warm, and the driver's side that feeds them points.

Each worker is an actor with one CPU that imports TensorFlow once and trains its points in
memory with a `point.PointTrainer`, which compiles once per shape (`config.shape_key`). The
driver's `WorkerPool` hands an idle worker a point of a shape it has already compiled when
there is one, else a shape no other worker has, so compilations are few and the work spreads.
A point's result travels back as a task value: its results.csv row, its run folder as zip
bytes (with `keep_runs`) and where its time went. A worker that dies is replaced and its
point recorded as failed; a worker that has compiled `SHAPES_PER_WORKER` shapes is replaced
too, which bounds its memory (TensorFlow keeps what it compiled for the life of a process).
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import tempfile
import time
import zipfile
from collections import OrderedDict, deque
from pathlib import Path
from typing import Any

from echo_keras.config import TrainConfig, shape_key
from echo_keras.run.lock import use_private_tempdir
from echo_keras.startup import own_process
from echo_keras.sweep.cluster import TASK_ENV, error_line
from echo_keras.sweep.results import point_name

SHAPES_PER_WORKER = 24  # then a fresh worker: about 15 MB of compiled code per shape
# An idle worker compiles a shape another worker already runs only if that many points
# of it are still waiting: a compilation costs about as much as three points.
STEAL_AT = 5
# For testing failure handling: the point of this name (see point_name) raises, or its
# worker process dies on the spot; the first worker to remove the file START_FAIL_ENV
# names fails to start.
FAIL_ENV = "ECHO_KERAS_SWEEP_FAIL"
CRASH_ENV = "ECHO_KERAS_SWEEP_CRASH"
START_FAIL_ENV = "ECHO_KERAS_SWEEP_START_FAIL"
TEST_ENV = (FAIL_ENV, CRASH_ENV, START_FAIL_ENV)
# Workers that may fail to start in a sweep before the point given to one fails with it:
# a point that never started is not at fault, and goes to the next worker.
MAX_START_FAILURES = 3
PARTS = ("worker start", "compilation", "initialisation", "training", "evaluation", "saving")


def run_point(settings: dict[str, Any], keep_run: bool, trainer=None) -> dict[str, Any]:
    """Train and evaluate one point in memory; return {"row", "archive", "seconds", "shapes"}:
    its results.csv row, its run folder as zip bytes when `keep_run` (else None), where its
    time went, and the shapes `trainer` has compiled. An error becomes a failed row."""
    from echo_keras.sweep.point import PointTrainer, as_row

    trainer = trainer or PointTrainer()
    config = TrainConfig(**settings)
    row: dict[str, Any] = {**config.to_dict(), "host": socket.gethostname(), "status": "ok"}
    value = {"row": row, "archive": None, "seconds": {}, "shapes": 0}
    name = point_name(settings)
    try:
        if os.environ.get(FAIL_ENV) == name:
            raise RuntimeError(f"failure injected by {FAIL_ENV}={name}")
        if os.environ.get(CRASH_ENV) == name:
            os._exit(70)  # as a worker killed or out of memory would end
        if keep_run:
            with tempfile.TemporaryDirectory(prefix="echo-keras-point-") as tmp:
                result = trainer.run(config, Path(tmp) / name)
                value["archive"] = _zip_folder(Path(tmp) / name)
        else:
            result = trainer.run(config)
        row.update(as_row(result))
        value["seconds"] = result.seconds
    except Exception as error:
        row.update(status="failed", error=error_line(error))
    value["shapes"] = trainer.shapes
    return value


def _batches(config: TrainConfig) -> int:
    return config.num_epochs * config.num_batches


def _zip_folder(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


class PointWorker:
    """The actor: TensorFlow imported once (with its first point), one warm `PointTrainer`
    for all its points."""

    def __init__(self, env: dict[str, str]):
        os.environ.update(env)  # before TensorFlow's import, which reads it
        own_process()  # this process is the sweep's alone (see startup)
        if os.environ.get(START_FAIL_ENV):
            with contextlib.suppress(OSError):  # gone: another worker took the failure
                os.unlink(os.environ[START_FAIL_ENV])
                raise RuntimeError(f"start failure injected by {START_FAIL_ENV}")
        self.trainer = None
        # Ray ends a worker without the clean-up at exit that would remove TensorFlow's
        # temporary files; the sweep removes this folder once the worker is gone.
        _, self._owner = use_private_tempdir()

    def environment(self) -> dict[str, str | None]:
        """TASK_ENV's variables as this worker has them (TensorFlow reads them at import)."""
        return {name: os.environ.get(name) for name in TASK_ENV}

    def run(self, settings: dict[str, Any], keep_run: bool) -> dict[str, Any]:
        started, start_seconds = time.perf_counter(), 0.0
        if self.trainer is None:
            from echo_keras.sweep.point import PointTrainer

            self.trainer = PointTrainer()
            start_seconds = time.perf_counter() - started
        value = run_point(settings, keep_run, self.trainer)
        value["seconds"]["worker start"] = start_seconds
        return value


def _innermost(error: BaseException) -> BaseException:
    """What a Ray error wraps: a worker's own exception (one its start raised), else the
    error itself."""
    cause = getattr(error, "cause", None)
    while isinstance(cause, BaseException) and getattr(cause, "cause", None) is not None:
        cause = cause.cause  # a RayTaskError wraps the exception the worker raised
    return cause if isinstance(cause, BaseException) else error


class _Slot:
    """One worker as the driver sees it: its actor and the shapes it has compiled."""

    def __init__(self, actor):
        self.actor = actor
        self.shapes: set[tuple] = set()


class WorkerPool:
    """`size` warm workers fed from a queue of points, until every point has a result.

    Args:
        ray: the ray module, initialised.
        todo: the points to run.
        size: workers to start (no more than there are points).
        keep_run: return each point's run folder.
    """

    def __init__(self, ray, todo: list[TrainConfig], size: int, keep_run: bool):
        self.ray, self.keep_run = ray, keep_run
        env = dict(TASK_ENV)
        env.update({name: os.environ[name] for name in TEST_ENV if name in os.environ})
        # The environment is set by the worker itself rather than as Ray's runtime_env, so
        # that a worker Ray has already started can take it: no process started in vain.
        actor = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(PointWorker)
        self._new_actor = lambda: actor.remote(env)
        groups: dict[tuple, deque[TrainConfig]] = {}
        for config in todo:
            groups.setdefault(shape_key(config), deque()).append(config)
        # The longest work first (batches to train), so that the last to end is short.
        self.queue = OrderedDict(
            sorted(groups.items(), key=lambda item: -sum(_batches(c) for c in item[1]))
        )
        self.busy: dict[Any, tuple[_Slot, TrainConfig, float]] = {}  # ref -> its point
        self.slots = [_Slot(self._new_actor()) for _ in range(min(size, len(todo)))]
        self.seconds = dict.fromkeys((*PARTS, "scheduling"), 0.0)  # summed over points
        self.start_failures = 0

    def done(self) -> bool:
        return not self.queue and not self.busy

    def feed(self) -> None:
        """Give every idle worker its next point, as long as there are points: first the
        points of the shapes the idle workers have compiled, then the rest (`_pick`). Were a
        worker to pick a shape to compile before another had taken its own, the last point
        of a shape could go to a worker that must compile it while the worker that has it
        stands idle."""
        working = {id(slot) for slot, _, _ in self.busy.values()}
        idle = [slot for slot in self.slots if id(slot) not in working]
        for compiled_only in (True, False):
            for slot in list(idle):
                config = self._pick(slot, compiled_only)
                if config is not None:
                    ref = slot.actor.run.remote(config.to_dict(), self.keep_run)
                    self.busy[ref] = (slot, config, time.perf_counter())
                    slot.shapes.add(shape_key(config))
                    idle.remove(slot)

    def _pick(self, slot: _Slot, compiled_only: bool) -> TrainConfig | None:
        """A point of a shape this worker compiled; else (unless `compiled_only`) of a shape
        no other worker has; else, of the shape with the most points waiting, if enough wait
        to be worth a compilation or no worker is busy."""
        key = next((k for k in self.queue if k in slot.shapes), None)
        if key is None and not compiled_only:
            others = set().union(*(s.shapes for s in self.slots if s is not slot))
            key = next((k for k in self.queue if k not in others), None)
            if key is None and self.queue:
                largest = max(self.queue, key=lambda k: len(self.queue[k]))
                key = largest if len(self.queue[largest]) >= STEAL_AT or not self.busy else None
        if key is None:
            return None
        points = self.queue[key]
        config = points.popleft()
        if not points:
            del self.queue[key]
        return config

    def results(self, timeout: float):
        """Yield (config, value) for each point finished within `timeout` seconds."""
        ray = self.ray
        ready, _ = ray.wait(list(self.busy), num_returns=1, timeout=timeout)
        for ref in ready:
            slot, config, submitted = self.busy.pop(ref)
            try:
                value = ray.get(ref)
            except ray.exceptions.RayError as error:  # the worker died (killed, out of memory)
                self._replace(slot)
                if getattr(error, "actor_init_failed", False):  # it never ran the point
                    self.start_failures += 1
                    if self.start_failures <= MAX_START_FAILURES:
                        self.queue.setdefault(shape_key(config), deque()).appendleft(config)
                        continue
                cause = _innermost(error)
                row = {**config.to_dict(), "status": "failed", "error": error_line(cause)}
                value = {"row": row, "archive": None, "seconds": {}, "shapes": 0}
            else:
                if value["shapes"] >= SHAPES_PER_WORKER:
                    self._replace(slot)
            spent = value["seconds"]
            for part in PARTS:
                self.seconds[part] += spent.get(part, 0.0)
            self.seconds["scheduling"] += time.perf_counter() - submitted - sum(spent.values())
            yield config, value

    def _replace(self, slot: _Slot) -> None:
        try:
            self.ray.kill(slot.actor)
        except Exception:
            pass  # already gone
        slot.actor, slot.shapes = self._new_actor(), set()

    def stop(self) -> None:
        """Stop every worker (on a cluster; a local Ray takes its workers down with it)."""
        for slot in self.slots:
            try:
                self.ray.kill(slot.actor)
            except Exception:
                pass  # it finished meanwhile, or Ray is already going down
