"""`charrnn sample` and `play`: text from a trained model, to stdout or in a terminal session
(drivers over `charrnn.load`; `info` and `export` are in model_files.py)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from charrnn.cli.console import SAMPLE_DEFAULTS
from charrnn.cli.console import fail as _fail
from charrnn.cli.console import flag as _flag
from charrnn.cli.console import stderr as _stderr
from charrnn.config import SampleConfig, help_of
from charrnn.errors import CharRNNError

# ---------------------------------------------------------------------------------- sample
TEXT = "Text"  # the panels of sample's --help


def _text_option(name: str):
    """A flag of SampleConfig's with its help text from there and no default shown."""
    return typer.Option(help=help_of(SampleConfig, name)[0], rich_help_panel=TEXT, show_default=False)


def sample(
    checkpoint_path: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint",
            "-c",
            help=(
                "Checkpoint (.pt), run folder (its best.pt, else last.pt), export (.npz) or model folder "
                "(model.safetensors + config.json; see `charrnn export`) to sample from. \\[default: the newest "
                "best.pt under checkpoints/, else the newest last.pt]"
            ),
            show_default=False,
        ),
    ] = None,
    length: Annotated[int, _flag("length", TEXT, SampleConfig)] = SAMPLE_DEFAULTS["length"],
    temp: Annotated[float, _flag("temp", TEXT, SampleConfig)] = SAMPLE_DEFAULTS["temp"],
    top_k: Annotated[int, _flag("top_k", TEXT, SampleConfig)] = SAMPLE_DEFAULTS["top_k"],
    top_p: Annotated[float, _flag("top_p", TEXT, SampleConfig)] = SAMPLE_DEFAULTS["top_p"],
    prime: Annotated[str | None, _text_option("prime")] = None,
    prime_file: Annotated[
        Path | None,
        typer.Option(help="Read the prime text from this UTF-8 file.", rich_help_panel=TEXT, show_default=False),
    ] = None,
    unknown: Annotated[
        str,
        typer.Option(
            help="Prime characters the model never saw: error, or skip them with a warning.", rich_help_panel=TEXT
        ),
    ] = "error",
    stop: Annotated[list[str] | None, _text_option("stop")] = None,
    seed: Annotated[int | None, _flag("seed", TEXT, SampleConfig)] = None,
    num_samples: Annotated[int, _flag("num_samples", TEXT, SampleConfig)] = SAMPLE_DEFAULTS["num_samples"],
    separator: Annotated[
        str,
        typer.Option(
            help="Printed between samples when --num-samples > 1.", rich_help_panel=TEXT, show_default="a blank line"
        ),
    ] = "\n\n",
    echo_prime: Annotated[
        bool, typer.Option(help="Print the prime before its continuation.", rich_help_panel=TEXT)
    ] = True,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.", rich_help_panel="Run")] = "cpu",
    engine: Annotated[
        str,
        typer.Option(
            help=(
                "What computes the logits: packed (CPU: NumPy with oneDNN products on packed weights, the fastest "
                "for several samples), numpy (NumPy only, CPU; no torch needed for an .npz), torch (any device), or "
                "auto: packed on the CPU (numpy for an .npz), torch on a GPU. They give the same text for the same "
                "seed up to float32 rounding."
            ),
            rich_help_panel="Run",
        ),
    ] = "auto",
    beam: Annotated[int, _flag("beam", "Beam search", SampleConfig)] = SAMPLE_DEFAULTS["beam"],
    beam_norm: Annotated[float, _flag("beam_norm", "Beam search", SampleConfig)] = SAMPLE_DEFAULTS["beam_norm"],
) -> None:
    """Generate text from a trained model and stream it to stdout."""
    try:
        if prime is not None and prime_file is not None:
            raise CharRNNError("give --prime or --prime-file, not both")
        if unknown not in ("error", "skip"):
            raise CharRNNError(f"--unknown {unknown!r} is not one of: error, skip")
        if prime_file is not None:
            from charrnn.data.corpus import read_text

            prime = read_text(prime_file, flags=(), what="the prime file")
        cfg = SampleConfig(
            length=length,
            temp=temp,
            top_k=top_k,
            top_p=top_p,
            prime=prime or "",
            seed=seed,
            num_samples=num_samples,
            stop=stop or [],
            beam=beam,
            beam_norm=beam_norm,
        ).validate()
        _sample(checkpoint_path, cfg, unknown, separator, echo_prime, device, engine)
    except CharRNNError as exc:
        _fail(exc)


def _sample(path: Path | None, cfg: SampleConfig, unknown: str, separator: str, echo: bool, device, engine) -> None:
    """Write the samples of `cfg` to stdout as they are generated: a driver over charrnn.load."""
    from charrnn.api.model import load
    from charrnn.machine.threads import FreeCores, limit_blas_threads, threads_for_command, use_threads

    # The cores free now; the engine follows the load while it runs (a busy neighbour makes a
    # second thread cost several times over: README, Busy machines).
    threads = threads_for_command()
    limit_blas_threads(threads)
    if path is None:
        from charrnn.store.run_folder import newest_model

        path = newest_model("checkpoints")
        _stderr().print(
            f"sampling from {path} (the newest {path.name} under checkpoints/; -c to choose)", soft_wrap=True
        )
    model = load(path, engine=engine, device=device)  # imports torch only if the engine or a .pt needs it
    if model.engine in ("torch", "packed"):
        use_threads(threads)
    model.threads = FreeCores()
    dropped = model.unknown_chars(cfg.prime) if unknown == "skip" else []
    if dropped:
        from charrnn.data.vocab import describe_chars

        _stderr().print(
            f"warning: dropped prime characters the model never saw: {describe_chars(dropped)}", soft_wrap=True
        )
    settings = dict(temperature=cfg.temp, top_k=cfg.top_k, top_p=cfg.top_p, seed=cfg.seed, stop=cfg.stop)
    out = _Stdout()
    if cfg.beam:  # (the best beam is known only at the end: nothing to stream)
        beams = model.generate(
            cfg.prime, cfg.length, stop=cfg.stop, n=cfg.num_samples, echo=echo, unknown=unknown, beam=cfg.beam,
            beam_norm=cfg.beam_norm,
        )  # fmt: skip
        out.write(separator.join(beams))
    else:  # the first sample as it is generated, the others after it
        for piece in model.stream(
            cfg.prime, cfg.length, n=cfg.num_samples, echo=echo, unknown=unknown, separator=separator, **settings
        ):
            out.write(piece)
    out.close()


# ---------------------------------------------------------------------------------- play
def play(
    checkpoint_path: Annotated[
        Path | None,
        typer.Argument(
            metavar="CHECKPOINT",
            help="Checkpoint (.pt), run folder or export (.npz). \\[default: the newest best.pt under checkpoints/]",
            show_default=False,
        ),
    ] = None,
    engine: Annotated[str, typer.Option(help="packed, numpy, torch or auto, as for sample.")] = "auto",
) -> None:
    """Talk to a model: type a prime, read its continuation; :help lists the settings.

    Ctrl-C stops a text and stays; Ctrl-D leaves. Needs a terminal: in scripts, use `sample`."""
    try:
        if not sys.stdin.isatty():
            raise CharRNNError(
                "play needs a terminal on stdin (it reads what you type); in scripts and pipes use: charrnn sample "
                "--prime TEXT"
            )
        from charrnn.machine.threads import limit_blas_threads

        limit_blas_threads(1)  # one stream
        from charrnn.sample.engines import newest, open_stepper
        from charrnn.sample.play import Interrupts, Session, run_session

        path = checkpoint_path or newest("checkpoints")
        stepper, vocab, chosen = open_stepper(path, engine, "cpu")
        if chosen == "torch":
            from charrnn.machine.threads import use_threads

            use_threads(1)
        try:
            import readline  # noqa: F401  (history on the arrow keys, where Python has it)
        except ImportError:
            pass
        out = _Stdout()
        interrupts = Interrupts()  # Ctrl-C stops a text, not the session, however many come
        signal.signal(signal.SIGINT, interrupts.handler)
        _stderr().print(f"model: {path}", soft_wrap=True)
        try:
            say = lambda text: _stderr().print(text, style="dim", soft_wrap=True)  # noqa: E731
            run_session(Session(stepper, vocab), input, out.write, say, interrupts)
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # on the way out, a late Ctrl-C changes nothing
    except CharRNNError as exc:
        _fail(exc)


class _Stdout:
    """UTF-8 text to stdout whatever the locale; flushed per character on a terminal; a closed
    pipe (`| head`) ends the program quietly. On a terminal the text ends with a newline, so the
    shell's prompt starts on a line of its own; into a pipe or file, the bytes are the sample's."""

    def __init__(self):
        self.stream = sys.stdout.buffer
        self.tty = sys.stdout.isatty()
        self.ends_line = True

    def write(self, text: str) -> None:
        if not text:
            return
        try:
            self.stream.write(text.encode("utf-8", "surrogatepass"))
            self.ends_line = text.endswith("\n")
            if self.tty or "\n" in text:
                self.stream.flush()
        except BrokenPipeError:
            self._closed_pipe()

    def close(self) -> None:
        try:
            if self.tty and not self.ends_line:
                self.stream.write(b"\n")
            self.stream.flush()
        except BrokenPipeError:
            self._closed_pipe()

    @staticmethod
    def _closed_pipe() -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so Python's exit-time flush does not complain
        raise typer.Exit(0)


def register(app: typer.Typer) -> None:
    app.command()(sample)
    app.command()(play)
