"""Ray for the sweep: a private local Ray on the loopback, or an existing cluster joined by address.

Ray is imported only inside `ray_session`, so importing this module stays light.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import secrets
import shutil
import signal
import socket
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from echo_keras.errors import SweepError, UsageError, first_line
from echo_keras.run.lock import owned_folder

# Every worker gets one CPU and runs TensorFlow on one thread, on the CPU.
TASK_ENV = {
    "TF_NUM_INTRAOP_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "CUDA_VISIBLE_DEVICES": "",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}
LOCAL_OBJECT_STORE_BYTES = 256 * 1024**2  # rows and small zipped run folders: plenty
SESSION_PREFIX = "echo-keras-ray-"  # a local Ray's session folder, under RAY_TMPDIR or /tmp
REACH_SECONDS = 10  # to find a Ray head at an address before giving up on it
# Ray's switch, read as its driver connects, for the handler of C++ it puts on SIGTERM and on
# crashes (see _signals_kept).
FAILURE_HANDLER = "RAY_DISABLE_FAILURE_SIGNAL_HANDLER"


def error_line(error: BaseException) -> str:
    """An error as one line of at most 500 characters: `Type: first line`."""
    return f"{type(error).__name__}: {first_line(error)}"[:500]


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def use_token_if_available() -> None:
    """Joining a cluster by address, Ray sends no token unless RAY_AUTH_MODE=token, and a head
    started by `ray start` where a token exists requires one. Turn token mode on when a token
    is at hand (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token), as Ray itself does
    for `address="auto"`; an explicit RAY_AUTH_MODE is kept. Takes effect before Ray's import."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    default = Path.home() / ".ray" / "auth_token"
    if any(os.environ.get(name) for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")) or (
        default.is_file()
    ):
        os.environ["RAY_AUTH_MODE"] = "token"


def host_and_port(address: str) -> tuple[str, int]:
    """`host:port` or `[v6 host]:port` -> (host, port); UsageError if it is neither."""
    host, colon, port = address.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"{address!r} is not a Ray address: expected HOST:PORT or auto")
    return host, int(port)


def check_address(address: str) -> tuple[str, int] | None:
    """(host, port) of a HOST:PORT address; None for `auto` and `ray://` addresses, which are
    Ray's to find; UsageError for anything else."""
    if address == "auto" or address.startswith("ray://"):
        return None
    return host_and_port(address)


def check_reachable(address: str, interrupted: Callable[[], bool] = lambda: False) -> None:
    """SweepError unless a Ray head could answer at `address` within REACH_SECONDS: something
    must accept a connection there and speak gRPC, as Ray's GCS does. Ray itself would
    retry a dead address for many minutes, deaf to Ctrl-C; here `interrupted()` is asked
    every few tenths of a second, and an interrupted check returns at once. `auto` and
    `ray://` addresses are left to Ray, which finds or refuses them quickly."""
    parts = check_address(address)
    if parts is None:
        return
    host, port = parts
    deadline = time.monotonic() + REACH_SECONDS
    reason = "nothing answers there"
    while not interrupted():
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            break
        except TimeoutError:
            pass  # no answer yet: a host that is down, or far
        except OSError as error:  # refused, unreachable, no such host
            reason = error.strerror or str(error)
            raise SweepError(f"cannot reach a Ray cluster at {address}: {reason}") from None
        if time.monotonic() > deadline:
            raise SweepError(f"cannot reach a Ray cluster at {address}: {reason}")
    if interrupted() or os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
        return  # a TLS head's handshake is Ray's to make
    import grpc  # Ray's own dependency

    channel = grpc.insecure_channel(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    ready = grpc.channel_ready_future(channel)
    try:
        while not interrupted():
            try:
                ready.result(timeout=0.25)
                return
            except grpc.FutureTimeoutError:
                if time.monotonic() > deadline:
                    raise SweepError(
                        f"cannot reach a Ray cluster at {address}: what answers there does "
                        f"not speak Ray's protocol (waited {REACH_SECONDS} s)"
                    ) from None
    finally:
        ready.cancel()
        channel.close()


@contextmanager
def ray_session(
    address: str | None,
    workers: int | None = None,
    interrupted: Callable[[], bool] = lambda: False,
):
    """Start a private local Ray with `workers` CPUs on the loopback (address None), or join
    the cluster at `address` once `check_reachable` says it is there; yield the ray module
    (None if `interrupted()` became true before Ray started); shut Ray down and remove its
    files after."""
    if address is not None:
        check_reachable(address, interrupted)
        if interrupted():
            yield None
            return
    temp_dir = owner = saved_env = None
    if address is None:
        # Read when Ray is imported: Ray then binds to 127.0.0.1, not to the network.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        base = os.environ.get("RAY_TMPDIR") or "/tmp"  # short: Ray's Unix sockets live below
        problem = ray_tmpdir_problem(base)
        if problem:
            raise UsageError(problem)
        # Removes what dead sweeps left: their folders, and Ray's processes still in them.
        folder, owner = owned_folder(base, SESSION_PREFIX, on_dead=end_ray_processes_in)
        temp_dir = str(folder)
        saved_env = {**_private_token(Path(temp_dir)), **_workers_at_our_priority()}
    else:
        use_token_if_available()
    import ray

    _forget_cached_token()  # Ray keeps the first token it read for the life of the process
    try:
        if address is None:
            try:
                with _signals_kept(), _without_unused_services():
                    ray.init(
                        address="local",
                        num_cpus=workers or usable_cores(),
                        include_dashboard=False,
                        object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                        log_to_driver=False,
                        logging_level=logging.ERROR,
                        _temp_dir=temp_dir,
                    )
            except Exception as error:  # a bare Exception when its node starts too slowly
                raise SweepError(
                    f"cannot start a local Ray: {error_line(error)} (a machine too busy "
                    "to start Ray within its 30 s; run the sweep again)"
                ) from None
        else:
            try:
                with _signals_kept():
                    ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
            except (ConnectionError, RuntimeError, ValueError) as error:
                raise SweepError(
                    f"cannot join the Ray cluster at {address}: {error_line(error)}. If the "
                    "head requires a token, put its token (`ray get-auth-token` on the head) "
                    "in ~/.ray/auth_token or RAY_AUTH_TOKEN, and leave RAY_AUTH_MODE unset"
                ) from None
        yield ray
    finally:
        ray.shutdown()
        if temp_dir is not None:
            _restore(saved_env)
            _forget_cached_token()
            shutil.rmtree(temp_dir, ignore_errors=True)
            owner.release()


TOKEN_ENV = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE")
NICENESS_ENV = "RAY_worker_niceness"  # read by the raylet a local Ray starts


def _private_token(folder: Path) -> dict[str, str | None]:
    """A local Ray turns token authentication on and, finding no token, writes one to
    ~/.ray/auth_token, after which every `ray start --head` on the machine wants it. Give
    the private Ray a token of its own in its session folder instead (unless a token was
    given, or authentication is off); return the environment to restore after."""
    saved = {name: os.environ.get(name) for name in TOKEN_ENV}
    given = os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
    if given or os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return saved
    token = folder / "auth_token"
    descriptor = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(secrets.token_hex(32))
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(token)
    return saved


def _workers_at_our_priority() -> dict[str, str | None]:
    """Ray starts its workers at niceness 15, below everything else on the machine: another
    training, a browser or a test suite beside the sweep would take the cores and leave its
    workers crawling. A local sweep is the user's own work: its workers run at the priority of
    the command that started them (unless RAY_worker_niceness says otherwise). Return the
    environment to restore after."""
    saved = {NICENESS_ENV: os.environ.get(NICENESS_ENV)}
    os.environ.setdefault(NICENESS_ENV, "0")  # added to ours by each worker: none
    return saved


def _forget_cached_token() -> None:
    """Make Ray read its token again (from the environment just set): a process that ran
    one sweep keeps the token it read, which another sweep's Ray would refuse."""
    try:
        from ray._raylet import AuthenticationTokenLoader

        AuthenticationTokenLoader.instance().reset_cache()
    except (ImportError, AttributeError):
        pass  # a Ray without that cache


# Below RAY_TMPDIR: /echo-keras-ray-XXXXXXXX/session_<date>_<time>_<microseconds>_<pid>/
# sockets/plasma_store, a Unix socket's path, at most 107 bytes (pid: up to 7 digits).
SOCKET_TAIL = len(f"/{SESSION_PREFIX}XXXXXXXX/session_2026-01-01_00-00-00_000000_1234567")
SOCKET_TAIL += len("/sockets/plasma_store")
MAX_SOCKET_PATH = 107


def ray_tmpdir_problem(base: str) -> str | None:
    """Why a local Ray cannot live below `base` (RAY_TMPDIR, or /tmp), or None."""
    named = "RAY_TMPDIR" if os.environ.get("RAY_TMPDIR") == base else "the folder"
    if not os.path.isabs(base):
        return f"{named} must be an absolute path, got {base!r:.60}"
    if not os.path.isdir(base):
        kind = "is a file, not a folder" if os.path.exists(base) else "does not exist"
        return f"{named} {base} {kind}"
    if not os.access(base, os.W_OK | os.X_OK):
        return f"{named} {base} is not writable"
    longest = MAX_SOCKET_PATH - SOCKET_TAIL  # Linux's limit (107 bytes); macOS's is 103
    if len(os.fsencode(base)) > longest:
        return (
            f"{named} {base} is too long for the sockets Ray makes below it: at most "
            f"{longest} bytes, such as /tmp"
        )
    return None


def end_ray_processes_in(folder: Path) -> None:
    """SIGKILL the Ray processes that a local sweep killed with SIGKILL left running in its
    session `folder`: Ray's programs whose command line names the folder, or that hold a
    file in it open (their logs). Ray's agents outlive their raylet by minutes, some ignoring
    SIGTERM. Linux only (/proc); elsewhere nothing is done."""
    inside = os.path.realpath(folder)
    spec = importlib.util.find_spec("ray")  # where Ray is installed; Ray is not imported
    package = os.path.dirname(spec.origin) + os.sep if spec and spec.origin else None
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            # Ray's: a worker or agent (`ray::...`), or a program of the ray package (raylet,
            # gcs_server, an agent before it names itself); not, say, a `tail` of its logs.
            ours = package is not None and any(arg.startswith(package) for arg in argv[:3])
            if not (argv[0].startswith("ray::") or ours) or int(entry.name) == os.getpid():
                continue
            command = " ".join(argv)
            holds = inside in command or any(
                os.readlink(fd).startswith(inside + os.sep) for fd in (entry / "fd").iterdir()
            )
            if holds:
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ValueError):
            continue  # gone meanwhile, or not ours to read


def _restore(saved: dict[str, str | None]) -> None:
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@contextmanager
def _without_unused_services():
    """Start a private local Ray without the three helper processes a sweep never uses: the
    autoscaler's monitor (one machine, nothing to scale), the log monitor (workers' logs are
    not streamed: `log_to_driver=False`) and the dashboard's server (no dashboard is asked
    for; its server would still start for job submission). Each is a Python process that
    imports much of Ray; without them Ray starts in about 2 s instead of 4 on 2 cores, and
    its shutdown no longer waits about 1 s for the monitor. Ray has no option for this in
    `ray.init`, so it is done through the internals it uses for its own test clusters; a Ray
    without them starts as usual."""
    try:
        from ray._private import node, services

        start_node, start_api_server = node.Node.__init__, services.start_api_server
    except (ImportError, AttributeError):
        yield
        return

    def lean_node(self, ray_params, *args, **kwargs):
        ray_params.no_monitor = True
        ray_params.include_log_monitor = False
        start_node(self, ray_params, *args, **kwargs)

    node.Node.__init__ = lean_node
    services.start_api_server = lambda *args, **kwargs: (None, None)  # (its url, process)
    try:
        yield
    finally:
        node.Node.__init__, services.start_api_server = start_node, start_api_server


@contextmanager
def _signals_kept():
    """Keep the caller's SIGTERM handler while Ray starts. `ray.init` sets its own, which
    exits at once with status 15 and no word, so a SIGTERM in the seconds Ray takes to start
    would skip the sweep's own handling (the "Interrupted (SIGTERM)" line, exit 143). Ray
    sets it through `ray._private.utils.set_sigterm_handler`, made a no-op here; should a
    later Ray set it another way, the sweep takes its handler back right after. Its driver
    also puts a handler of C++ on SIGTERM (and on crashes) as it connects, which dumps a
    stack and aborts (exit 134): not while `ray_constants` says to leave it out, as here."""
    try:
        from ray._private import ray_constants, utils
    except ImportError:
        yield
        return
    original = getattr(utils, "set_sigterm_handler", None)
    utils.set_sigterm_handler = lambda handler: None
    no_handler = getattr(ray_constants, FAILURE_HANDLER, False)
    setattr(ray_constants, FAILURE_HANDLER, True)
    try:
        yield
    finally:
        setattr(ray_constants, FAILURE_HANDLER, no_handler)
        if original is not None:
            utils.set_sigterm_handler = original
