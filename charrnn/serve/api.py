"""What `charrnn serve` answers, without the HTTP: the models served and the requests they take.

The models are loaded once, at start (models.py); a request names one of them by its name
(never by a path), so nothing a request says reaches the disk. A request's samples are streams
of the model's engine (sample/batch.py), each with its own state row and random numbers, so
requests served side by side do not disturb each other; a beam search gets its own stepper.

A request is a JSON object. Its fields are checked here for their type and then by
`SampleConfig.validate`, the one home of the rules `charrnn sample` follows; a mistake is a
`BadRequest` that names the field.
"""

from __future__ import annotations

import base64
import json
import re
import time
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from charrnn.config import SampleConfig, defaults, typed_value
from charrnn.errors import CharRNNError
from charrnn.sample.beam import MAX_BEAM
from charrnn.serve.models import ServedModel

MAX_SAMPLES = 16  # samples (or beams) per request: each is a stream of the batch
MAX_TEXT = 100_000  # characters of a prime or of a text to score
NEURONS_MAX_CHARS = 2000  # characters of the cell-activation view (as `neurons --max-chars`)
SAMPLE_DEFAULTS = defaults(SampleConfig)


class BadRequest(CharRNNError):
    """A request the server refuses: HTTP `status`, the JSON field at fault, and why."""

    def __init__(self, field: str | None, message: str, status: int = 400):
        super().__init__(message)
        self.field, self.status = field, status

    def to_json(self) -> dict[str, Any]:
        return {"error": str(self), "field": self.field}


@dataclass
class Limits:
    """The bounds of one request, from `serve --max-length` and `--max-seconds`."""

    max_length: int = 2000  # characters generated per sample
    max_seconds: float = 30.0  # wall time of one request's generation


# ------------------------------------------------------------------ reading a request
def parse_json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body.decode("utf-8")) if body.strip() else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(None, f"the body is not JSON: {exc}") from None
    except RecursionError:
        raise BadRequest(None, "the body is JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise BadRequest(None, "the body must be a JSON object")
    return data


def _check_fields(data: dict[str, Any], known: dict[str, str]) -> None:
    """Every field known and of its type (annotations as SampleConfig's: 'int', 'float | None')."""
    for key, value in data.items():
        if key not in known:
            raise BadRequest(key, f"unknown field {key!r} (known: {', '.join(sorted(known))})")
        try:
            data[key] = typed_value(known[key], value)
        except TypeError:
            raise BadRequest(key, f"{key}: {json.dumps(value)[:80]} should be of type {known[key]}") from None
        if isinstance(data[key], str) and "\0" in data[key]:
            raise BadRequest(key, f"{key}: a NUL character cannot be part of it")


def pick_model(models: dict[str, ServedModel], name: str | None) -> ServedModel:
    """The model a request names, or the first served. Only names: no path reaches the disk."""
    if name is None:
        return next(iter(models.values()))
    if name not in models:
        raise BadRequest("model", f"model {name!r} is not served here (served: {', '.join(models)})", status=404)
    return models[name]


def _field_of(exc: CharRNNError) -> str | None:
    """The field a validation message names: SampleConfig's start with the flag (--top-k ...)."""
    first = str(exc).split(" ", 1)[0]
    return first[2:].replace("-", "_") if first.startswith("--") else None


def _as_fields(message: str) -> str:
    """A command-line message in the API's words: --top-k is the field top_k."""
    return re.sub(r"--([a-z][a-z-]*)", lambda m: m.group(1).replace("-", "_"), message)


SAMPLE_FIELDS = {f.name: str(f.type) for f in fields(SampleConfig)} | {
    "model": "str | None",
    "stream": "bool",
    "unknown": "str",
}


@dataclass
class SampleRequest:
    model: ServedModel
    cfg: SampleConfig
    stream: bool
    unknown: str


def parse_sample(body: bytes, models: dict[str, ServedModel], limits: Limits) -> SampleRequest:
    data = parse_json(body)
    if isinstance(data.get("stop"), str):
        data["stop"] = [data["stop"]]  # one stop string, as a string
    _check_fields(data, SAMPLE_FIELDS)
    model = pick_model(models, data.pop("model", None))
    stream = data.pop("stream", True)
    unknown = data.pop("unknown", "error")
    if unknown not in ("error", "skip"):
        raise BadRequest("unknown", f"unknown {unknown!r} is not one of: error, skip")
    data.setdefault("length", min(SAMPLE_DEFAULTS["length"], limits.max_length))
    try:
        cfg = SampleConfig(**data).validate()
    except CharRNNError as exc:
        raise BadRequest(_field_of(exc), _as_fields(str(exc))) from None
    for name, value, bound, flag in (
        ("length", cfg.length, limits.max_length, "this server's --max-length"),
        ("num_samples", cfg.num_samples, MAX_SAMPLES, "the most a request may ask"),
        ("beam", cfg.beam, MAX_BEAM, "the widest beam a request may ask"),
        ("prime", len(cfg.prime), MAX_TEXT, "the longest prime a request may give (characters)"),
    ):
        if value > bound:
            raise BadRequest(name, f"{name} {value} is more than {flag}: {bound}")
    try:
        from charrnn.sample.generate import prime_ids

        prime_ids(model.vocab, cfg.prime, unknown)
    except CharRNNError as exc:
        raise BadRequest("prime", _as_fields(str(exc)).replace("unknown skip", '"unknown": "skip"')) from None
    return SampleRequest(model, cfg, stream, unknown)


# ------------------------------------------------------------------ beam search
class _Deadline:
    """A stepper that refuses to step past the request's deadline (beam search has no text to
    give before its end, so running out of time is an error, not a shorter text)."""

    def __init__(self, stepper, deadline: float, max_seconds: float):
        self.inner, self.deadline, self.max_seconds = stepper, deadline, max_seconds

    def prime(self, ids, batch_size):
        return self.inner.prime(ids, batch_size)

    def step(self, ids):
        if time.monotonic() > self.deadline:
            raise BadRequest(
                "beam",
                f"the beam search took longer than this server's --max-seconds {self.max_seconds:g}: ask for a "
                "narrower beam or a shorter length",
            )
        return self.inner.step(ids)

    def select(self, rows):
        self.inner.select(rows)


def beam_answer(request: SampleRequest, limits: Limits) -> dict[str, Any]:
    """A beam search (in a thread of the pool, with a stepper of its own: the best beam is known
    only at the end), answered as one JSON object."""
    from charrnn.sample.beam import beam_texts

    started = time.monotonic()
    stepper = _Deadline(request.model.stepper(), started + limits.max_seconds, limits.max_seconds)
    samples = list(beam_texts(stepper, request.model.vocab, request.cfg, request.unknown))
    return {
        "model": request.model.name,
        "text": samples[0],
        "samples": samples,
        "stopped": "beam",
        "seconds": round(time.monotonic() - started, 4),
    }


# ------------------------------------------------------------------ scores and activations
def score(body: bytes, models: dict[str, ServedModel]) -> dict[str, Any]:
    """The loss of a text under a model: `charrnn eval`'s numbers (evaluate.score_text)."""
    from charrnn.config import DYNAMIC_LR, DYNAMIC_SEGMENT
    from charrnn.insight.scores import check_dynamic, score_text

    data = parse_json(body)
    fields = {"model": "str | None", "text": "str", "dynamic": "bool", "dynamic_lr": "float", "dynamic_segment": "int"}
    _check_fields(data, fields)
    model = pick_model(models, data.get("model"))
    text = data.get("text")
    if text is None:
        raise BadRequest("text", "text: the text to score is missing")
    limit = MAX_TEXT // 10 if data.get("dynamic") else MAX_TEXT  # (dynamic: a backward pass a segment)
    if len(text) > limit:
        raise BadRequest("text", f"text of {len(text):,} characters is more than a request may score: {limit:,}")
    dynamic = None
    if data.get("dynamic"):
        dynamic = (data.get("dynamic_lr", DYNAMIC_LR), data.get("dynamic_segment", DYNAMIC_SEGMENT))
        try:
            check_dynamic(*dynamic)
        except CharRNNError as exc:
            raise BadRequest("dynamic", str(exc).replace("--dynamic-", "dynamic_")) from None
    try:
        result = score_text(model.module, model.vocab, text, dynamic=dynamic)
    except CharRNNError as exc:
        raise BadRequest("text", str(exc)) from None
    return {"model": model.name, **result.to_json()}


def neurons(body: bytes, models: dict[str, ServedModel]) -> dict[str, Any]:
    """The cell-activation view of a text (neurons.activations), every unit of every layer,
    quantised to int8 (value × 127, base64, in (T, L, H) order), with the colour of each
    quantised value (neurons_view.colour) and the units `neurons --find` ranks best."""
    from charrnn.insight.neurons import activations, check_choice, rank_units, text_features
    from charrnn.insight.neurons_view import colour, shown
    from charrnn.insight.scores import drop_unknown

    data = parse_json(body)
    _check_fields(data, {"model": "str | None", "text": "str", "state": "str | None", "top": "int"})
    model = pick_model(models, data.get("model"))
    text = data.get("text") or ""
    truncated = len(text) > NEURONS_MAX_CHARS
    text, unknown = drop_unknown(model.vocab, text[:NEURONS_MAX_CHARS])
    if not text:
        raise BadRequest("text", "text: no characters the model knows to show")
    top = data.get("top", 3)
    if not 1 <= top <= 20:
        raise BadRequest("top", f"top {top} must be in [1, 20]")
    try:
        _, state = check_choice(model.module, None, None, data.get("state"))
    except CharRNNError as exc:
        raise BadRequest("state", _as_fields(str(exc))) from None
    acts = activations(model.module, model.vocab, text, state)  # (T, L, H)
    matches, absent = rank_units(acts, text_features(text), top)
    quantised = np.clip(np.round(acts * 127), -127, 127).astype(np.int8)
    return {
        "model": model.name,
        "text": text,
        "shown": [shown(c) for c in text],
        "state": state,
        "layers": model.cfg.layers,
        "hidden": model.cfg.hidden,
        "values": base64.b64encode(quantised.tobytes()).decode("ascii"),
        "palette": ["#{:02x}{:02x}{:02x}".format(*colour(q / 127)) for q in range(-127, 128)],
        "best": [
            {"feature": m.feature, "layer": m.layer, "unit": m.unit, "correlation": round(m.correlation, 4)}
            for m in matches
        ],
        "absent": absent,
        "unknown": unknown,
        "truncated": truncated,
    }
