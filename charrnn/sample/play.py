"""`charrnn play`: an interactive session with a model in the terminal.

Each line typed is a prime; its continuation streams back. Lines starting with ':' change the
settings, shown in a status line before each prompt: `:temp 0.5`, `:top-k 5`, `:top-p 0.9`,
`:length 200`, `:seed 1` (or `:seed random`), `:beam 4` (beam search; `:beam 0` samples again),
`:keep on` (the next text goes on from the state where the last one stopped; an empty line then
just continues), `:help`. Ctrl-C stops the text being generated and stays in the session;
Ctrl-D (or `:quit`) leaves.

The session is plain logic over a stepper, a `read_line` and a `write`: the command line gives
it the terminal (readline brings history on the arrow keys) and the tests a pseudo-terminal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from charrnn.config import SampleConfig
from charrnn.data.vocab import Vocab
from charrnn.errors import CharRNNError
from charrnn.sample.beam import MAX_BEAM
from charrnn.sample.generate import Carry, Stepper, generate

HELP = """\
type a prime and press Enter: the model continues it (an empty line: from a newline, or with
:keep on, from where the last text stopped)
  :temp T     temperature; 0 takes the most likely character
  :top-k K    sample among the K most likely characters (0 = off)
  :top-p P    sample among the most likely characters whose mass reaches P (1 = off)
  :length N   characters per answer
  :seed S     the same seed gives the same text (:seed random)
  :beam N     beam search of width N: the most likely text (0 = sample)
  :keep on    go on from where the last text stopped (:keep off: each text afresh)
  :help       this list
Ctrl-C stops a text; Ctrl-D or :quit leaves; the arrow keys recall earlier lines"""


@dataclass
class Settings:
    temp: float = 0.8
    top_k: int = 0
    top_p: float = 1.0
    length: int = 300
    seed: int | None = None
    beam: int = 0
    keep: bool = False

    def status(self) -> str:
        parts = [
            f"temp {self.temp:g}",
            f"top-k {self.top_k or 'off'}",
            f"top-p {self.top_p:g}",
            f"length {self.length}",
            f"seed {'random' if self.seed is None else self.seed}",
            f"beam {self.beam or 'off'}",
            f"keep {'on' if self.keep else 'off'}",
        ]
        return " · ".join(parts)

    def sample_config(self, prime: str) -> SampleConfig:
        return SampleConfig(
            length=self.length,
            temp=self.temp,
            top_k=self.top_k,
            top_p=self.top_p,
            prime=prime,
            seed=self.seed,
            beam=self.beam,
        ).validate()


def _on_off(value: str) -> bool:
    if value not in ("on", "off"):
        raise ValueError
    return value == "on"


def _seed(value: str) -> int | None:
    return None if value == "random" else int(value)


SETTINGS = {
    "temp": ("temp", float),
    "top-k": ("top_k", int),
    "top-p": ("top_p", float),
    "length": ("length", int),
    "seed": ("seed", _seed),
    "beam": ("beam", int),
    "keep": ("keep", _on_off),
}


def apply_command(settings: Settings, line: str) -> Settings:
    """The settings after a ':name value' line; a CharRNNError for a bad one (nothing changes)."""
    name, _, value = line[1:].strip().partition(" ")
    if name not in SETTINGS:
        raise CharRNNError(f"unknown command :{name} (:help lists them)")
    field, parse = SETTINGS[name]
    try:
        changed = replace(settings, **{field: parse(value.strip())})
    except ValueError:
        raise CharRNNError(f":{name} {value.strip() or '(nothing)'}: not a valid value (:help lists them)") from None
    changed.sample_config("")  # the same rules as `sample`'s flags
    if changed.beam > MAX_BEAM:  # (memory grows with the width: 1,000,000 took 4.4 GB)
        raise CharRNNError(f":beam {changed.beam}: at most {MAX_BEAM}, as `charrnn serve` allows")
    return changed


class Session:
    """A model, the settings and what is carried between texts."""

    def __init__(self, stepper: Stepper, vocab: Vocab, settings: Settings | None = None):
        self.stepper, self.vocab = stepper, vocab
        self.settings = settings or Settings()
        self.carry = Carry()

    def answer(self, prime: str, write: Callable[[str], None]) -> None:
        """Continue `prime`, writing the prime and then the text as it comes."""
        cfg = self.settings.sample_config(prime)
        if cfg.beam:
            from charrnn.sample.beam import beam_texts

            self.carry.logits = None  # beam search starts from the prime alone
            write(beam_texts(self.stepper, self.vocab, cfg, unknown="skip")[0])
            return
        carry = self.carry if self.settings.keep else None
        try:
            for _, piece in generate(self.stepper, self.vocab, cfg, unknown="skip", carry=carry):
                write(piece)
        except KeyboardInterrupt:
            self.carry.logits = None  # stopped mid-text: the state may be half a step
            raise
        if not self.settings.keep:
            self.carry.logits = None


class Interrupts:
    """Ctrl-C as the session wants it, whatever their number: while a text is generated it stops
    that text, at the prompt it gives a new prompt, and anywhere else (the session's own
    bookkeeping between the two) it does nothing. The SIGINT handler raises KeyboardInterrupt only
    while armed, and disarms itself as it does: a storm of signals raises once per arming, never
    inside the `except` that handles the last one."""

    def __init__(self):
        self.armed = False

    def handler(self, signum, frame) -> None:
        if self.armed:
            self.armed = False
            raise KeyboardInterrupt


def run_session(
    session: Session,
    read_line: Callable[[str], str],
    write: Callable[[str], None],
    say: Callable[[str], None],
    interrupts: Interrupts | None = None,
) -> None:
    """The loop: status line, prompt, then a command or a text; until EOF (Ctrl-D) or :quit.
    `interrupts`: the armed SIGINT handler the command line installs (None: Ctrl-C raises as usual)."""
    interrupts = interrupts or Interrupts()
    say("charrnn play: type a prime and press Enter; :help lists the commands, Ctrl-D leaves")
    while True:
        say(session.settings.status())
        try:
            interrupts.armed = True
            line = read_line("> ")
            interrupts.armed = False
        except EOFError:
            interrupts.armed = False
            write("\n")
            return
        except KeyboardInterrupt:  # at the prompt: a new prompt, as in a shell
            write("\n")
            continue
        if line.strip() in (":quit", ":q", ":exit"):
            return
        if line.strip() == ":help":
            say(HELP)
            continue
        if line.startswith(":"):
            try:
                session.settings = apply_command(session.settings, line)
            except CharRNNError as exc:
                say(f"error: {exc}")
            continue
        try:
            interrupts.armed = True
            session.answer(line, write)
            interrupts.armed = False
            write("\n")
        except KeyboardInterrupt:
            write("\n")
            say("(stopped)")
        except CharRNNError as exc:
            interrupts.armed = False
            say(f"error: {exc}")
