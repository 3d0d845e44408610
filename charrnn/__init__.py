"""charrnn: character-level recurrent language models (LSTM, GRU, vanilla RNN).

The package is importable without torch being imported: the command line stays fast to start,
and torch is loaded only by the modules that need it.
"""

__version__ = "0.1.0"
