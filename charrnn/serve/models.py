"""The models `charrnn serve` serves: loaded once, at start, from the paths named on the command
line, and known from then on by name only."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from charrnn.config import ModelConfig
from charrnn.data.vocab import Vocab
from charrnn.store.metadata import TrainingSummary

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
    # the batched generation engines of its streams, each in a process of its own (sample/engine_process.py)
    engine: Any = None
    engines: int = 1  # how many (an EnginePool of them; see there why more than one)

    def __post_init__(self):
        from charrnn.cells import weights_per_char
        from charrnn.sample.engine_process import engine_pool

        if self.engine is None:
            flops = 2 * weights_per_char(
                self.cfg.cell, self.cfg.layers, self.cfg.hidden, self.cfg.embed, len(self.vocab)
            )
            self.engine = engine_pool(
                self.weights, self.cfg, self.vocab, flops, f"charrnn-engine-{self.name}", self.engines
            )

    def stepper(self):
        """A stepper of this process's own (beam search runs here, not in the engine's process)."""
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
            "threads": e.threads_used,
            "engines": len(e.engines),
            "engines_in_use": e.using,  # (that take new streams now)
            "row_steps_by_engine": [x.row_steps for x in e.engines],
        }
        return {
            "id": self.name,
            "object": "model",
            "created": self.created,
            "owned_by": "charrnn",
            **self.info,
            "engine": engine,
        }


def load_models(paths: list[Path], engines: int = 1) -> dict[str, ServedModel]:
    """The models to serve, by name, each with `engines` engine processes: a run folder's name
    (checkpoints/NAME/best.pt is NAME; a model folder's model.safetensors is the folder's name),
    else the file's stem; a second model of the same name gets -2, and so on. Any model file
    `open_model_file` reads will do."""
    from charrnn.store.model_file import build_model, open_model_file

    models: dict[str, ServedModel] = {}
    for given in paths:
        record = open_model_file(given)
        path = record.path
        base = path.parent.name if path.stem in ("best", "last", "model") and path.parent.name else path.stem
        name, n = base, 1
        while name in models:
            n += 1
            name = f"{base}-{n}"
        module = build_model(record)  # torch, CPU: for scores and the activation view
        info = model_info(name, record)
        models[name] = ServedModel(
            name,
            path,
            record.weights,
            record.vocab,
            record.model,
            module,
            info,
            int(path.stat().st_mtime),
            engines=engines,
        )
    return models


def model_info(name: str, record) -> dict[str, Any]:
    """`charrnn info`'s fields (cli/tables.checkpoint_table) as JSON, from a ModelFile: what a
    checkpoint knows of its training, or the summary an export keeps (None where unknown)."""
    from charrnn.cells import parameter_count
    from charrnn.store.model_file import file_format

    model, info, training = record.model, record.info, record.training
    best = training.best_val_loss if training is not None else None
    known = asdict(training) if training is not None else dict.fromkeys(asdict(TrainingSummary()))
    return {
        "name": name,
        "file": record.path.name,  # (the name alone: where it lies on this machine is not a client's business)
        "cell": model.cell,
        "layers": model.layers,
        "hidden": model.hidden,
        "embed": model.embed,
        "dropout": model.dropout,
        "parameters": parameter_count(model),
        "vocab_size": len(record.vocab),
        "vocabulary": "".join(record.vocab.chars),
        "steps": known["step"],
        "epoch": info.progress.epoch if info is not None else None,
        "chars_seen": known["chars_seen"],
        "best_loss_nats": best,
        "best_bpc": best / math.log(2) if best is not None else None,
        "train_seconds": known["train_seconds"],
        "corpus": known["corpus"],
        "train_chars": known["train_chars"],
        "config": None if info is None else _config(info.config),  # an export keeps no training options
        "saved_at": info.saved_at if info is not None else None,
        "format": file_format(record.path)[0],
        "format_version": file_format(record.path)[1],
        "charrnn_version": info.charrnn_version if info is not None else None,
    }


def _config(config) -> dict[str, Any]:
    """A run's training options, less those not set, and of its paths only the names."""
    return {
        k: (Path(v).name if k in PATH_KEYS and isinstance(v, str) else v)
        for k, v in asdict(config).items()
        if v is not None
    }
