"""Streaming a trained run at batch 1, the state explicit: `symbols.py` parses and lays out
text (no TensorFlow), `model.py` is the stateless step and the stream loop, `state.py` the
state files, `predictor.py` the Python API, `export.py` the verified SavedModel."""
