"""echo-keras: a stateful Keras LSTM that learns the echo task with truncated BPTT."""

__version__ = "0.1.0"
