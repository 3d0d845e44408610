"""The tables of `charrnn info` (a checkpoint) and `charrnn bench` (speed, overheads, sampling,
a busy machine, quality)."""

from __future__ import annotations

import time

from rich.table import Table

from charrnn.cells import parameter_count
from charrnn.cli.formats import fmt_clock, fmt_loss
from charrnn.errors import plural


def checkpoint_table(path, ckpt) -> Table:
    """`charrnn info` as a two-column table."""
    info = ckpt.info
    model, prog = info.model, info.progress
    cfg = ckpt.meta["config"]  # as saved (the typed config would add the defaults of options newer than the run)
    n_params = parameter_count(model)
    table = Table(title=str(path), show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    vocab = "".join(info.vocab.chars)
    rows = [
        (
            "model",
            f"{model.cell.upper()} {model.layers}×{model.hidden}, embedding {model.embed}{' (tied to the read-out)' if model.tie_weights else ''}, dropout {model.dropout}",
        ),
        ("parameters", f"{n_params:,}"),
        (
            "vocabulary",
            f"{plural(len(vocab), 'character')}: {''.join(c if c.isprintable() else '·' for c in vocab[:80])}{'…' if len(vocab) > 80 else ''}",
        ),
        ("steps", f"{prog.step:,} (epoch {prog.epoch}, chunk {prog.chunk})"),
        ("characters seen", f"{prog.chars_seen:,}"),
        ("best loss", fmt_loss(prog.best_loss)),
        ("training time", fmt_clock(prog.train_seconds)),
        ("corpus", f"{info.corpus.path} ({info.corpus.train_chars:,} training characters)"),
        ("training config", ", ".join(f"{k}={v}" for k, v in cfg.items() if v is not None)),
        ("saved", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.saved_at))),
        ("format", f"version {ckpt.format_version}, charrnn {info.charrnn_version}"),
    ]
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
        f"{machine['cpu']} · {plural(machine['threads'], 'thread')} · {machine['device']} · torch {machine['torch']} · peak matmul {result['peak_gflops']:.1f} GFLOP/s"
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
        title=f"training the default model on a busy machine · {plural(result['cores'], 'core')} · {result['seconds']:g} s each",
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
    table.caption = f"alone, charrnn's policy runs at {result['auto_vs_torch_alone']:.0%} of torch's defaults (torch, {result['cores']}: {result['cores']} threads, libgomp's default spin)"
    busy = result.get("busy_before")
    if busy is not None and busy > 0.3:
        table.caption += f"; the machine was not idle: other processes kept {busy:.1f} cores busy before it started, so 'alone' was not"
    return table
