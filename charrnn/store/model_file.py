"""Opening a model file: one function reads a .pt checkpoint, an .npz export or a model folder
(model.safetensors + config.json, model_folder.py), or a run folder (its best.pt, else last.pt),
into one typed record, validated on load, and one builds the torch model from it. `sample`,
`serve`, `eval`, `neurons`, `export` and the engines all start here.

Opening an .npz or a model folder imports no torch; a .pt needs it (the message says what to do
without it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charrnn.config import ModelConfig
from charrnn.data.vocab import Vocab
from charrnn.errors import CharRNNError
from charrnn.store.export import load_npz
from charrnn.store.metadata import CheckpointInfo, TrainingSummary
from charrnn.store.model_folder import WEIGHTS, is_model_folder, load_model_folder
from charrnn.store.run_folder import RunFolder

EXPORTS = (".npz", ".safetensors")  # weights and vocabulary only: read without torch


@dataclass(frozen=True)
class ModelFile:
    """What any model file holds: the weights (float32 NumPy arrays, torch's names), the
    vocabulary and the model config; for a checkpoint, its training metadata; and what is known
    of the training that made it (from `info` when there is one)."""

    path: Path
    weights: dict[str, np.ndarray]
    vocab: Vocab
    model: ModelConfig
    info: CheckpointInfo | None = None  # None for an export, which keeps no training state
    training: TrainingSummary | None = None  # a checkpoint's is derived from its info

    def __post_init__(self):
        if self.training is None and self.info is not None:
            object.__setattr__(self, "training", TrainingSummary.from_info(self.info))


def is_export(path: Path) -> bool:
    """Whether `path` names an export (.npz, or a model folder's .safetensors), not a checkpoint."""
    return Path(path).suffix in EXPORTS


def resolve_checkpoint(path: Path) -> Path:
    """The file a user means by `path`: itself; for a run folder its best.pt (its last.pt when
    no validation ever wrote a best one); for a model folder its model.safetensors."""
    path = Path(path)
    if not path.is_dir():
        return path
    found = RunFolder(path).model_file()
    if found is not None:
        return found
    if is_model_folder(path):
        return path / WEIGHTS
    raise CharRNNError(
        f"{path}: a folder with no best.pt or last.pt in it (nor {WEIGHTS}); give a run folder (checkpoints/NAME), "
        "a model folder or a .pt file"
    )


def open_model_file(path: str | Path) -> ModelFile:
    """Read and check the model in a .pt checkpoint, an .npz export, a model folder (or its
    model.safetensors) or a run folder. Only a .pt needs torch."""
    path = resolve_checkpoint(Path(path))
    if path.suffix == ".safetensors":
        weights, vocab, cfg, training = load_model_folder(path)
        return ModelFile(path, weights, vocab, cfg, training=training)
    if is_export(path):
        weights, vocab, cfg = load_npz(path)
        return ModelFile(path, weights, vocab, cfg)
    try:
        from charrnn.store import checkpoint
    except ImportError as exc:
        raise CharRNNError(
            f"{path}: reading a .pt checkpoint needs torch, which cannot be imported here ({exc}); "
            f"where torch is installed, run `charrnn export {path}` and sample from the .npz"
        ) from None
    ckpt = checkpoint.load(path)  # checked: weights, vocabulary and model agree
    from charrnn.model import numpy_weights

    return ModelFile(path, numpy_weights(ckpt.model), ckpt.info.vocab, ckpt.info.model, ckpt.info)


def file_format(path: Path) -> tuple[str, int]:
    """The format of a model file and its version. Each reader refuses a version newer than its
    own and each format has had one version so far, so a file that loaded has this charrnn's."""
    from charrnn.store import export, model_folder

    suffix = Path(path).suffix
    if suffix == ".npz":
        return export.FORMAT, export.FORMAT_VERSION
    if suffix == ".safetensors":
        return model_folder.FORMAT, model_folder.FORMAT_VERSION
    from charrnn.store import checkpoint  # (torch: a .pt was read with it)

    return checkpoint.FORMAT, checkpoint.FORMAT_VERSION


def build_model(record: ModelFile, device="cpu"):
    """The CharRNN of a model file, on `device`, in eval mode."""
    import torch

    from charrnn.model import CharRNN

    model = CharRNN(record.model)
    model.load_state_dict({name: torch.from_numpy(array) for name, array in record.weights.items()})
    return model.to(device).eval()
