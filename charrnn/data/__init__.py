"""data/: text in, ids out. The vocabulary (vocab.py), reading and decoding text (corpus.py,
decoding.py), the prepared cache of ids and its entry records (prepare.py, cache_entry.py),
TBPTT batches (batches.py) and the default corpus (datasets.py).

May import: config, errors, machine. Nothing here knows about models, runs or the command line.
"""
