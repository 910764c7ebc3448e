"""A warm `echo-keras` for the tests' child processes: TensorFlow imported once, each command
a fork of that process.

A command line that loads TensorFlow spends about 3.5 s of CPU importing it before it does
anything; the suite starts dozens. The server (`python tests/zygote.py serve SOCKET`)
imports echo-keras's command line and TensorFlow once, then forks a child for each command
it is asked to run. The relay, `python tests/zygote.py run ARGS...`, stands for
`python -m echo_keras ARGS...` (`script PATH ARGS...`: for the console script at PATH): it
hands the server its standard streams, working folder, environment and ignored signals,
passes on every signal it receives to the child, and ends as the child ends (its exit
status, or killed by the same signal).

What a fork cannot stand in for, the relay runs for real (exec `python -m echo_keras`): no
server (`ZYGOTE_ENV` unset, or not answering), a closed standard stream, or an environment
that differs from the server's where TensorFlow, Keras or Python read it at import. A
SIGKILL cannot be passed on: the server kills the child once the relay is gone, a moment
later, so a test that kills a command with SIGKILL and reads its files after runs it for real,
as does one that reads the command's pid (the relay's is another).

This file imports only the standard library (the README's runner calls it as a script).
"""

from __future__ import annotations

import io
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading

ZYGOTE_ENV = "ECHO_KERAS_TEST_ZYGOTE"  # the server's socket, for the relay
# What Python, TensorFlow and Keras read from the environment at import: a command whose
# environment differs from the server's here runs for real.
IMPORTED = ("PYTHON", "TF_", "KERAS", "XLA", "CUDA", "OMP_", "MKL", "LD_", "MPL", "HOME",
            "TMPDIR", "TEMP", "TMP", "LANG", "LC_", "TZ", "MALLOC")  # fmt: skip
RELAYED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
           signal.SIGUSR2, signal.SIGALRM, signal.SIGCONT)  # fmt: skip
AT_START = ("PYTHONUNBUFFERED",)  # read at start, and so set in the child as the relay has it


def _imported(env: dict) -> dict:
    """What of `env` the import reads, with what echo-keras's own import sets where unset
    (`backend`: the tensorflow backend, TensorFlow's info logs hidden): a process that has
    imported echo-keras (a test's) and one about to (the server) then read alike."""
    env = {
        key: value
        for key, value in env.items()
        if key.startswith(IMPORTED) and key not in AT_START and key != ZYGOTE_ENV
    }
    env.setdefault("KERAS_BACKEND", "tensorflow")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def _send(sock: socket.socket, message: dict, fds=()) -> None:
    data = json.dumps(message).encode()
    data = struct.pack("!I", len(data)) + data
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.sendall(data)


def _receive(sock: socket.socket, fds: int = 0) -> tuple[dict | None, list[int]]:
    data, received, *_ = socket.recv_fds(sock, 1 << 16, fds) if fds else (sock.recv(1 << 16), [])
    if not data:
        return None, received
    while len(data) < 4 or len(data) < 4 + struct.unpack("!I", data[:4])[0]:
        more = sock.recv(1 << 16)
        if not more:
            return None, received
        data += more
    return json.loads(data[4:]), received


# --- the server ----------------------------------------------------------------------------


def serve(path: str) -> None:
    """Import the command line and TensorFlow, then fork a child for every request."""
    env_at_start = _imported(os.environ)
    from echo_keras import startup

    startup.own_process()
    import echo_keras.backend  # noqa: F401  (TensorFlow and Keras)
    import echo_keras.cli.app  # noqa: F401
    import echo_keras.evaluation  # noqa: F401
    import echo_keras.stream.export  # noqa: F401
    import echo_keras.stream.model  # noqa: F401
    import echo_keras.training  # noqa: F401

    # The server ends with its owner: when its stdin (a pipe from the owner) closes.
    threading.Thread(target=_end_with_stdin, daemon=True).start()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path + ".tmp")
    listener.listen(64)
    os.replace(path + ".tmp", path)  # the relay connects once it is listening
    while True:
        connection, _ = listener.accept()
        try:
            request, fds = _receive(connection, 3)
        except (OSError, ValueError):
            connection.close()
            continue
        if request is None or len(fds) != 3 or _imported(request["env"]) != env_at_start:
            for fd in fds:
                os.close(fd)
            _send_quietly(connection, {"exec": True})
            connection.close()
            continue
        pid = os.fork()
        if pid == 0:
            listener.close()
            connection.close()
            _child(request, fds)  # never returns
        for fd in fds:
            os.close(fd)
        _send_quietly(connection, {"pid": pid})
        threading.Thread(target=_watch, args=(connection, pid), daemon=True).start()


def _end_with_stdin() -> None:
    while os.read(0, 1 << 12):
        pass
    os._exit(0)


def _send_quietly(connection, message) -> None:
    try:
        _send(connection, message)
    except OSError:
        pass


def _watch(connection: socket.socket, pid: int) -> None:
    """Tell the relay how the child ended; kill the child if the relay goes first."""
    try:
        child = os.pidfd_open(pid)  # readable once the child ends
    except (AttributeError, OSError):  # no pidfd here: look every 20 ms
        child = None
    watched = [connection] if child is None else [connection, child]
    timeout = 0.02 if child is None else None
    try:
        while True:
            ready, _, _ = select.select(watched, [], [], timeout)
            ended, status = os.waitpid(pid, os.WNOHANG)
            if ended:
                _send_quietly(connection, {"status": status})
                return
            if connection in ready and not connection.recv(1):  # the relay is gone (killed):
                try:  # so is its command
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                os.waitpid(pid, 0)
                return
    finally:
        if child is not None:
            os.close(child)
        connection.close()


def _child(request: dict, fds: list[int]) -> None:
    """Become `echo-keras ARGV` as the relay would have run it."""
    code = 1
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.umask(request["umask"])
        os.environ.clear()
        os.environ.update(request["env"])
        import tempfile

        tempfile.tempdir = None  # read again from this environment
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        for signum in request["ignored"]:
            signal.signal(signum, signal.SIG_IGN)
        _standard_streams(bool(os.environ.get("PYTHONUNBUFFERED")))
        from echo_keras.cli.launch import main

        if request["script"]:  # the console script
            sys.argv = [request["script"], *request["args"]]
        else:  # `python -m echo_keras`, as Click names it in usage lines
            import echo_keras.__main__ as entry

            sys.argv = [entry.__file__, *request["args"]]
            sys.modules["__main__"].__package__ = "echo_keras"
        main()
        code = 0
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else 1
    except BaseException:  # noqa: BLE001 - as Python itself would report it
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(code)


# The error handlers Python gave this process's standard streams at its start (by locale:
# surrogateescape for stdin and stdout under C.UTF-8, strict under most others).
_ERRORS = {
    name: getattr(getattr(sys, f"__{name}__", None), "errors", default)
    for name, default in (("stdin", "strict"), ("stdout", "strict"), ("stderr", "backslashreplace"))
}


def _standard_streams(unbuffered: bool) -> None:
    """sys.stdin, stdout and stderr as Python opens them at start, on this process's fds."""
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        errors = _ERRORS[name]
        writing = fd > 0
        raw = io.FileIO(fd, "wb" if writing else "rb", closefd=False)
        buffered = raw if unbuffered and writing else (
            io.BufferedWriter(raw) if writing else io.BufferedReader(raw))  # fmt: skip
        stream = io.TextIOWrapper(
            buffered,
            encoding="utf-8",
            errors=errors,
            newline="\n",
            line_buffering=writing and (fd == 2 or raw.isatty()),
            write_through=unbuffered and writing,
        )
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


# --- the relay -----------------------------------------------------------------------------


def relay(args: list[str], script: str | None = None) -> None:
    """Run `python -m echo_keras ARGS` (with `script`, the path of the console script: it)
    in a fork of the server, or for real (see the module's doc)."""
    path = os.environ.get(ZYGOTE_ENV)
    env = {key: value for key, value in os.environ.items() if key != ZYGOTE_ENV}
    started = _started(path, args, script, env) if path and _streams_open() else None
    if started is None:
        if script:
            os.execve(script, [script, *args], env)
        os.execve(sys.executable, [sys.executable, "-m", "echo_keras", *args], env)
    pid, connection = started
    for signum in RELAYED:  # the child ignores those it was started ignoring, as it would
        signal.signal(signum, lambda signum, _: _pass_on(pid, signum))
    answer, _ = _receive(connection)  # a signal meanwhile is passed on, and the wait goes on
    status = 1 << 8 if answer is None else answer["status"]  # None: the server is gone
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    os._exit(os.waitstatus_to_exitcode(status))


def _started(path: str, args: list[str], script: str | None, env: dict):
    """(the child's pid, the connection that tells how it ended); None when the server
    cannot run this command."""
    ignored = [s for s in RELAYED if signal.getsignal(s) == signal.SIG_IGN]
    request = {
        "args": args,
        "script": script,
        "cwd": os.getcwd(),
        "env": env,
        "umask": _umask(),
        "ignored": [int(s) for s in ignored],
    }
    try:
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connection.connect(path)
        _send(connection, request, (0, 1, 2))
        answer, _ = _receive(connection)
    except OSError:
        return None
    return None if answer is None or "pid" not in answer else (answer["pid"], connection)


def _pass_on(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _streams_open() -> bool:
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            return False
    return True


# --- the owner's side ----------------------------------------------------------------------


class Zygote:
    """A server started in the background with `env`; `env[ZYGOTE_ENV]` names its socket
    once started (a relay that comes before it is listening runs its command for real)."""

    def __init__(self, folder: str, env: dict | None = None):
        self.path = os.path.join(folder, "zygote.sock")
        env = dict(os.environ if env is None else env)
        env.pop(ZYGOTE_ENV, None)
        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "serve", self.path],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd="/",
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()  # it ends with its stdin
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for path in (self.path, self.path + ".tmp"):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        serve(sys.argv[2])
    elif sys.argv[1:2] == ["run"]:
        relay(sys.argv[2:])
    elif sys.argv[1:2] == ["script"] and len(sys.argv) > 2:
        relay(sys.argv[3:], script=sys.argv[2])
    else:
        sys.exit("usage: zygote.py serve SOCKET | run ARGS... | script PATH ARGS...")
