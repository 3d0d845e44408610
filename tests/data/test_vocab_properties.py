"""Property-based tests of the vocabulary and of what is done with text it does not know: for
any Unicode text (lone surrogates, astral characters, NULs included), encoding round-trips or
is a CharRNNError naming the characters; a prime or a text to score loses exactly its unknown
characters (sample/generate.py prime_ids, insight/scores.py drop_unknown), or is refused with a
CharRNNError: never another exception. Deterministic (`derandomize`): the same examples on
every run."""

from __future__ import annotations

import os
from collections import Counter

import pytest

try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # (make setup installs it: the dev extra)
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("hypothesis is not installed (pip install -e '.[dev]')", allow_module_level=True)

from charrnn.data.vocab import Vocab, describe_chars
from charrnn.errors import CharRNNError
from charrnn.insight.scores import drop_unknown
from charrnn.sample.generate import prime_ids

FAST = settings(max_examples=200, deadline=None, database=None, derandomize=True)

# Any code point, lone surrogates too (they come from a corpus decoded with errors=surrogateescape).
any_char = st.characters(exclude_categories=()) | st.integers(0xD800, 0xDFFF).map(chr)
characters = st.characters(exclude_categories=("Cs",))  # characters a text can hold: no surrogates
near = st.sampled_from("abc \n\t\0é你😀\u2028\U0010ffff")  # some in the vocabulary, most often
any_text = st.text(any_char | near, max_size=80)
texts = st.text(characters | near, max_size=80)
alphabets = st.text(characters | near, min_size=1, max_size=40)


def is_surrogate(c: str) -> bool:
    return 0xD800 <= ord(c) <= 0xDFFF


@FAST
@given(st.text(characters | near, min_size=1, max_size=200))
def test_the_vocabulary_of_any_text_round_trips(text):
    vocab = Vocab.from_text(text)
    assert list(vocab.chars) == sorted(set(text))
    assert vocab.decode(vocab.encode(text)) == text
    assert vocab.unknown(text) == []
    assert Vocab.from_json(vocab.to_json()) == vocab


@FAST
@given(st.text(any_char, min_size=1, max_size=40))
def test_lone_surrogates_make_no_vocabulary_and_say_so(text):
    if any(map(is_surrogate, text)):
        with pytest.raises(ValueError, match="not lone surrogates"):
            Vocab.from_text(text)
    else:
        assert Vocab.from_text(text).decode(Vocab.from_text(text).encode(text)) == text


@FAST
@given(st.text(any_char | near, max_size=40))
def test_a_vocabulary_read_back_is_one_or_a_value_error(chars):
    try:
        vocab = Vocab.from_json({"chars": chars})
    except ValueError:
        return
    assert "".join(vocab.chars) == chars


@FAST
@given(alphabets, any_text)
def test_any_text_encodes_or_names_what_the_vocabulary_lacks(alphabet, text):
    vocab = Vocab.from_text(alphabet)
    missing = list(dict.fromkeys(c for c in text if c not in set(alphabet)))
    assert vocab.unknown(text) == missing
    if missing:
        with pytest.raises(CharRNNError, match="characters not in the vocabulary"):
            vocab.encode(text)
    else:
        assert vocab.decode(vocab.encode(text)) == text


@FAST
@given(alphabets, any_text)
def test_a_prime_loses_exactly_its_unknown_characters_or_is_refused(alphabet, text):
    vocab = Vocab.from_text(alphabet)
    kept = "".join(c for c in text if c in set(alphabet))
    missing = list(dict.fromkeys(c for c in text if c not in set(alphabet)))
    ids, prime, dropped = prime_ids(vocab, text, "skip")
    assert (prime, dropped) == (kept, missing)
    assert vocab.decode(ids) == prime if prime else len(ids) == 1 and 0 <= ids[0] < len(vocab)
    if missing:
        with pytest.raises(CharRNNError, match="the prime text has characters the model never saw"):
            prime_ids(vocab, text, "error")
    else:
        assert prime_ids(vocab, text, "error") == (ids, prime, [])


@FAST
@given(alphabets, any_text)
def test_a_text_to_score_loses_exactly_its_unknown_characters_counted(alphabet, text):
    vocab = Vocab.from_text(alphabet)
    kept, unknown = drop_unknown(vocab, text)
    assert kept == "".join(c for c in text if c in set(alphabet))
    assert unknown == dict(Counter(c for c in text if c not in set(alphabet)))
    assert list(unknown.values()) == sorted(unknown.values(), reverse=True)  # the most frequent first


@FAST
@given(st.lists(any_char, max_size=30))
def test_any_characters_are_described_in_a_line(chars):
    line = describe_chars(chars)
    assert isinstance(line, str) and "\n" not in line and "\0" not in line
    line.encode("utf-8")  # (printable: no lone surrogate reaches a terminal or a JSON answer)
