"""`charrnn bench`: the flags, the tables on stderr, --json on stdout; the measuring is bench/'s."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from charrnn.cli.console import fail as _fail
from charrnn.cli.console import stderr as _stderr
from charrnn.errors import CharRNNError


# ---------------------------------------------------------------------------------- bench
def bench(
    quick: Annotated[bool, typer.Option("--quick", help="A one-minute version: fewer steps, smaller corpus.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the results as JSON on stdout.")] = False,
    precision: Annotated[str, typer.Option(help="Training precision to measure: fp32, bf16 or fp16.")] = "fp32",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "cpu",
    rounds: Annotated[
        int | None,
        typer.Option(
            help="Measure peak, training and sampling this many times, interleaved, and report medians. "
            "\\[default: 3, 1 with --quick]",
            show_default=False,
        ),
    ] = None,
    quality: Annotated[
        Path | None,
        typer.Option(
            help="Also train on this corpus for --seconds with the default recipe and with the previous defaults "
            "(2×256 LSTM, no dropout), one after the other, and report the validation loss (last 10%) of each against "
            "time.",
            show_default=False,
        ),
    ] = None,
    quality_seconds: Annotated[
        float, typer.Option("--seconds", "--quality-seconds", help="Time budget of each --quality training.")
    ] = 600.0,
    quality_out: Annotated[
        Path | None,
        typer.Option(
            help="Keep the --quality runs' folders under this folder (for `charrnn plot`). \\[default: temporary]",
            show_default=False,
        ),
    ] = None,
    load: Annotated[
        bool,
        typer.Option(
            "--load",
            help="Also train the default model alone, beside a busy core and as two trainings at once, with charrnn's "
            "thread policy and with torch's defaults.",
        ),
    ] = False,
    load_seconds: Annotated[float, typer.Option(help="Training time of each --load run.")] = 30.0,
    speed: Annotated[
        bool,
        typer.Option(
            "--speed/--no-speed",
            help="Measure the speed tables (peak, training, sampling, tokenising); --no-speed with --load, --serve or "
            "--quality runs only those.",
        ),
    ] = True,
    serve: Annotated[
        bool,
        typer.Option(
            "--serve",
            help="Also measure `charrnn serve`: requests per second, p50/p99 latency and the engine's GFLOP/s, "
            "200-character samples with 1, 4, 16 and 64 clients at once.",
        ),
    ] = False,
    serve_seconds: Annotated[float, typer.Option(help="Time of each --serve row.")] = 10.0,
    serve_engines: Annotated[
        str, typer.Option(help="The server's --engines for --serve (a number, or auto: charrnn serve's default).")
    ] = "auto",
) -> None:
    """Measure training, sampling and tokenising speed against this machine and a textbook loop.

    Peak matmul, training, the reference loop and sampling are measured in interleaved rounds of one run and reported as medians. A table on stderr; --json on stdout."""  # noqa: E501 (typer keeps a docstring's line breaks in --help)
    try:
        from charrnn.bench import measure as benchmark
        from charrnn.cli.display import bench_tables

        console = _stderr()
        if precision not in ("fp32", "bf16", "fp16"):  # (a measurement names one: train's auto is not one)
            raise CharRNNError(f"--precision {precision!r} is not one of: fp32, bf16, fp16")
        if rounds is not None and rounds < 1:
            raise CharRNNError(f"--rounds {rounds} must be at least 1")
        if not (speed or load or quality or serve):
            raise CharRNNError("--no-speed leaves nothing to measure: add --load, --serve or --quality FILE")
        if serve and not serve_seconds > 0:
            raise CharRNNError(f"--serve-seconds {serve_seconds:g} must be positive")
        if serve:
            from charrnn.sample.engine_process import engine_count

            engine_count(serve_engines, flag="--serve-engines")  # (said now, not after the peak and the model)
        if load and not load_seconds >= 10:
            raise CharRNNError(
                f"--load-seconds {load_seconds:g} must be at least 10 (the policy measures over a few seconds)"
            )
        say = lambda what: console.print(f"measuring {what}…")  # noqa: E731
        result = (
            benchmark.run(quick=quick, precision=precision, device=device, rounds=rounds, progress=say) if speed else {}
        )
        if load:
            from charrnn.bench.load import run_load

            result["load"] = run_load(load_seconds, progress=say)
        if serve:
            from charrnn.bench.serve import run_serve

            result["serve"] = run_serve(serve_seconds, progress=say, engines=serve_engines)
        if quality is not None:
            from charrnn.bench.quality import run_quality

            if not quality.is_file():
                raise CharRNNError(f"--quality {quality}: not a file")
            if not quality_seconds > 0:
                raise CharRNNError(f"--seconds {quality_seconds:g} must be positive")
            result["quality"] = run_quality(
                quality,
                quality_seconds,
                progress=lambda what: console.print(f"training: {what}…", soft_wrap=True),
                keep=quality_out,
            )
        for table in bench_tables(result):
            console.print(table)
        if json_out:
            typer.echo(benchmark.to_json(result))
    except CharRNNError as exc:
        _fail(exc)


def register(app: typer.Typer) -> None:
    app.command()(bench)
