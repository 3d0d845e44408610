"""store/: what is written to disk and read back. The checkpoint format (checkpoint.py) with its
typed metadata (metadata.py) and weight checks (weights.py), the NumPy export (export.py), and
atomic writes of files and folders (files.py).

May import: data, model, numpy_ref, config, errors, machine.
"""
