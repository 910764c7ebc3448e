"""The run folder, without TensorFlow: `folder.RunFolder` is the one entry point (lock, status,
swap, recovery, consistent reads); `files.py` holds the file formats, `fileio.py` every
atomic write and untrusted read, `lock.py` the writer's lock."""
