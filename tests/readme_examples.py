"""The README's examples, run in order on a fresh copy of the repository, as a newcomer would.

What counts as an example, in the README's order:

- every line of a ```sh block, its trailing `# comment` dropped;
- every `$ command` line of a plain ``` block, with the output shown below it;
- every ```python block, run with `python -` from the repository's root; a plain ``` block
  right after it (nothing but blank lines between) shows its output.

They run one after another in one bash process (so `source .venv/bin/activate` lasts), in a
copy of the repository's files (tracked, or untracked and not ignored: what a clone of the
committed tree holds) whose `.venv` links to the environment running this module: `make
install` finds it up to date and installs nothing. The commands get a HOME, a TMPDIR and a
RAY_TMPDIR of their own, PYTHONPATH naming the copy (so the copy's code runs, as an editable
install of the clone would make it), and a PATH without the environment, which only `source
.venv/bin/activate` brings, as on a fresh clone.

Checked: every example exits 0; nothing is written into the copy outside runs/ (and .venv and
Python's caches); the files an example's comment or flags name exist after it; the output the
README shows matches, label for label, with numbers exact except those a machine changes
(timings, and evaluation numbers within MEASURED's ranges); TMPDIR and RAY_TMPDIR are empty at
the end and ~/.ray was never made.

`make readme` runs every example exactly as written (`python -m tests.readme_examples`), but
for those ALWAYS_SKIPPED; tests/test_readme.py runs them with SUITE_CHANGES, which keep each
long command as written and append flags that make it short.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import select
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests import zygote

REPO = Path(__file__).resolve().parent.parent


# --- what the README holds -----------------------------------------------------------------


@dataclass
class Example:
    """One example: a shell command, or a python block (its code in `text`)."""

    line: int  # the README's line of the command (of the block's first line for python)
    kind: str  # "sh" (a line of a sh block), "session" (a `$` line), "python"
    text: str  # as written, without its comment
    comment: str = ""  # an sh line's trailing comment, without the `#`
    shown: list[str] | None = None  # the output the README shows for it

    @property
    def key(self) -> str:
        """How the tables below name it: the command, or a python block's first line."""
        return self.text.splitlines()[0]


@dataclass
class ShownOutput:
    """A plain block showing the output of an earlier example (see SHOWN_OUTPUT_OF)."""

    line: int
    command: str
    shown: list[str]


FENCE = re.compile(r"^(\s*)```(\w*)\s*$")


def _blocks(text: str):
    """(first line of the body, language, body lines dedented, line after the closing fence)."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, language = len(match.group(1)), match.group(2)
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        body = [line[indent:] if line[:indent].isspace() else line for line in lines[i + 1 : j]]
        yield i + 2, language, body, j + 2
        i = j + 1


def split_comment(line: str) -> tuple[str, str]:
    """(command, comment) of a shell line: a `#` that starts a word outside quotes begins the
    comment."""
    quote, i = None, 0
    while i < len(line):
        char = line[i]
        if char == "\\" and quote != "'":
            i += 2  # an escaped character, quoted or not
            continue
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1 :].strip()
        i += 1
    return line.rstrip(), ""


def parse(text: str) -> list[Example | ShownOutput]:
    """Every example of the README, in order, with the outputs it shows."""
    items: list[Example | ShownOutput] = []
    lines = text.splitlines()
    python_block, previous_end = None, 0
    for start, language, body, end in _blocks(text):
        between = lines[previous_end - 1 : start - 2]
        follows_python = python_block is not None and not any(line.strip() for line in between)
        python_block, previous_end = None, end
        if language == "sh":
            for offset, raw in enumerate(body):
                command, comment = split_comment(raw)
                if command.strip():
                    items.append(Example(start + offset, "sh", command.strip(), comment))
        elif language == "python":
            python_block = Example(start, "python", "\n".join(body) + "\n")
            items.append(python_block)
        elif language == "" and any(line.startswith("$ ") for line in body):
            session = None
            for offset, raw in enumerate(body):
                if raw.startswith("$ "):
                    command, comment = split_comment(raw[2:])
                    session = Example(start + offset, "session", command.strip(), comment, [])
                    items.append(session)
                elif session is not None:
                    session.shown.append(raw)
        elif language == "" and follows_python:
            items[-1].shown = list(body)
        elif language == "" and body:
            for prefix, command in SHOWN_OUTPUT_OF.items():
                if body[0].startswith(prefix):
                    items.append(ShownOutput(start, command, list(body)))
    for item in items:
        while item.shown and not item.shown[-1].strip():
            item.shown.pop()
    return items


# --- what runs as written, and what not ----------------------------------------------------


@dataclass(frozen=True)
class Change:
    """How an example is run instead of as written, and why."""

    why: str
    append: str = ""  # flags appended to the command (the last of a repeated flag wins)
    replace: tuple[tuple[str, str], ...] = ()  # (old, new) in a python block
    skip: bool = False
    reuse: bool = False  # not run again: the output of its last run is compared


# Never run, by `make readme` either.
ALWAYS_SKIPPED = {
    "ray start --head --port 6379": Change(
        "starts a Ray head listening beyond the loopback, for other machines to join; "
        "tests/test_sweep.py runs a sweep on a head listening on 127.0.0.1 only",
        skip=True,
    ),
    "ray start --address HEAD:6379": Change(
        "runs on the cluster's other machines; HEAD is the reader's", skip=True
    ),
    "echo-keras sweep --address auto": Change("needs the head above", skip=True),
    "from echo_keras.callbacks import BatchLossRecorder, ResetStatesAtEpochStart": Change(
        "a fragment for a Keras model of the reader's own (x, batch_size and model are theirs)",
        skip=True,
    ),
}

# A local sweep reduced to two points of one shape, one short epoch each, on one worker: it
# still starts Ray, trains, evaluates and writes results.csv and heatmap.png in seconds.
SMALL_SWEEP = (
    "--echo-step 1-2 --window 3 --state-size 4 --seeds 1 --epochs 1 --series-length 600 --workers 1"
)
# Short training that still draws the live figure: 333 batches, a figure every 100.
SHORT_TRAINING = "--series-length 5000"

# The test suite runs these instead of as written: the whole suite has about four minutes on
# two cores, and these would take minutes of it. Every other example runs as written.
# A key "$ COMMAND" names the `$` example only, a plain one every example of that command.
SUITE_CHANGES = {
    "make test": Change("the suite itself: run here, it would run itself again", skip=True),
    "$ echo-keras evaluate": Change(
        "the same command on the same run as the Commands block's, which just printed it",
        reuse=True,
    ),
    "$ echo-keras evaluate --run-dir runs/text": Change(
        "the same command on the same run as the block above it, which just ran it",
        reuse=True,
    ),
    "$ echo-keras evaluate --run-dir runs/text --reset-each-window": Change(
        "the same command on the same run as the block above it, which just ran it",
        reuse=True,
    ),
    "echo-keras sweep": Change(
        "the default grid, 36 points, takes about 40 s on two cores", append=SMALL_SWEEP
    ),
    "echo-keras sweep --out runs/big --echo-step 1-4 --window 5,10 --state-size 4,16 --seeds 2": (
        Change("32 points take about as long as the default grid", append=SMALL_SWEEP)
    ),
    "echo-keras train --run-dir runs/long --epochs 20 --json": Change(
        "20 epochs of 50,000 symbols: 10-20 s", append=SHORT_TRAINING
    ),
    "echo-keras train --run-dir runs/live --plot-every 100": Change(
        "5 epochs of 50,000 symbols with the live figure: 10-15 s", append=SHORT_TRAINING
    ),
    "import echo_keras as ek": Change(
        "5 epochs of 50,000 symbols, evaluated twice and exported: 15-30 s",
        replace=(
            (
                "ek.TrainConfig(num_epochs=5, echo_step=3)",
                "ek.TrainConfig(num_epochs=1, total_series_length=1500, echo_step=3)",
            ),
        ),
    ),
}

# A plain block (no `$`) that starts with this shows the output of the last run of that command.
SHOWN_OUTPUT_OF = {"Trained 5 epochs (": "echo-keras train --overwrite"}

# Output whose numbers a machine changes within a range (see `close`); other numbers are exact.
MEASURED = ("echo-keras evaluate", "echo-keras train")

# What `make run` makes (its RUN_DIR), beside what comments and flags name.
MADE_BY = {"make run": ("runs/echo/model.keras", "runs/echo/plot.png")}

# What the examples may write in the copy: runs/, and what .gitignore lists for tools (the
# environment, Python's caches, the caches `make test` leaves).
ALLOWED = ("runs", ".venv", ".pytest_cache", ".hypothesis")
ALLOWED_ANYWHERE = "__pycache__"


def command_for(example: Example, changes: dict[str, Change]) -> tuple[str | None, Change | None]:
    """(what to run, the change applied): None to skip."""
    change = ALWAYS_SKIPPED.get(example.key) or changes.get(example.key)
    if example.kind == "session":
        change = changes.get(f"$ {example.key}", change)
    if change is None:
        return example.text, None
    if change.skip:
        return None, change
    text = example.text
    for old, new in change.replace:
        assert old in text, f"README line {example.line}: {old!r} is gone; update the change"
        text = text.replace(old, new)
    if change.append:
        text = f"{text} {change.append}"
    return text, change


# --- comparing outputs ---------------------------------------------------------------------

NUMBER = re.compile(r"\d+(?:\.\d+)?(?:e[-+]?\d+)?")
TIMING = re.compile(r" (s|batches/s)\b")  # "in 1.7 s", "1959 batches/s": any value


def close(shown: float, actual: float) -> bool:
    """A measured number as the README shows it: near 1 stays above 0.99, near 0 stays below
    0.01, anything else within 0.05 (chance, 0.5, is 0.45 to 0.55)."""
    if shown >= 0.99:
        return actual >= 0.99
    if shown <= 0.01:
        return actual <= 0.01
    return abs(actual - shown) <= 0.05


def _number_matches(shown: str, actual: str, after: str, measured: bool) -> bool:
    if TIMING.match(after):
        return True
    if "e" in shown:  # a difference, such as export's "within 1.5e-07 of predict"
        return float(actual) <= 1e-5
    if "." in shown and measured:
        return close(float(shown), float(actual))
    return shown == actual


def compare(shown: list[str], actual: list[str], measured: bool = False) -> list[str]:
    """What differs between the output the README shows and what was printed: every line's
    words exactly, its numbers by `_number_matches`."""
    shown = [line.rstrip() for line in shown]
    actual = [line.rstrip() for line in actual]
    if len(shown) != len(actual):
        return [f"shows {len(shown)} lines, printed {len(actual)}:\n" + "\n".join(actual)]
    problems = []
    for want, got in zip(shown, actual, strict=True):
        if NUMBER.sub("#", want) != NUMBER.sub("#", got):
            problems.append(f"shows {want!r}, printed {got!r}")
            continue
        for a, b in zip(NUMBER.finditer(want), NUMBER.finditer(got), strict=True):
            if not _number_matches(a.group(), b.group(), want[a.end() :], measured):
                problems.append(f"shows {want!r}, printed {got!r} ({a.group()} -> {b.group()})")
                break
    return problems


# --- the files an example promises ---------------------------------------------------------

PATH_IN_TEXT = re.compile(r"(?<![\w/.-])runs/[\w./-]*[\w/]")
BARE_NAME = re.compile(r"(?<![\w/.-])[\w-]+\.(?:png|csv|json|npz|svg|keras)\b")
FLAG_PATHS = ("--run-dir", "--out", "--state-out")


def promised_paths(example: Example) -> list[str]:
    """Paths that exist once `example` ran: those its comment names (`runs/sweep/results.csv,
    heatmap.png`), the folders its flags name (a trained run holding model.keras), the `runs/`
    strings of a python block, and MADE_BY's."""
    paths = list(MADE_BY.get(example.text, ()))
    if example.kind == "python":
        paths += re.findall(r"""["'](runs/[^"']+)["']""", example.text)
        return list(dict.fromkeys(paths))
    folder = None
    for match in re.finditer(f"{PATH_IN_TEXT.pattern}|{BARE_NAME.pattern}", example.comment):
        name = match.group().rstrip("/.")
        if name.startswith("runs/"):
            paths.append(name)
            folder = str(Path(name).parent) if Path(name).suffix else name
        elif folder:
            paths.append(f"{folder}/{name}")
    words = shlex.split(example.text)
    flags = dict(itertools.pairwise(words))
    paths += [value for flag, value in flags.items() if flag in FLAG_PATHS]
    if words[:2] == ["echo-keras", "train"]:
        paths.append(f"{flags.get('--run-dir', 'runs/echo')}/model.keras")
    return list(dict.fromkeys(paths))


# --- running -------------------------------------------------------------------------------


@dataclass
class Step:
    example: Example
    command: str | None  # what ran (None: skipped)
    change: Change | None
    status: int | None = None
    seconds: float = 0.0
    cpu: float = 0.0  # CPU seconds of the processes it ran (those the shell waited for)
    stdout: str = ""
    stderr: str = ""


@dataclass
class Report:
    steps: list[Step] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what `_tolerated` lets pass
    seconds: float = 0.0


def _children_cpu(times: str) -> float:
    """User + system seconds of the shell's children, from bash's `times` (its second line,
    `0m1.250s 0m0.120s`)."""
    lines = times.splitlines()
    if len(lines) < 2:
        return 0.0
    total = 0.0
    for value in lines[1].split():
        minutes, _, rest = value.rstrip("s").partition("m")
        total += 60 * float(minutes) + float(rest)
    return total


class Shell:
    """One bash process; each command's exit status comes back on a pipe of its own."""

    def __init__(self, cwd: Path, env: dict, logs: Path, preamble: str = ""):
        self.logs = logs
        self.cpu = 0.0  # CPU seconds of the commands so far
        self.read_end, write_end = os.pipe()
        self.write_end = write_end
        with open(logs / "shell.out", "w") as out, open(logs / "shell.err", "w") as err:
            self.process = subprocess.Popen(
                ["bash", "--noprofile", "--norc"],
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
                cwd=cwd,
                env=env,
                pass_fds=(write_end,),
                start_new_session=True,  # its own process group, to stop it whole
                text=True,
            )
        os.close(write_end)
        self.process.stdin.write(preamble)

    def run(self, number: int, command: str, python: bool, timeout: float) -> Step:
        out, err = self.logs / f"{number}.out", self.logs / f"{number}.err"
        if python:
            tag = "README_PYTHON_BLOCK_END"
            script = f"python - >{shlex.quote(str(out))} 2>{shlex.quote(str(err))} <<'{tag}'\n"
            script += f"{command}{tag}\n"
        else:
            script = f"{{\n{command}\n}} </dev/null >{shlex.quote(str(out))} "
            script += f"2>{shlex.quote(str(err))}\n"
        times = self.logs / f"{number}.times"  # the shell's CPU seconds, and its children's
        script += (
            f'status=$?; times >{shlex.quote(str(times))}; echo "$status" >&{self.write_end}\n'
        )
        started = time.monotonic()
        self.process.stdin.write(script)
        self.process.stdin.flush()
        answer = b""
        while not answer.endswith(b"\n"):
            left = started + timeout - time.monotonic()
            if left <= 0 or not select.select([self.read_end], [], [], left)[0]:
                self.stop()
                raise TimeoutError(f"still running after {timeout:.0f} s")
            chunk = os.read(self.read_end, 64)
            if not chunk:
                raise RuntimeError(f"the shell ended: {(self.logs / 'shell.err').read_text()}")
            answer += chunk
        seconds = time.monotonic() - started
        read = lambda path: path.read_text(errors="replace") if path.exists() else ""  # noqa: E731
        cpu, self.cpu = _children_cpu(read(times)) - self.cpu, _children_cpu(read(times))
        return Step(
            None, command, None, int(answer), seconds, cpu, stdout=read(out), stderr=read(err)
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
            except ProcessLookupError:
                pass

    def close(self) -> None:
        try:
            self.process.stdin.close()
            self.process.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            self.stop()
        os.close(self.read_end)


IGNORED_WITHOUT_GIT = {".git", ".venv", "runs", "__pycache__", ".pytest_cache", ".hypothesis"}


def repository_files(repo: Path) -> list[str]:
    """The files a clone of the committed tree would hold: tracked ones, and untracked ones
    that git does not ignore (so a new file counts before it is committed)."""
    listed = subprocess.run(
        ["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
    )
    if listed.returncode == 0:
        names = sorted(set(listed.stdout.decode().split("\0")) - {""})
        return [name for name in names if os.path.lexists(repo / name)]
    names = []
    for folder, folders, files in os.walk(repo):
        folders[:] = [f for f in folders if f not in IGNORED_WITHOUT_GIT and ".egg-info" not in f]
        names += [str(Path(folder, name).relative_to(repo)) for name in files]
    return sorted(names)


def make_copy(repo: Path, copy: Path, venv: Path) -> None:
    """`repo`'s files in `copy`, with a `.venv` whose entries link to `venv`'s and a fresh
    `.installed` stamp, so that `make install` has nothing to do."""
    for name in repository_files(repo):
        target = copy / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / name, target, follow_symlinks=False)
    (copy / ".venv").mkdir()
    for entry in venv.iterdir():
        if entry.name != ".installed":
            (copy / ".venv" / entry.name).symlink_to(entry)
    (copy / ".venv" / ".installed").touch()
    # The shared environment must never be installed into from a copy.
    stamp = subprocess.run(["make", "-q", ".venv/.installed"], cwd=copy, capture_output=True)
    if stamp.returncode != 0:
        raise RuntimeError(f"make would install into {venv}: {stamp.stderr.decode()}")


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under `root` (links not followed): a file's size and mtime, a folder's type."""
    found = {}
    for folder, folders, files in os.walk(root):
        for name in folders + files:
            path = Path(folder, name)
            info = path.lstat()
            kind = stat.S_IFMT(info.st_mode)
            rel = str(path.relative_to(root))
            found[rel] = (
                (kind,) if stat.S_ISDIR(info.st_mode) else (kind, info.st_size, info.st_mtime_ns)
            )
    return found


def _allowed(path: str) -> bool:
    parts = Path(path).parts
    return parts[0] in ALLOWED or ALLOWED_ANYWHERE in parts


def environment(copy: Path, home: Path, tmp: Path, ray_tmp: Path) -> dict:
    venv_bins = {str(Path(sys.prefix) / "bin"), str((Path(sys.prefix) / "bin").resolve())}
    if os.environ.get("VIRTUAL_ENV"):
        venv_bins.add(str(Path(os.environ["VIRTUAL_ENV"]) / "bin"))
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p not in venv_bins]
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("ECHO_KERAS_", "PYTEST_", "RAY_", "XDG_"))
        and name not in ("VIRTUAL_ENV", "PYTHONHOME", "MPLCONFIGDIR", "KERAS_BACKEND", "KERAS_HOME")
    }
    env.update(
        PATH=os.pathsep.join(path),
        HOME=str(home),
        TMPDIR=str(tmp),
        RAY_TMPDIR=str(ray_tmp),
        PYTHONPATH=str(copy),
    )
    return env


# Tolerated in TMPDIR at the end, and reported as notes: pytest's own folders
# (`pytest-of-USER`), which it keeps for its last three sessions, when `make test` ran.
# (A local sweep waits for its workers to exit and removes their private folders.)


def _tolerated(path: Path) -> bool:
    return path.name.startswith("pytest-of-")


def _processes_naming(folder: Path) -> list[int]:
    """The processes whose command line names `folder` (a local Ray's, under RAY_TMPDIR)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and str(folder).encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_examples(
    readme: Path,
    repo: Path,
    work: Path,
    changes: dict[str, Change],
    *,
    skip: tuple[str, ...] = (),
    timeout: float = 600,
    on_step: Callable[[int, int, Step], None] | None = None,
    warm: bool = False,
) -> Report:
    """Run `readme`'s examples in order in a copy of `repo` made under `work` (which must be
    empty); a Report with every problem found. Stops at the first example that fails.

    With `warm` (the suite's way), a command `echo-keras` found on the PATH runs as a fork of
    a process that has loaded TensorFlow already (tests/zygote.py), saving the 3.5 s of its
    import (its CPU is then that process's, not counted in the step's); `make readme` runs
    it as written."""
    report = Report()
    started = time.monotonic()
    items = parse(readme.read_text())
    examples = [item for item in items if isinstance(item, Example)]
    copy, home, tmp, logs = (work / name for name in ("copy", "home", "tmp", "logs"))
    for folder in (copy, home, tmp, logs):
        folder.mkdir()
    if sys.prefix == sys.base_prefix:
        raise RuntimeError("run this from the project's virtual environment (.venv/bin/python)")
    make_copy(repo, copy, Path(sys.prefix))
    before = snapshot(copy)
    ray_tmp = Path(tempfile.mkdtemp(prefix="ekr-", dir="/tmp"))  # short: Ray's socket paths
    env, preamble, server = environment(copy, home, tmp, ray_tmp), "", None
    if warm:
        server = zygote.Zygote(tempfile.mkdtemp(prefix="ekz-", dir="/tmp"), env)
        env[zygote.ZYGOTE_ENV] = server.path
        relay = f"{shlex.quote(str(copy / '.venv/bin/python'))} {shlex.quote(zygote.__file__)}"
        preamble = (  # what PATH finds, as a fork; not found on the PATH: as bash says it
            "echo-keras() { if found=$(type -P echo-keras); then "
            f'{relay} script "$found" "$@"; else command echo-keras "$@"; fi; }}\n'
        )
    shell = Shell(copy, env, logs, preamble)
    last_output: dict[str, Step] = {}
    try:
        for number, item in enumerate(items, 1):
            if isinstance(item, ShownOutput):
                step = last_output.get(item.command)
                if step is None:
                    report.problems.append(f"README line {item.line}: {item.command} never ran")
                else:
                    actual = (step.stdout + step.stderr).splitlines()
                    for problem in compare(item.shown, actual, item.command.startswith(MEASURED)):
                        report.problems.append(f"README line {item.line}: {problem}")
                continue
            command, change = command_for(item, changes)
            if item.key in skip:
                command, change = None, Change("skipped on request", skip=True)
            step = Step(item, command, change)
            if change is not None and change.reuse:
                if item.text not in last_output:
                    report.problems.append(f"README line {item.line}: {item.text} never ran")
                    break
                earlier = last_output[item.text]
                step.status, step.stdout, step.stderr = 0, earlier.stdout, earlier.stderr
            elif command is not None:
                if (
                    item.kind != "python"
                    and subprocess.run(["bash", "-n", "-c", command]).returncode
                ):
                    report.problems.append(f"README line {item.line}: not a shell command")
                    break
                try:
                    ran = shell.run(number, command, item.kind == "python", timeout)
                except TimeoutError as error:
                    report.problems.append(f"README line {item.line}: `{command}` {error}")
                    break
                step.status, step.seconds, step.cpu = ran.status, ran.seconds, ran.cpu
                step.stdout, step.stderr = ran.stdout, ran.stderr
            report.steps.append(step)
            if on_step:
                on_step(len(report.steps), len(examples), step)
            if command is None:
                continue
            where = f"README line {item.line}: `{item.key}`"
            if step.status != 0:
                output = _tail(step.stdout + "\n" + step.stderr)
                failed = f"{where} exited {step.status}"
                report.problems.append(f"{failed}:\n{output}" if output else failed)
                break
            last_output[item.text] = step
            for path in promised_paths(item):
                if not (copy / path).exists():
                    report.problems.append(f"{where} did not make {path}")
            if item.shown is not None:
                # A python block's shown output is its own, without TensorFlow's log lines.
                printed = step.stdout if item.kind == "python" else step.stdout + step.stderr
                actual = printed.splitlines()
                for problem in compare(item.shown, actual, item.text.startswith(MEASURED)):
                    report.problems.append(f"{where}: {problem}")
    finally:
        shell.close()
        if server is not None:
            server.stop()
            shutil.rmtree(Path(server.path).parent, ignore_errors=True)
        after = snapshot(copy)
        for path in sorted(set(before) | set(after)):
            if before.get(path) != after.get(path) and not _allowed(path):
                what = "removed" if path not in after else "changed" if path in before else "made"
                report.problems.append(f"the examples {what} {path}, outside runs/")
        for folder, name in ((tmp, "TMPDIR"), (ray_tmp, "RAY_TMPDIR")):
            left = sorted(p.name for p in folder.iterdir() if not _tolerated(p))
            if left:
                report.problems.append(f"left in {name}: {', '.join(left)}")
            report.notes += [
                f"left in {name}: {p.name}" for p in folder.iterdir() if p.name not in left
            ]
        if _processes_naming(ray_tmp):
            report.problems.append(f"Ray outlived the examples: {_processes_naming(ray_tmp)}")
        shutil.rmtree(ray_tmp, ignore_errors=True)
        if (home / ".ray").exists():
            report.problems.append("~/.ray was made (a local sweep must leave it untouched)")
        report.seconds = time.monotonic() - started
    return report


# --- make readme ---------------------------------------------------------------------------


def _print_step(number: int, total: int, step: Step) -> None:
    first = step.example.key
    if step.command is None:
        print(
            f"[{number}/{total}] line {step.example.line}: {first}\n    skipped: {step.change.why}"
        )
        return
    how = f"\n    run as: {step.command.splitlines()[0]}" if step.change else ""
    print(f"[{number}/{total}] line {step.example.line}: {first}{how}")
    if step.change and step.change.reuse:
        print(f"    not run again: {step.change.why}")
    else:
        print(f"    exit {step.status} in {step.seconds:.1f} s ({step.cpu:.1f} s of CPU)")
    if step.status:
        print(_tail(step.stdout + "\n" + step.stderr, 30))
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip", action="append", default=[], help="a command not to run")
    parser.add_argument(
        "--suite", action="store_true", help="with the test suite's changes, and its warm forks"
    )
    parser.add_argument("--keep", action="store_true", help="keep the copy; print its folder")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="echo-keras-readme-"))
    changes = SUITE_CHANGES if args.suite else {}
    try:
        report = run_examples(
            REPO / "README.md",
            REPO,
            work,
            changes,
            skip=tuple(args.skip),
            timeout=3600,
            on_step=_print_step,
            warm=args.suite,
        )
    finally:
        if args.keep:
            print(f"the copy: {work / 'copy'}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    skipped = sum(step.command is None for step in report.steps)
    reused = sum(bool(step.change and step.change.reuse) for step in report.steps)
    ran = len(report.steps) - skipped - reused
    print(f"\n{ran} examples ran, {reused} compared again, {skipped} skipped")
    cpu = sum(step.cpu for step in report.steps)
    print(f"in {report.seconds:.0f} s, {cpu:.0f} s of CPU")
    for note in report.notes:
        print(f"note (tolerated): {note}")
    for problem in report.problems:
        print(f"PROBLEM: {problem}")
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
