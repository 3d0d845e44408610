"""Property-based tests of what a request to `charrnn serve` may hold: any JSON body (and any
bytes) given to the parsing of /v1/sample, /v1/score, /v1/neurons and /v1/completions gets an
answer or a `BadRequest` (a 4xx with the field at fault), never another exception, which the
server would answer as a 500 with a traceback on its stderr.

The parsing functions are called directly, on a tiny model trained here, with bodies that
hypothesis generates: JSON of every shape, and objects whose keys are the fields the endpoint
knows with values of every type (so that the checks past the first one are reached too).
Deterministic (`derandomize`): the same examples on every run, so that a failure is one to
reproduce, not a flaky test.
"""

from __future__ import annotations

import json
import os

import pytest

from serve.test_serve import tiny_checkpoint  # noqa: F401  (the fixture)

try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:  # (make setup installs it: the dev extra)
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("hypothesis is not installed (pip install -e '.[dev]')", allow_module_level=True)

from charrnn.errors import CharRNNError
from charrnn.serve import api
from charrnn.serve.api import BadRequest, Limits
from charrnn.serve.openai_api import FIELDS as COMPLETION_FIELDS
from charrnn.serve.openai_api import Completion

FAST = settings(
    max_examples=150,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
LIMITS = Limits(max_length=200, max_seconds=1.0)

# Any JSON value: scalars of every kind (NaN and infinities too: Python's json reads them; huge
# integers, which json reads exactly), nested in lists and objects.
EDGES = [0, -1, 1, 2**31, 2**63, -(2**63), 10**400, -(10**400), 1e308, -1e308, 5e-324, float("nan")]
EDGES += [float("inf"), float("-inf"), "", " ", "\0", "\ud800", "\U0010ffff", "\n" * 50, "x" * 3000]
scalars = (
    st.sampled_from(EDGES)
    | st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


ints = st.integers(min_value=-5, max_value=300) | st.sampled_from([2**31, 2**63, -(2**63), 10**400, -(10**400)])
floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0, 1, 10**400, -(10**400), 2**63])
texts = st.text(max_size=60) | st.sampled_from([s for s in EDGES if isinstance(s, str)])
OF_TYPE = {  # a value of a field's type (JSON's: an int stands for a float), edges included
    "int": ints,
    "float": floats,
    "str": texts,
    "bool": st.booleans(),
    "list[str]": st.lists(texts, max_size=5),
    "dict": st.dictionaries(st.text(max_size=16), values, max_size=3),
    "list": st.lists(texts, max_size=5),
}


def of_type(annotation) -> st.SearchStrategy:
    """Values of a field's annotation ('int | None', or a tuple of types), mostly of that type."""
    names = (
        [a.__name__ for a in annotation] if isinstance(annotation, tuple) else annotation.replace(" ", "").split("|")
    )
    typed = [OF_TYPE[name] for name in names if name in OF_TYPE]
    return st.one_of(*typed, st.none()) | values if typed else values


def objects_of(fields: dict) -> st.SearchStrategy:
    """JSON objects of an endpoint's `fields` (name: annotation), each present or not, mostly of
    its type (so that every check is reached, not only the first type check that fails), and
    sometimes with other keys, which are refused before anything else is checked."""
    known = st.fixed_dictionaries({}, optional={name: of_type(kind) for name, kind in sorted(fields.items())})
    return known | st.dictionaries(st.sampled_from(sorted(fields)) | st.text(max_size=8), values, max_size=6)


def body(obj) -> bytes:
    return json.dumps(obj).encode()


@pytest.fixture(scope="module")
def models(tiny_checkpoint):  # noqa: F811
    from charrnn.serve.models import load_models

    return load_models([tiny_checkpoint])


def answered_or_refused(call) -> None:
    """`call()` answers, or raises a BadRequest with a 4xx status that names a field or none."""
    try:
        call()
    except BadRequest as exc:
        assert 400 <= exc.status < 500 and str(exc) and (exc.field is None or isinstance(exc.field, str))


@FAST
@given(st.binary(max_size=200) | values.map(body))
def test_any_body_is_a_json_object_or_a_400(raw):
    try:
        assert isinstance(api.parse_json(raw), dict)
    except BadRequest as exc:
        assert exc.status == 400 and exc.field is None


# A float field given an integer too large for a float (JSON reads 1e400 as inf, but 1000...0,
# 400 digits, as an exact int) was an OverflowError, a 500: the property tests found it.
@pytest.mark.parametrize("field", ["temp", "top_p", "beam_norm"])
def test_an_integer_too_large_for_a_float_field_is_a_400_in_sample(models, field):
    with pytest.raises(BadRequest, match=field):
        api.parse_sample(body({field: -(10**400)}), models, LIMITS)


@pytest.mark.parametrize("field", ["temperature", "top_p"])
def test_an_integer_too_large_for_a_float_field_is_a_400_in_completions(models, field):
    with pytest.raises(BadRequest, match=field):
        Completion(body({field: 10**400}), models, LIMITS)


@FAST
@given(objects_of(api.SAMPLE_FIELDS))
def test_any_sample_request_is_parsed_or_refused(models, data):
    answered_or_refused(lambda: api.parse_sample(body(data), models, LIMITS))


@FAST
@given(objects_of({"model": "str | None", "text": "str"}))
def test_any_score_request_is_scored_or_refused(models, data):
    answered_or_refused(lambda: api.score(body(data), models))


@FAST
@given(objects_of({"model": "str | None", "text": "str", "state": "str | None", "top": "int"}))
def test_any_neurons_request_is_answered_or_refused(models, data):
    answered_or_refused(lambda: api.neurons(body(data), models))


@FAST
@given(objects_of(COMPLETION_FIELDS))
def test_any_completion_request_is_parsed_or_refused(models, data):
    answered_or_refused(lambda: Completion(body(data), models, LIMITS))


def test_bad_requests_are_charrnn_errors():
    assert issubclass(BadRequest, CharRNNError)


def test_score_with_dynamic_evaluation(models):
    text = "the cat sat on the mat " * 20
    answer = api.score(body({"text": text, "dynamic": True, "dynamic_lr": 1e-2}), models)
    assert answer["dynamic"]["lr"] == 1e-2 and answer["dynamic"]["loss_nats"] < answer["loss_nats"] - 0.05
    assert "dynamic" not in api.score(body({"text": text}), models)
    with pytest.raises(BadRequest, match="dynamic_lr"):
        api.score(body({"text": text, "dynamic": True, "dynamic_lr": -1}), models)
