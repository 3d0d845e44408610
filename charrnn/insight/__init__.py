"""insight/: looking inside models and runs. Scores on a text (scores.py, for `eval`), the cells'
activations (neurons.py, shown by neurons_view.py), loss curves (plot.py) and the runs table
(runs.py).

May import: store, data, model, config, errors, machine.
"""
