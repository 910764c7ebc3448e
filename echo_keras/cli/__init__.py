"""The `echo-keras` command line: `app.py` builds the Typer app from one module per command.

Each command module only parses its options, calls the library and prints. Library errors
(`errors.EchoKerasError`) reach `app.py`, which prints each as one line and exits with its
status, wording config fields as flags (`options.py`).
"""
