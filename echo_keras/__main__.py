"""`python -m echo_keras` runs the command line."""

from echo_keras.cli.launch import main

if __name__ == "__main__":  # the live plot's drawing process imports this module too
    main()
