"""train/: a run. Planning it (plan.py: new, resume, overwrite, init-from, engine); the loop
(trainer.py: set-up and the loop) with its parts (step.py: one TBPTT step, clipping, non-finite
steps; metrics.py: evaluations and the metrics file; agreement.py: what the processes agree on;
schedule.py: limits, learning rate, the time budget; run_state.py: saving and restoring its
state; live_samples.py; thread_use.py); the validation loss (evaluation.py), memory and precision
(resources.py), resuming on another number of processes (resume.py); one writer per run folder
(runlock.py), several processes (distributed.py) and the hand-written NumPy gradients
(numpy_engine.py).

May import: store, data, model, numpy_ref, config, errors, machine; and sample/, for the live
samples shown during training (DESIGN.md's table puts sample above train; sample/ imports
nothing of train/, so there is no cycle).
"""
