"""charrnn: character-level recurrent language models (LSTM, GRU, vanilla RNN).

The package is importable without torch being imported: the command line stays fast to start,
and torch is loaded only by the modules that need it. Importing it sets OpenMP's wait policy
for the torch loaded after it (unless the environment already chooses one) and starts the
meter of other processes' CPU load: see charrnn/machine/threads.py.
"""

import time as _time

STARTED = _time.monotonic()  # when this command began: --time-budget counts from here

from charrnn.machine import threads as _threads  # noqa: E402

_threads.set_openmp_defaults()

__version__ = "0.1.0"
