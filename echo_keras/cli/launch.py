"""The console script `echo-keras` (and `python -m echo_keras`): signals held back until
the app runs, the process marked as ours (`startup`), then the app."""

from __future__ import annotations

from echo_keras import signals, startup


def main() -> None:
    """The console script, and `python -m echo_keras`. SIGINT, SIGTERM and SIGHUP are held
    back while the app and its libraries load; the app takes them as soon as it runs
    (`app.main`), so a signal at any moment ends the command with one line and exit status
    128 + signal, never a traceback or a silent death."""
    signals.hold()
    startup.own_process()
    from echo_keras.cli.app import main as run

    run()
