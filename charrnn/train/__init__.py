"""train/: a run. The loop (trainer.py: TBPTT, clipping, schedule, evaluation, saving its state),
one writer per run folder (runlock.py), several processes (distributed.py) and the hand-written
NumPy gradients (numpy_engine.py).

May import: store, data, model, numpy_ref, config, errors, machine; and sample/, for the live
samples shown during training (DESIGN.md's table puts sample above train; sample/ imports
nothing of train/, so there is no cycle).
"""
