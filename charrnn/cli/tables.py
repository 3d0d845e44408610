"""The tables of `charrnn info` (a checkpoint) and `charrnn bench` (speed, overheads, sampling,
a busy machine, quality)."""

from __future__ import annotations

import time
from dataclasses import asdict

from rich.table import Table

from charrnn.cells import parameter_count
from charrnn.cli.formats import fmt_clock, fmt_loss
from charrnn.errors import plural


def checkpoint_table(path, info, format_version: int) -> Table:
    """`charrnn info` of a checkpoint (its CheckpointInfo) as a two-column table."""
    model, prog = info.model, info.progress
    config = asdict(info.config)  # (options newer than the run show their defaults: what a resume would use)
    rows = [
        *_model_rows(model, info.vocab),
        ("steps", f"{prog.step:,} (epoch {prog.epoch}, chunk {prog.chunk})"),
        ("characters seen", f"{prog.chars_seen:,}"),
        ("best loss", fmt_loss(prog.best_loss)),
        ("training time", fmt_clock(prog.train_seconds)),
        ("corpus", f"{info.corpus.path} ({info.corpus.train_chars:,} training characters)"),
        ("training config", ", ".join(f"{k}={v}" for k, v in config.items() if v is not None)),
        ("saved", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.saved_at))),
        ("format", f"version {format_version}, charrnn {info.charrnn_version}"),
    ]
    return _two_columns(str(path), rows)


def export_table(path, record, fmt: str) -> Table:
    """`charrnn info` of an export or a model folder (a ModelFile): the model, and what the file
    says of its training (a model folder keeps a summary; an .npz nothing)."""
    rows = _model_rows(record.model, record.vocab)
    training = record.training
    if training is None:
        rows.append(("training", "not recorded in this file"))
    else:
        seconds, chars = training.train_seconds, training.train_chars
        rows += [
            ("steps", _count(training.step)),
            ("characters seen", _count(training.chars_seen)),
            ("best loss", fmt_loss(training.best_val_loss)),
            ("training time", "-" if seconds is None else fmt_clock(seconds)),
            ("corpus", f"{training.corpus or '?'} ({_count(chars)} training characters)"),
        ]
    rows.append(("format", fmt))
    return _two_columns(str(path), rows)


def _count(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def _model_rows(model, vocab) -> list[tuple[str, str]]:
    chars = "".join(vocab.chars)
    tied = " (tied to the read-out)" if model.tie_weights else ""
    shown = "".join(c if c.isprintable() else "·" for c in chars[:80]) + ("…" if len(chars) > 80 else "")
    return [
        (
            "model",
            f"{model.cell.upper()} {model.layers}×{model.hidden}, embedding {model.embed}{tied}, "
            f"dropout {model.dropout}",
        ),
        ("parameters", f"{parameter_count(model):,}"),
        ("vocabulary", f"{plural(len(chars), 'character')}: {shown}"),
    ]


def _two_columns(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, value)
    return table


def bench_tables(result: dict) -> list[Table]:
    """`charrnn bench` as tables: one per section measured."""
    tables = _speed_tables(result) if "machine" in result else []
    if "load" in result:
        tables.append(load_table(result["load"]))
    if "serve" in result:
        from charrnn.bench.serve import serve_table

        tables.append(serve_table(result["serve"]))
    if "quality" in result:
        from charrnn.bench.quality import quality_table

        tables.append(quality_table(result["quality"]))
    return tables


def _speed_tables(result: dict) -> list[Table]:
    machine = result["machine"]
    title = (
        f"{machine['cpu']} · {plural(machine['threads'], 'thread')} · {machine['device']} · torch {machine['torch']} "
        f"· peak matmul {result['peak_gflops']:.1f} GFLOP/s"
        + (f" · medians of {result['rounds']} rounds" if result.get("rounds", 1) > 1 else "")
    )
    train = Table(title=title, title_justify="left")
    for col in ("training", "chars/s", "GFLOP/s", "of peak", "vs reference"):
        train.add_column(col, justify="left" if col == "training" else "right")
    for row in result["training"]:
        train.add_row(
            row["what"],
            f"{row['chars_per_sec']:,.0f}",
            f"{row['gflops']:.1f}",
            f"{row['of_peak']:.0%}",
            f"{row['vs_reference']:.2f}×" if "vs_reference" in row else "",
        )
    overheads = Table(title_justify="left")
    for col in ("during a run", "chars/s", "ratio or cost"):
        overheads.add_column(col, justify="left" if col == "during a run" else "right")
    for row in result.get("overheads", []):
        speed = f"{row['chars_per_sec']:,.0f}" if "chars_per_sec" in row else f"{row['seconds']:.2f} s"
        ratio = (
            f"{row['vs_undisturbed']:.2f}× undisturbed"
            if "vs_undisturbed" in row
            else f"{row['cost']:.1%} of training time"
            if "cost" in row
            else ""
        )
        overheads.add_row(row["what"], speed, ratio)
    sample = Table(title_justify="left")
    for col in ("sampling", "chars/s", "ratio", "model step"):
        sample.add_column(col, justify="left" if col == "sampling" else "right")
    for row in result["sampling"]:
        ratios = [f"{row['vs_naive']:.1f}× naive"] if "vs_naive" in row else []
        ratios += [f"{row['vs_torch_stepper']:.1f}× torch"] if "vs_torch_stepper" in row else []
        ratios += [f"{row['vs_batch_1']:.1f}× batch 1"] if "vs_batch_1" in row else []
        step = f"{row['step_gflops']:,.1f} GFLOP/s" if "step_gflops" in row else ""
        step += f", {row['of_peak']:.0%} of peak" if "of_peak" in row else ""
        sample.add_row(row["what"], f"{row['chars_per_sec']:,.0f}", ", ".join(ratios), step)
    other = Table(title_justify="left")
    other.add_column("other")
    other.add_column("result", justify="right")
    tok = result["tokenising"]
    other.add_row(tok["what"], f"{tok['mb_per_sec']:.1f} MB/s, peak RSS {tok['peak_rss_mb']:.0f} MB")
    other.add_row(result["startup"]["what"], f"{result['startup']['seconds']:.2f} s")
    return [train, overheads, sample, other] if result.get("overheads") else [train, sample, other]


def load_table(result: dict) -> Table:
    """`charrnn bench --load`: chars/s of each policy in each situation, and the ratio to alone."""
    table = Table(
        title=f"training the default model on a busy machine · {plural(result['cores'], 'core')} · "
        f"{result['seconds']:g} s each",
        title_justify="left",
    )
    for col in ("threads", "situation", "chars/s", "vs alone", "used"):
        table.add_column(col, justify="right" if col in ("chars/s", "vs alone") else "left")
    for row in result["rows"]:
        table.add_row(
            row["policy"],
            row["situation"],
            f"{row['chars_per_sec']:,.0f}",
            f"{row['vs_alone']:.0%}",
            " → ".join(str(n) for n in row["threads"]),
        )
    table.caption = (
        f"alone, charrnn's policy runs at {result['auto_vs_torch_alone']:.0%} of torch's defaults "
        f"(torch, {result['cores']}: {result['cores']} threads, libgomp's default spin)"
    )
    busy = result.get("busy_before")
    if busy is not None and busy > 0.3:
        table.caption += (
            f"; the machine was not idle: other processes kept {busy:.1f} cores busy before it started, "
            "so 'alone' was not"
        )
    return table
