"""The models `charrnn serve` serves: loaded once, at start, from the paths named on the command
line, and known from then on by name only."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from charrnn.config import ModelConfig
from charrnn.data.vocab import Vocab
from charrnn.errors import CharRNNError

PATH_KEYS = ("corpus", "out", "cache_dir", "init_from", "resume", "config")  # the saved config's paths: names only


@dataclass
class ServedModel:
    name: str
    path: Path
    weights: dict[str, np.ndarray]  # torch's names, float32: the numpy engine's, shared read-only
    vocab: Vocab
    cfg: ModelConfig
    module: Any  # the CharRNN (torch, CPU, eval mode): for scores and activations
    info: dict[str, Any]  # `charrnn info`'s fields, without paths of this machine
    created: int  # when the checkpoint was written (Unix seconds), for the OpenAI API's `created`
    engine: Any = None  # the batched generation engine of its streams (sample/batch.py)

    def __post_init__(self):
        from charrnn.cells import weights_per_char
        from charrnn.sample.batch import Engine

        if self.engine is None:
            flops = 2 * weights_per_char(
                self.cfg.cell, self.cfg.layers, self.cfg.hidden, self.cfg.embed, len(self.vocab)
            )
            from charrnn.machine.threads import FreeCores

            self.engine = Engine(self.stepper(), self.vocab, flops_per_row=flops, threads=FreeCores())

    def stepper(self):
        from charrnn.sample.engines import cpu_stepper

        return cpu_stepper(self.weights, self.cfg)

    @property
    def openai_info(self) -> dict[str, Any]:
        """The OpenAI API's model object (id, object, created, owned_by), with info's fields beside."""
        e = self.engine
        engine = {
            "active_streams": e.active,
            "steps": e.steps,
            "row_steps": e.row_steps,
            "step_seconds": e.step_seconds,
            "flops_per_row": e.flops_per_row,
        }
        return {
            "id": self.name,
            "object": "model",
            "created": self.created,
            "owned_by": "charrnn",
            **self.info,
            "engine": engine,
        }


def load_models(paths: list[Path]) -> dict[str, ServedModel]:
    """The models to serve, by name: a run folder's name (checkpoints/NAME/best.pt is NAME),
    else the file's stem; a second model of the same name gets -2, and so on."""
    from charrnn.store import checkpoint
    from charrnn.store.model_file import ModelFile, build_model, is_export, resolve_checkpoint

    models: dict[str, ServedModel] = {}
    for given in paths:
        path = resolve_checkpoint(given)
        if is_export(path):
            raise CharRNNError(
                f"{path}: serve needs a .pt checkpoint (scores and the activation view use torch), not an export"
            )
        ckpt = checkpoint.load(path)
        weights = {name: tensor.detach().float().cpu().numpy() for name, tensor in ckpt.model.items()}
        vocab = ckpt.info.vocab
        module = build_model(ModelFile(path, weights, vocab, ckpt.info.model, ckpt.info))
        base = path.parent.name if path.stem in ("best", "last") and path.parent.name else path.stem
        name, n = base, 1
        while name in models:
            n += 1
            name = f"{base}-{n}"
        models[name] = ServedModel(
            name, path, weights, vocab, ckpt.info.model, module, model_info(name, path, ckpt), int(path.stat().st_mtime)
        )
    return models


def model_info(name: str, path: Path, ckpt) -> dict[str, Any]:
    """`charrnn info`'s fields (display.checkpoint_table) as JSON."""
    from charrnn.store import checkpoint

    info = ckpt.info
    model, prog = info.model, info.progress
    best = prog.best_loss
    return {
        "name": name,
        "file": path.name,  # (the name alone: where it lies on this machine is not a client's business)
        "cell": model.cell,
        "layers": model.layers,
        "hidden": model.hidden,
        "embed": model.embed,
        "dropout": model.dropout,
        "parameters": sum(t.numel() for t in ckpt.model.values()),
        "vocab_size": len(info.vocab),
        "vocabulary": "".join(info.vocab.chars),
        "steps": prog.step,
        "epoch": prog.epoch,
        "chars_seen": prog.chars_seen,
        "best_loss_nats": best if best is not None and math.isfinite(best) else None,
        "best_bpc": best / math.log(2) if best is not None and math.isfinite(best) else None,
        "train_seconds": prog.train_seconds,
        "corpus": Path(info.corpus.path).name if info.corpus.path else None,
        "train_chars": info.corpus.train_chars,
        "config": {
            k: (Path(v).name if k in PATH_KEYS and isinstance(v, str) else v)
            for k, v in ckpt.meta["config"].items()
            if v is not None
        },  # as saved, less folders
        "saved_at": info.saved_at,
        "format_version": ckpt.format_version or checkpoint.FORMAT_VERSION,
        "charrnn_version": info.charrnn_version,
    }
