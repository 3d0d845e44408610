"""`charrnn info` and `export`: a model file described (checkpoint, export or model folder), and
copied into a form that needs no torch to read (.npz, or a model folder: model.safetensors +
config.json)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from charrnn.cli.console import fail as _fail
from charrnn.cli.console import stderr as _stderr
from charrnn.errors import CharRNNError


# ---------------------------------------------------------------------------------- info
def info(
    checkpoint_path: Annotated[
        Path,
        typer.Argument(
            metavar="CHECKPOINT",
            help="A .pt checkpoint (or a run folder: its best.pt, else last.pt), an .npz export or a model folder.",
            show_default=False,
        ),
    ],
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the checkpoint's metadata as JSON on stdout.")
    ] = False,
) -> None:
    """Describe a checkpoint: model, vocabulary, training config and progress."""
    try:
        from charrnn.store.model_file import is_export, resolve_checkpoint

        path = resolve_checkpoint(checkpoint_path)
        table, meta = _export_info(path) if is_export(path) else _checkpoint_info(path)
        if json_out:
            import json

            typer.echo(json.dumps({"path": str(path), **meta}, indent=2))
            return
        from rich.console import Console

        Console(highlight=False).print(table)
    except CharRNNError as exc:
        _fail(exc)


def _checkpoint_info(path: Path):
    """A checkpoint's table and its metadata as saved (the JSON of `info --json`)."""
    from charrnn.cli.tables import checkpoint_table
    from charrnn.store import checkpoint

    ckpt = checkpoint.load(path)
    return checkpoint_table(path, ckpt.info, ckpt.format_version), {
        "format_version": checkpoint.FORMAT_VERSION,
        **ckpt.meta,
    }


def _export_info(path: Path):
    """An export's table and JSON: its format, model, vocabulary and what it says of its training."""
    from dataclasses import asdict

    from charrnn.cli.tables import export_table
    from charrnn.store.model_file import file_format, open_model_file

    record = open_model_file(path)
    fmt, version = file_format(path)
    training = record.training.to_json() if record.training is not None else None
    meta = {"format": fmt, "format_version": version, "vocab": record.vocab.to_json(), "model": asdict(record.model)}
    return export_table(path, record, f"{fmt}, version {version}"), {**meta, "training": training}


# ---------------------------------------------------------------------------------- export
EXPORT_FORMATS = ("npz", "safetensors")


def export(
    checkpoint_path: Annotated[
        Path,
        typer.Argument(
            metavar="CHECKPOINT",
            help="A .pt checkpoint (or a run folder: its best.pt, else last.pt).",
            show_default=False,
        ),
    ],
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="npz: the weights as NumPy arrays (torch's names) and the vocabulary and model as JSON; "
            "`charrnn sample -c FILE.npz` reads it without torch. safetensors: a model folder, "
            "model.safetensors (the weights) and config.json (model, vocabulary, training summary), "
            "laid out as Hugging Face-style model folders are; `charrnn sample -c FOLDER` reads it without torch.",
        ),
    ] = "npz",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Where to write. \\[default: CHECKPOINT with the format's suffix; for safetensors, a folder "
            "named as CHECKPOINT without its suffix]",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Write a checkpoint's weights and vocabulary in a form that needs no torch to read."""
    try:
        if fmt not in EXPORT_FORMATS:
            raise CharRNNError(f"--format {fmt!r} is not one of: {', '.join(EXPORT_FORMATS)}")
        from charrnn.store.model_file import resolve_checkpoint

        path = resolve_checkpoint(checkpoint_path)
        written, size = _export_npz(path, out) if fmt == "npz" else _export_folder(path, out)
        _stderr().print(
            f"wrote {written} ({size:,} bytes); sample from it with: charrnn sample -c {shlex.quote(str(written))}",
            soft_wrap=True,
        )
    except CharRNNError as exc:
        _fail(exc)


def _export_npz(path: Path, out: Path | None) -> tuple[Path, int]:
    from charrnn.store.export import export_npz

    written = export_npz(path, out or path.with_suffix(".npz"))
    return written, written.stat().st_size


def _export_folder(path: Path, out: Path | None) -> tuple[Path, int]:
    """The model folder of a checkpoint (any model file reads, but the point is a .pt's)."""
    from charrnn.store.model_file import open_model_file
    from charrnn.store.model_folder import CONFIG, WEIGHTS, save_model_folder

    written = save_model_folder(open_model_file(path), out or path.with_suffix(""))
    return written, sum((written / name).stat().st_size for name in (WEIGHTS, CONFIG))


def register(app: typer.Typer) -> None:
    app.command()(info)
    app.command()(export)
