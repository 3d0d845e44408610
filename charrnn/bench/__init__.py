"""bench/: `charrnn bench`. Speed against the machine and a textbook loop, run overheads and
quality (measure.py: the whole run, with training.py, sampling.py and tokenising.py), training
on a busy machine (load.py) and `charrnn serve` under load (serve.py).

May import: training, sample, store, data, model, config, errors, machine.
"""
