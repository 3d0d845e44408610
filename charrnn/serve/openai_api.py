"""`POST /v1/completions` in the OpenAI API's shape, so that every client that speaks it (the
`openai` package, LangChain, curl scripts written for llama.cpp, Ollama or vLLM) works with
charrnn: a token is a character here.

    prompt       a string, or a list of strings (each with its own `n` choices)
    max_tokens   characters to generate (default 16, as OpenAI's)
    temperature  default 1; 0 = greedy       top_p     nucleus, default 1
    n            choices per prompt          seed      the same seed, the same text
    stop         a string or up to 4: the text ends before it (finish_reason "stop")
    stream       server-sent events (`data: {...}`, then `data: [DONE]`); `stream_options:
                 {"include_usage": true}` adds a last chunk with the usage
    echo         the prompt before each choice's text
    logprobs     0-5: each character's log-probability under the model (before temperature)
                 and that many most likely alternatives (tokens, token_logprobs, top_logprobs,
                 text_offset)
    top_k        charrnn's own (as vLLM's): only the k most likely characters
    user         accepted and ignored

A stream that runs out of the server's `--max-seconds` ends with finish_reason "length". Errors
are OpenAI's: {"error": {"message", "type": "invalid_request_error", "param", "code"}}.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from typing import Any

from charrnn.config import SampleConfig
from charrnn.errors import CharRNNError
from charrnn.sample.batch import Stream, config_streams
from charrnn.serve.api import MAX_SAMPLES, BadRequest, Limits, _as_fields, _field_of, parse_json, pick_model

MAX_STOPS = 4
MAX_LOGPROBS = 5
FIELDS = {
    "model": (str, type(None)),
    "prompt": (str, list, type(None)),
    "max_tokens": (int, type(None)),
    "temperature": (int, float, type(None)),
    "top_p": (int, float, type(None)),
    "n": (int, type(None)),
    "stop": (str, list, type(None)),
    "seed": (int, type(None)),
    "stream": (bool, type(None)),
    "stream_options": (dict, type(None)),
    "echo": (bool, type(None)),
    "logprobs": (int, type(None)),
    "top_k": (int, type(None)),
    "user": (str, type(None)),
}


def openai_error(exc: BadRequest):
    from starlette.responses import JSONResponse

    kind = "invalid_request_error" if exc.status < 500 else "server_error"
    code = "model_not_found" if exc.status == 404 and exc.field == "model" else None
    return JSONResponse(
        {"error": {"message": str(exc), "type": kind, "param": exc.field, "code": code}}, status_code=exc.status
    )


class Completion:
    """One /v1/completions request, checked: its streams (one per prompt and choice) and options."""

    def __init__(self, body: bytes, models, limits: Limits):
        data = parse_json(body)
        for key, value in data.items():
            if key not in FIELDS:
                raise BadRequest(
                    key, f"{key} is not a field charrnn's completions take (known: {', '.join(sorted(FIELDS))})"
                )
            if not isinstance(value, FIELDS[key]) or (isinstance(value, bool) and bool not in FIELDS[key]):
                raise BadRequest(key, f"{key}: {json.dumps(value)[:80]} is not of the right type")
        self.model = pick_model(models, data.get("model"))
        prompt = data.get("prompt")
        prompts = [""] if prompt is None else [prompt] if isinstance(prompt, str) else prompt
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise BadRequest(
                "prompt", "prompt must be a string or a list of strings (charrnn's tokens are characters: no token ids)"
            )
        stop = data.get("stop")
        stops = [] if stop is None else [stop] if isinstance(stop, str) else stop
        if len(stops) > MAX_STOPS or not all(isinstance(s, str) and s for s in stops):
            raise BadRequest("stop", f"stop must be a non-empty string or a list of at most {MAX_STOPS}")
        self.n = data.get("n") if data.get("n") is not None else 1
        if self.n < 1 or self.n * len(prompts) > MAX_SAMPLES:
            raise BadRequest("n", f"n {self.n} × {len(prompts)} prompt(s) must be from 1 to {MAX_SAMPLES} choices")
        self.logprobs = data.get("logprobs")
        if self.logprobs is not None and not 0 <= self.logprobs <= MAX_LOGPROBS:
            raise BadRequest("logprobs", f"logprobs {self.logprobs} must be from 0 to {MAX_LOGPROBS}")
        length = data.get("max_tokens") if data.get("max_tokens") is not None else min(16, limits.max_length)
        if length > limits.max_length:
            raise BadRequest(
                "max_tokens", f"max_tokens {length} is more than this server's --max-length: {limits.max_length}"
            )
        self.echo, self.stream = bool(data.get("echo")), bool(data.get("stream"))
        self.include_usage = bool((data.get("stream_options") or {}).get("include_usage"))
        try:
            self.cfgs = [
                SampleConfig(
                    length=length,
                    temp=_float(data, "temperature", 1.0),
                    top_k=_default(data, "top_k", 0),
                    top_p=_float(data, "top_p", 1.0),
                    prime=p,
                    seed=data.get("seed"),
                    num_samples=self.n,
                    stop=stops,
                ).validate()
                for p in prompts
            ]
        except CharRNNError as exc:
            field = {"length": "max_tokens", "temp": "temperature", "num_samples": "n"}.get(
                _field_of(exc) or "", _field_of(exc)
            )
            raise BadRequest(
                field, _as_fields(str(exc)).replace("length ", "max_tokens ").replace("temp ", "temperature ")
            ) from None
        from charrnn.sample.generate import prime_ids

        self.prompts = prompts
        self.ids = []
        for p in prompts:
            try:
                self.ids.append(prime_ids(self.model.vocab, p, "error")[0])
            except CharRNNError as exc:
                raise BadRequest(
                    "prompt", _as_fields(str(exc)).replace(" (use unknown skip to drop them)", "")
                ) from None
        self.stops = stops
        self.id = "cmpl-" + uuid.uuid4().hex
        self.created = int(time.time())

    def streams(self, deadline: float) -> list[Stream]:
        top = self.logprobs if self.logprobs is not None else None
        every = []
        for p, (cfg, ids) in enumerate(zip(self.cfgs, self.ids)):
            for s in config_streams(cfg, ids, deadline=deadline, top_logprobs=top):
                s.tag = (p, s.tag)
                every.append(s)
        return every

    # -------------------------------------------------------------- what a choice says
    def visible(self, s: Stream, final: bool) -> int:
        """How many of the stream's characters may be shown: the stop string and what may still
        become one are held back (OpenAI's text ends before the stop string)."""
        n = len(s.text)
        if not self.stops:
            return n
        longest = max(map(len, self.stops))
        tail = "".join(s.text[-longest:])
        met = [len(x) for x in self.stops if tail.endswith(x)]
        if met:  # (the engine ends a stream at the first stop string: it can only be at the end,
            return n - max(met)  # and the text may show it a moment before the stream says "stop")
        return n if final else max(0, n - (longest - 1))

    def logprob_part(self, s: Stream, start: int, end: int, offset: int) -> dict[str, Any] | None:
        if self.logprobs is None:
            return None
        chars, entries = s.text[start:end], s.logprobs[start:end]
        offsets, at = [], offset
        for c in chars:
            offsets.append(at)
            at += len(c)
        return {
            "tokens": list(chars),
            "token_logprobs": [_finite(lp) for lp, _ in entries],
            "top_logprobs": [{k: _finite(v) for k, v in top.items()} if self.logprobs else None for _, top in entries],
            "text_offset": offsets,
        }

    def finish_reason(self, s: Stream) -> str:
        return "stop" if s.stopped == "stop" else "length"

    def usage(self, streams: list[Stream]) -> dict[str, int]:
        prompt = sum(len(p) for p in self.prompts)
        completion = sum(self.visible(s, True) for s in streams)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def chunk(self, choices: list[dict[str, Any]], **extra) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model.name,
            "choices": choices,
            **extra,
        }


def _default(data: dict[str, Any], key: str, default):
    return data[key] if data.get(key) is not None else default


def _float(data: dict[str, Any], key: str, default: float) -> float:
    """A number field as a float (its type was checked): an integer beyond float's range is a 400."""
    try:
        return float(_default(data, key, default))
    except OverflowError:
        raise BadRequest(key, f"{key} is an integer too large for a number of this kind") from None


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


async def completions(request, models, limits: Limits):
    from starlette.responses import JSONResponse, Response, StreamingResponse

    from charrnn.serve.guard import read_body
    from charrnn.serve.server import run_streams, stopped_of, stream_pieces

    try:
        req = Completion(await read_body(request), models, limits)
    except BadRequest as exc:
        return openai_error(exc)
    streams = req.streams(req.model.engine.clock() + limits.max_seconds)
    if not req.stream:
        if await run_streams(req.model, streams, request) is None:
            return Response(status_code=499)
        if stopped_of(streams) == "error":
            return openai_error(
                BadRequest(None, "internal error while generating (the server's log says why)", status=500)
            )
        choices = []
        for i, s in enumerate(streams):
            shown = req.visible(s, True)
            prompt = req.prompts[s.tag[0]]
            choices.append(
                {
                    "index": i,
                    "text": (prompt if req.echo else "") + "".join(s.text[:shown]),
                    "logprobs": req.logprob_part(s, 0, shown, len(prompt) if req.echo else 0),
                    "finish_reason": req.finish_reason(s),
                }
            )
        return JSONResponse(req.chunk(choices, usage=req.usage(streams)))

    async def events():
        shown = [0] * len(streams)
        offsets = [len(req.prompts[s.tag[0]]) if req.echo else 0 for s in streams]
        if req.echo:
            yield _event(
                req.chunk(
                    [
                        {"index": i, "text": req.prompts[s.tag[0]], "logprobs": None, "finish_reason": None}
                        for i, s in enumerate(streams)
                    ]
                )
            )
        async for pieces in stream_pieces(req.model, streams, request):
            choices = []
            for i, _ in pieces:
                s = streams[i]
                upto = req.visible(s, s.done.is_set())
                if upto > shown[i]:
                    text = "".join(s.text[shown[i] : upto])
                    choices.append(
                        {
                            "index": i,
                            "text": text,
                            "logprobs": req.logprob_part(s, shown[i], upto, offsets[i]),
                            "finish_reason": None,
                        }
                    )
                    offsets[i] += len(text)
                    shown[i] = upto
            if choices:
                yield _event(req.chunk(choices))
        last = []
        for i, s in enumerate(streams):
            upto = req.visible(s, True)
            text = "".join(s.text[shown[i] : upto])
            last.append(
                {
                    "index": i,
                    "text": text,
                    "logprobs": req.logprob_part(s, shown[i], upto, offsets[i]),
                    "finish_reason": req.finish_reason(s),
                }
            )
        yield _event(req.chunk(last))
        if req.include_usage:
            yield _event(req.chunk([], usage=req.usage(streams)))
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})


def _event(obj: dict[str, Any]) -> str:
    return "data: " + json.dumps(obj, ensure_ascii=False) + "\n\n"
