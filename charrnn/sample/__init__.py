"""sample/: text out of a model. The engine (batch.py: every stream a row of one batch, for
`sample` and `serve`), the draw (generate.py: prime, temperature / top-k / top-p; one stream at a
time for `play` and live samples), beam search (beam.py), and the steppers that compute the next
character's logits (engines.py picks one: packed_engine.py, numpy_engine.py, torch_engine.py).

May import: store, data, model, config, errors, machine.
"""
