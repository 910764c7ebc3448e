"""`python -m echo_keras` runs the command line."""

from echo_keras.cli import main

main()
