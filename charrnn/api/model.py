"""`charrnn.load(path)`: a trained model, to write text with, score text with and save.

    >>> import charrnn
    >>> model = charrnn.load("checkpoints/shakespeare")     # a run folder, .pt, .npz or model folder
    >>> print(model.generate("ROMEO:", length=200, temperature=0.7, seed=1))
    >>> for piece in model.stream("JULIET:", length=200):   # the text as it is generated
    ...     print(piece, end="", flush=True)
    >>> model.score("To be, or not to be").bpc              # bits per character
    >>> model.save("exported/shakespeare")                  # model.safetensors + config.json

`charrnn sample` is a driver over this class: the same call with the same seed gives the same
text, because both run the one generation engine (sample/batch.py) with the same random numbers
(sample b of a call seeded s draws from `SeedSequence(s).spawn(n)[b]`).

A model folder (model.safetensors + config.json) and an .npz export are read without torch; the
engine is then the NumPy one, and `score` steps through the text in NumPy too. Nothing here
prints, exits or changes the process' thread settings: the command line does those.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charrnn.config import DYNAMIC_LR, DYNAMIC_SEGMENT, SampleConfig
from charrnn.errors import CharRNNError, plural
from charrnn.store.metadata import TrainingSummary
from charrnn.store.model_file import ModelFile, open_model_file

_DEFAULTS = SampleConfig()


@dataclass(frozen=True)
class ModelInfo:
    """What a model is: its shape, its vocabulary and, where the file says, how it was trained."""

    path: str
    cell: str
    layers: int
    hidden: int
    embed: int
    vocab_size: int
    parameters: int
    chars: str  # the vocabulary, in id order
    training: TrainingSummary  # steps, characters seen, best validation loss... (None where unknown)

    @property
    def best_val_bpc(self) -> float | None:
        return self.training.best_val_bpc


def load(path: str | Path, engine: str = "auto", device: str = "cpu") -> Model:
    """The model in a run folder (its best checkpoint, else its last), a .pt checkpoint, an .npz
    export or a model folder (model.safetensors + config.json). `engine`: auto, packed, numpy or
    torch, as `charrnn sample --engine`; `device`: cpu, cuda, mps or auto (torch engine only)."""
    return Model(open_model_file(Path(path)), engine=engine, device=device)


class Model:
    """A trained character-level model. Calls may overlap (threads, streams read side by side):
    each has a stepper of its own."""

    def __init__(self, record: ModelFile, engine: str = "auto", device: str = "cpu"):
        from charrnn.sample.engines import choose_engine

        self.record = record
        self.vocab = record.vocab
        self.config = record.model
        self.engine = choose_engine(engine, device, Path(record.path))  # checked now, built on first use
        self.device = device
        self._steppers: list = []  # a stepper kept between calls (it packs the weights once)
        self._module = None  # the torch model `score` runs, built on first use (read only: shared)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        c = self.config
        return f"<charrnn.Model {c.cell} {c.layers}x{c.hidden}, {len(self.vocab)} characters, from {self.record.path}>"

    # ------------------------------------------------------------------ what it is
    @property
    def info(self) -> ModelInfo:
        from charrnn.cells import parameter_count

        c = self.config
        return ModelInfo(
            path=str(self.record.path),
            cell=c.cell,
            layers=c.layers,
            hidden=c.hidden,
            embed=c.embed,
            vocab_size=len(self.vocab),
            parameters=parameter_count(c),
            chars="".join(self.vocab.chars),
            training=self.record.training or TrainingSummary(),
        )

    def unknown_chars(self, text: str) -> list[str]:
        """The characters of `text` the model never saw (a prime with them needs unknown="skip")."""
        return list(self.vocab.unknown(text))

    # ------------------------------------------------------------------ writing text
    def generate(
        self,
        prime: str = "",
        length: int = _DEFAULTS.length,
        temperature: float = _DEFAULTS.temp,
        top_k: int = _DEFAULTS.top_k,
        top_p: float = _DEFAULTS.top_p,
        seed: int | None = None,
        stop: str | list[str] | tuple[str, ...] = (),
        n: int | None = None,
        *,
        echo: bool = True,
        unknown: str = "error",
        beam: int = 0,
        beam_norm: float = _DEFAULTS.beam_norm,
    ) -> str | list[str]:
        """`length` characters after `prime` (the prime first, unless echo=False); with `n`, a list
        of n samples generated side by side. temperature 0 = always the most likely character;
        top_k 0 and top_p 1 = off; `stop` ends a sample right after that string; the same `seed`
        gives the same text (None: a random one). `unknown`: prime characters the model never saw
        are an "error" or skipped ("skip"). `beam` > 0: beam search of that width instead of
        sampling (the n best, best first; temperature, top_k, top_p and seed do not apply)."""
        cfg = self._config(prime, length, temperature, top_k, top_p, seed, stop, 1 if n is None else n, beam, beam_norm)
        if beam:
            from charrnn.sample.beam import beam_texts

            stepper = self._take_stepper()
            try:
                texts = beam_texts(stepper, self.vocab, cfg, unknown, echo)
            finally:
                self._give_back(stepper)
        else:
            texts = [""] * cfg.num_samples
            for b, piece in self._pieces(cfg, unknown, echo):
                texts[b] += piece
        return texts if n is not None else texts[0]

    def stream(
        self,
        prime: str = "",
        length: int = _DEFAULTS.length,
        temperature: float = _DEFAULTS.temp,
        top_k: int = _DEFAULTS.top_k,
        top_p: float = _DEFAULTS.top_p,
        seed: int | None = None,
        stop: str | list[str] | tuple[str, ...] = (),
        n: int = 1,
        *,
        echo: bool = True,
        unknown: str = "error",
        separator: str = "\n\n",
    ) -> Iterator[str]:
        """The text of `generate` as it is generated, in pieces. With n > 1 the samples are
        generated side by side and come one after the other, `separator` between them: the first
        as it is generated, each next one once those before it have ended (`charrnn sample
        --num-samples`). Leaving the loop early stops the generation."""
        from charrnn.sample.generate import OneAfterAnother

        cfg = self._config(prime, length, temperature, top_k, top_p, seed, stop, n, 0, 0.0)
        out: list[str] = []  # what the samples write, to yield
        samples = OneAfterAnother(out.append, cfg.num_samples, separator)
        for b, piece in self._pieces(cfg, unknown, echo):
            if piece:
                samples.piece(b, piece)
            else:
                samples.end(b)
            if out:
                yield "".join(out)
                out.clear()
        samples.close()
        if out:
            yield "".join(out)

    def _config(self, prime, length, temperature, top_k, top_p, seed, stop, n, beam, beam_norm) -> SampleConfig:
        if not isinstance(prime, str):
            raise CharRNNError(f"prime must be a string, not {type(prime).__name__}")
        stops = [stop] if isinstance(stop, str) else list(stop)
        for name, value, kinds in (
            ("length", length, int),
            ("temperature", temperature, (int, float)),
            ("top_k", top_k, int),
            ("top_p", top_p, (int, float)),
            ("n", n, int),
            ("beam", beam, int),
            ("beam_norm", beam_norm, (int, float)),
        ):
            if isinstance(value, bool) or not isinstance(value, kinds):
                kind = "an integer" if kinds is int else "a number"
                raise CharRNNError(f"{name} must be {kind}, not {type(value).__name__} {value!r:.40}")
        return SampleConfig(
            length=length,
            temp=temperature,
            top_k=top_k,
            top_p=top_p,
            prime=prime,
            seed=seed,
            num_samples=n,
            stop=stops,
            beam=beam,
            beam_norm=beam_norm,
        ).validate()

    def _pieces(self, cfg: SampleConfig, unknown: str, echo: bool) -> Iterator[tuple[int, str]]:
        """(sample index, text) as the engine writes it: the echoed prime, each character, and
        an empty piece when a sample ends. The engine steps in this thread, between yields."""
        from charrnn.sample.batch import Engine, config_streams
        from charrnn.sample.generate import prime_ids

        if unknown not in ("error", "skip"):
            raise CharRNNError(f"unknown={unknown!r} is not one of: error, skip")
        ids, echoed, _ = prime_ids(self.vocab, cfg.prime, unknown)
        pending: list[tuple[int, str]] = []
        streams = config_streams(
            cfg,
            ids,
            on_text=lambda s, char: pending.append((s.tag, char)),
            on_end=lambda s: pending.append((s.tag, "")),
        )
        if echo and echoed:
            for b in range(cfg.num_samples):
                yield b, echoed
        stepper = self._take_stepper()
        engine = Engine(stepper, self.vocab, threads=self.threads)
        try:
            engine.submit(streams)
            for _ in engine.stepping(streams):
                yield from pending
                pending.clear()
            yield from pending
        finally:
            engine.cancel(streams)
            self._give_back(stepper)

    threads = None  # the command line sets a callable: the threads to use, asked as the engine runs

    def _take_stepper(self):
        """A stepper for one call: the one kept from an earlier call, or a new one while that is
        in use (by another thread, or by a stream not read to its end)."""
        with self._lock:
            if self._steppers:
                return self._steppers.pop()
        from charrnn.sample.engines import numpy_stepper, packed_stepper, torch_stepper

        if self.engine == "torch":
            return torch_stepper(self.record, self.device)
        make = packed_stepper if self.engine == "packed" else numpy_stepper
        return make(self.record.weights, self.config)

    def _give_back(self, stepper) -> None:
        with self._lock:
            self._steppers[:1] = [stepper]  # one is kept

    # ------------------------------------------------------------------ scoring text
    def score(
        self, text: str, dynamic: bool = False, dynamic_lr: float = DYNAMIC_LR, dynamic_segment: int = DYNAMIC_SEGMENT
    ):
        """How well the model predicts `text`: a TextScore with `loss_nats` (mean cross-entropy per
        character), `bpc` (bits per character) and `perplexity`. Every character but the first is
        predicted from all those before it; characters the model never saw are dropped and
        counted (`unknown`). Torch runs it where it can be imported, else NumPy, step by step.
        `dynamic`: also dynamic evaluation's loss (`.dynamic`: the model adapts to the text as it
        reads it, on a copy of its weights; needs torch), as `charrnn eval --dynamic`."""
        from charrnn.insight.scores import DynamicScore, TextScore, check_dynamic, drop_unknown

        if dynamic:
            check_dynamic(dynamic_lr, dynamic_segment)
        kept, unknown = drop_unknown(self.vocab, text)
        if len(kept) < 2:
            raise CharRNNError(
                f"the text has {plural(len(kept), 'character')} the model knows (of {len(text):,}); "
                f"at least 2 are needed to score it"
            )
        ids, found = self.vocab.encode(kept), None
        try:
            import torch  # noqa: F401
        except ImportError:
            if dynamic:
                raise CharRNNError(
                    "dynamic evaluation needs torch (its gradients), which cannot be imported here"
                ) from None
            loss = self._numpy_loss(ids)
        else:
            from charrnn.insight.scores import dynamic_loss, score_ids
            from charrnn.store.model_file import build_model

            if self._module is None:
                self._module = build_model(self.record)
            module = self._module
            loss = score_ids(module, ids)
            if dynamic:
                found = DynamicScore(
                    dynamic_loss(module, ids, dynamic_lr, dynamic_segment), dynamic_lr, dynamic_segment
                )
        return TextScore(chars=len(text), chars_scored=len(kept) - 1, loss_nats=loss, unknown=unknown, dynamic=found)

    def _numpy_loss(self, ids: np.ndarray) -> float:
        from charrnn.sample.engines import numpy_stepper

        stepper = numpy_stepper(self.record.weights, self.config)
        stepper.select(np.array([-1]))
        total = 0.0
        for now, following in zip(ids[:-1], ids[1:]):
            z = stepper.step(np.array([now], dtype=np.intp))[0].astype(np.float64)
            z -= z.max()
            total += np.log(np.exp(z).sum()) - z[following]
        return total / (len(ids) - 1)

    # ------------------------------------------------------------------ saving
    def save(self, folder: str | Path) -> Path:
        """Write the model as `folder/model.safetensors` (its weights, torch's names) and
        `folder/config.json` (its shape, vocabulary and training summary), files any tool opens
        (safetensors + JSON, as Hugging Face-style model folders lay them out; the weights keep
        torch's names and layout, so `torch.nn.LSTM`/`GRU`/`RNN` take them as they are), and
        `charrnn.load(folder)` reads back without torch. An earlier model folder there is replaced."""
        from charrnn.store.model_folder import save_model_folder

        return save_model_folder(self.record, folder)
