"""bench/: `charrnn bench`. Speed against the machine and a textbook loop, run overheads and
quality (measure.py), and training on a busy machine (load.py).

May import: train, sample, store, data, model, config, errors, machine.
"""
