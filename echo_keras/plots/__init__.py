"""Figures: `figure.py` draws the tutorial's figure of a run (no TensorFlow), `drawing.py` is
the live plot's drawing process (no TensorFlow), `live.py` the training callback that feeds it."""
