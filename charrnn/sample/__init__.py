"""sample/: text out of a model. Generation (generate.py: prime, temperature / top-k / top-p,
stop strings, streaming) and the engines that compute the next character's logits
(engines.py picks one: torch_engine.py, or numpy_engine.py, the fused NumPy step).

May import: store, data, model, config, errors, machine.
"""
