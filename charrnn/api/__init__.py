"""charrnn as a library: what `import charrnn` offers, and what the command line stands on.

    charrnn.load(path) -> Model      api/model.py: generate, stream, score, info, save
    charrnn.train(corpus, ...) -> Run  api/training.py: the `train` command's run, with callbacks
    charrnn.PlainProgress, charrnn.TensorBoard   api/callbacks.py: progress for logs and notebooks

Errors are `charrnn.CharRNNError` (subclasses for some), with the one-line messages the command
prints. Nothing in the library prints, exits or installs signal handlers.

May import: training, sample, insight, store, data, model, config, errors, machine (every part but
cli/ and serve/, which stand on it).
"""
