"""training/: a run. Planning it (plan.py: new, resume, overwrite, init-from, engine; sizing.py:
--size auto); the loop (trainer.py: set-up, the loop, one step, evaluation and checkpoints, read
top to bottom) and what it owns or calls: schedule.py (limits, learning rate, the time budget),
live_samples.py, thread_use.py, parts.py (batch size and model, checked before allocating),
run_state.py (saving and restoring a run's state), metrics.py (the rows it reports); the
validation loss (evaluation.py), memory, precision and loss scale (resources.py), resuming on
another number of processes (resume.py); one writer per run folder (runlock.py), several
processes (distributed.py) and the hand-written NumPy gradients (numpy_engine.py).

May import: store, data, model, numpy_ref, config, errors, machine; and sample/, for the live
samples shown during training (sample/ imports nothing of training/, so there is no cycle).
"""
