"""The README's examples run in order on a fresh copy of the repository, and print what it shows.

The runner is tests/readme_examples.py. Here, in the suite, the long examples run with the
changes listed in its SUITE_CHANGES (each long command as written, with flags appended that
make it short: a sweep of two points, training on 5,000 symbols), `make test` (the suite
itself) is left out, and the cluster example is never run (its head would listen beyond the
loopback); `make readme` runs every other example exactly as written.
"""

from __future__ import annotations

import shutil

import pytest

from tests import readme_examples as rx

README = rx.REPO / "README.md"


def examples():
    return [item for item in rx.parse(README.read_text()) if isinstance(item, rx.Example)]


# --- reading the README (fast) -------------------------------------------------------------


def test_the_quick_start_comes_first_and_says_how_to_call_the_tool():
    keys = [example.key for example in examples()]
    assert keys[:4] == [
        "make run",
        "make test",
        "source .venv/bin/activate",
        ".venv/bin/echo-keras --help",
    ]
    assert keys.index("echo-keras evaluate") < keys.index("echo-keras predict 011010011101")


def test_sessions_and_python_blocks_carry_the_output_they_show():
    found = {example.text: example for example in examples()}
    assert found["echo-keras predict 011010011101"].shown == [
        "101111010011",
        "Accuracy 0.8889 over 9 positions (the echo of this input's symbols, from position 3 on)",
    ]
    assert found["echo-keras evaluate --reset-each-window"].shown[1].split() == [
        "state",
        "zeroed",
        "before",
        "every",
        "window",
    ]
    (snippet,) = [e for e in examples() if e.kind == "python" and "runs/echo_export" in e.text]
    assert snippet.shown == ["[1 0 1 1 1]", "[1 0 1]", "[0 0 1 1]"]
    summaries = [i for i in rx.parse(README.read_text()) if isinstance(i, rx.ShownOutput)]
    assert [s.command for s in summaries] == ["echo-keras train --overwrite"]


def test_every_change_names_an_example_and_every_sweep_is_made_short():
    keys = {example.key for example in examples()}
    keys |= {f"$ {example.key}" for example in examples() if example.kind == "session"}
    for table in (rx.SUITE_CHANGES, rx.ALWAYS_SKIPPED):
        assert set(table) <= keys, "the README changed: update the table"
    for example in examples():
        command, change = rx.command_for(example, rx.SUITE_CHANGES)
        if example.key.startswith("echo-keras sweep") and command is not None:
            assert change is not None or "--resume" in command, example.key
        if command is not None and example.kind == "python":
            assert command.startswith(example.key)


def test_the_files_an_example_promises_come_from_its_comment_and_flags():
    promised = {example.text: rx.promised_paths(example) for example in examples()}
    assert promised["make run"][:2] == ["runs/echo/model.keras", "runs/echo/plot.png"]
    assert promised["echo-keras plot"] == ["runs/echo/plot.png"]
    assert "runs/live/live.png" in promised["echo-keras train --run-dir runs/live --plot-every 100"]
    sweep = {
        path for e in examples() if e.text == "echo-keras sweep" for path in rx.promised_paths(e)
    }
    assert {"runs/sweep/results.csv", "runs/sweep/heatmap.png"} <= sweep
    state = "echo-keras predict 0110100 --state-out runs/state.npz"
    assert promised[state] == ["runs/state.npz"]
    (api,) = [e for e in examples() if e.key == "import echo_keras as ek"]
    assert "runs/api-export" in rx.promised_paths(api)


@pytest.mark.parametrize(
    "line, command, comment",
    [
        ("make run    # creates .venv", "make run", "creates .venv"),
        ("echo 'a # b' # c", "echo 'a # b'", "c"),
        ('echo "a#b"', 'echo "a#b"', ""),
        ("ls x#y", "ls x#y", ""),
        ('echo "a\\" # b" c # d', 'echo "a\\" # b" c', "d"),
        ("echo a \\# b", "echo a \\# b", ""),
    ],
)
def test_comments_are_dropped_outside_quotes(line, command, comment):
    assert rx.split_comment(line) == (command, comment)


def test_outputs_compare_words_exactly_and_numbers_as_measured():
    shown = ["  loss      0.0016", "  accuracy  0.8790", "  windows   666"]
    measured = ["  loss      0.0031", "  accuracy  0.8512", "  windows   666"]
    assert rx.compare(shown, measured, measured=True) == []
    assert rx.compare(shown, measured, measured=False) != []  # exact unless measured
    assert rx.compare(shown, [*shown[:2], "  windows   665"], True) != []  # a count is exact
    assert rx.compare(shown, ["  loss      0.0210", *shown[1:]], True) != []  # not near 0
    assert rx.compare(["boundary 1.0000"], ["boundary 0.9850"], True) != []  # not near 1
    assert rx.compare(["boundary 0.4942"], ["boundary 0.5700"], True) != []  # not chance
    assert rx.compare(["in 1.7 s, 1959 batches/s"], ["in 8.6 s, 386 batches/s"]) == []
    assert rx.compare(["within 1.5e-07 of"], ["within 3.1e-06 of"]) == []
    assert rx.compare(["within 1.5e-07 of"], ["within 2.0e-04 of"]) != []
    assert rx.compare(["a", "b"], ["a"]) != []
    assert rx.compare(["state carried"], ["state zeroed"]) != []


# --- running (the failures it catches, then the README itself) -----------------------------


def test_a_failing_example_or_a_file_written_outside_runs_fails_the_run(tmp_path):
    """A README whose examples write into the repository, leave files behind, show the wrong
    output or fail: each is reported, and nothing after the failure runs."""
    repo, work = tmp_path / "repo", tmp_path / "work"
    repo.mkdir(), work.mkdir()
    shutil.copy(rx.REPO / "Makefile", repo)
    shutil.copy(rx.REPO / "pyproject.toml", repo)
    (repo / "README.md").write_text(
        "```sh\n"
        "mkdir -p runs && echo fine > runs/fine.txt   # runs/fine.txt\n"
        "echo stray > stray.txt\n"
        'echo "# more" >> Makefile\n'
        'mkdir "$TMPDIR/left" ~/.ray\n'
        "true   # runs/missing.txt\n"
        "```\n\n"
        "```\n$ echo 1 2 3\n1 2 4\n```\n\n"
        "```sh\nfalse\necho never > runs/never.txt\n```\n"
    )
    report = rx.run_examples(repo / "README.md", repo, work, {}, timeout=60)
    assert sorted(report.problems) == [
        "README line 10: `echo 1 2 3`: shows '1 2 4', printed '1 2 3' (4 -> 3)",
        "README line 15: `false` exited 1",
        "README line 6: `true` did not make runs/missing.txt",
        "left in TMPDIR: left",
        "the examples changed Makefile, outside runs/",
        "the examples made stray.txt, outside runs/",
        "~/.ray was made (a local sweep must leave it untouched)",
    ]
    assert [step.status for step in report.steps] == [0, 0, 0, 0, 0, 0, 1]
    assert not (work / "copy" / "runs" / "never.txt").exists()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_the_readme_examples_run_in_order_on_a_fresh_copy(tmp_path):
    report = rx.run_examples(README, rx.REPO, tmp_path, rx.SUITE_CHANGES, timeout=300, warm=True)
    for step in report.steps:  # shown with -s, or when the test fails
        how = f"exit {step.status} {step.seconds:5.1f} s, {step.cpu:5.1f} s CPU"
        how = "skipped" if step.command is None else how
        print(f"line {step.example.line:4}: {how:28} {step.example.key[:60]}")
    cpu = sum(step.cpu for step in report.steps)
    print(f"{report.seconds:.0f} s, {cpu:.0f} s of CPU, in all; " + "; ".join(report.notes))
    assert not report.problems, "\n\n".join(report.problems)
    ran = [step for step in report.steps if step.command is not None]
    assert len(ran) >= 20 and any(step.example.kind == "python" for step in ran)
    shutil.rmtree(tmp_path / "copy")  # its runs, sweeps and exports
