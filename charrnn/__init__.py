"""charrnn: character-level recurrent language models (LSTM, GRU, vanilla RNN).

From Python (charrnn/api/):

    import charrnn
    run = charrnn.train("corpus.txt", time_budget=60)   # a Run: its folder, metrics, best model
    model = charrnn.load(run.best)                       # or a run folder, .pt, .npz, model folder
    print(model.generate("ROMEO:", length=200, temperature=0.7, seed=1))

The package is importable without torch being imported: the command line stays fast to start,
torch is loaded only by the modules that need it, and the names below are imported on first use.
Importing it sets OpenMP's wait policy for the torch loaded after it (unless the environment
already chooses one) and starts the meter of other processes' CPU load: see
charrnn/machine/threads.py.
"""

import time as _time

STARTED = _time.monotonic()  # when this command began: --time-budget counts from here

from charrnn.errors import CharRNNError  # noqa: E402
from charrnn.machine import threads as _threads  # noqa: E402

_threads.set_openmp_defaults()

__version__ = "0.1.0"

# name -> the module that defines it, imported when the name is first used
_LAZY = {
    "train": "charrnn.api.training",
    "Run": "charrnn.api.run",
    "Stop": "charrnn.api.run",
    "PlainProgress": "charrnn.api.callbacks",
    "TensorBoard": "charrnn.api.callbacks",
    "load": "charrnn.api.model",
    "Model": "charrnn.api.model",
    "ModelInfo": "charrnn.api.model",
    "TextScore": "charrnn.insight.scores",
    "TrainConfig": "charrnn.config",  # charrnn.train's options
    "SampleConfig": "charrnn.config",
}
__all__ = ["CharRNNError", "__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'charrnn' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
