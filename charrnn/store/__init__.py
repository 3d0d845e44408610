"""store/: what is written to disk and read back. The checkpoint format (checkpoint.py) with its
typed metadata (metadata.py) and weight checks (weights.py), the NumPy export (export.py), model
folders of model.safetensors + config.json that any tool opens (model_folder.py), the one way to
open any of them (model_file.py), the run folder's names and metrics (run_folder.py), and atomic
writes of files and folders (files.py).

May import: data, model, numpy_ref, config, errors, machine.
"""
