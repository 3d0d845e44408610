"""data/: text in, ids out. The vocabulary (vocab.py), reading and decoding text (corpus.py,
decoding.py), the prepared cache of ids, its entry records and the two passes that make it
(prepare.py, cache_entry.py, two_passes.py), TBPTT batches (batches.py) and the default corpus
(datasets.py).

May import: config, errors, machine. Nothing here knows about models, runs or the command line.
"""
