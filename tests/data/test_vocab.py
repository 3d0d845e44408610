import numpy as np
import pytest

from charrnn.data.vocab import Vocab, codepoints, describe_chars, id_dtype, surrogates
from charrnn.errors import CharRNNError


def test_round_trip_unicode_and_sorted_ids():
    text = "héllo wörld 你好 😀\n"
    vocab = Vocab.from_text(text)
    assert list(vocab.chars) == sorted(set(text))
    ids = vocab.encode(text)
    assert vocab.decode(ids) == text
    assert Vocab.from_json(vocab.to_json()) == vocab


def test_smallest_dtype():
    assert id_dtype(1) == np.uint8 and id_dtype(256) == np.uint8
    with pytest.raises(ValueError, match=f"^vocabulary of {2**32 + 1} characters is too large$"):
        id_dtype(2**32 + 1)
    assert id_dtype(257) == np.uint16
    assert id_dtype(70_000) == np.uint32
    many = "".join(chr(0x4E00 + i) for i in range(3000))
    assert Vocab.from_text(many).encode(many).dtype == np.uint16


def test_unknown_characters_are_named():
    vocab = Vocab.from_text("abc")
    assert vocab.unknown("abxcz") == ["x", "z"]
    assert "a" in vocab and "q" not in vocab
    with pytest.raises(CharRNNError, match="'x'"):
        vocab.encode("abx")


def test_codepoints_match_ord():
    text = "a\u00e9\U0001f600"
    assert codepoints(text).tolist() == [ord(c) for c in text]
    assert codepoints("a\ud800b").tolist() == [
        97,
        0xD800,
        98,
    ]  # a lone surrogate is a code point too (to be found, then refused)


def test_the_surrogates_are_d800_to_dfff():
    points = np.array([0xD7FF, 0xD800, 0xDABC, 0xDFFF, 0xE000, 0x41], dtype=np.uint32)
    assert surrogates(points).tolist() == [0xD800, 0xDABC, 0xDFFF]


def test_a_vocabulary_is_distinct_sorted_characters():
    for chars in (("b", "a"), ("a", "a")):
        with pytest.raises(ValueError, match="^vocabulary characters must be distinct and sorted by code point$"):
            Vocab(chars)
    with pytest.raises(ValueError, match=r"^a vocabulary holds characters, not lone surrogates \(U\+D800\)$"):
        Vocab(("a", "\ud800"))


@pytest.mark.parametrize(
    "data",
    [
        {"chars": "a\ud800"},
        {"chars": "ba"},
        {"chars": "aa"},
        {"chars": ""},
        {"chars": ["a", "b"]},
        {"chars": 7},
        {},
        ["ab"],
        None,
    ],
    ids=["surrogate", "unsorted", "repeated", "empty", "list", "number", "no-chars", "not-a-dict", "null"],
)
def test_a_vocabulary_read_from_json_is_checked(data):
    """Only ValueError, with a reason: no TypeError/KeyError, and no lone surrogate (not a character,
    and not UTF-8: a model sampling one would break its promise of UTF-8 samples)."""
    with pytest.raises(ValueError) as info:
        Vocab.from_json(data)
    reason = str(info.value)
    if data in ({"chars": ""}, {"chars": ["a", "b"]}, {"chars": 7}, {}, ["ab"], None):
        assert reason == 'a vocabulary is written as {"chars": a non-empty string}'
    else:
        assert reason.startswith(
            ("a vocabulary holds characters, not lone surrogates", "vocabulary characters must be distinct and sorted")
        ), reason


def test_no_vocabulary_holds_a_lone_surrogate():
    with pytest.raises(ValueError, match="surrogate"):
        Vocab.from_text("ab\udcff")


def test_characters_are_described_readably_and_a_long_list_is_cut():
    assert describe_chars(["a", "\n", "\x00", "😀", "é"]) == "'a', U+000A, U+0000, '😀', 'é'"
    twenty = [chr(ord("a") + i) for i in range(20)]
    assert describe_chars(twenty) == ", ".join(repr(c) for c in twenty)  # all twenty, nothing more
    assert describe_chars(twenty + ["y", "z"]) == ", ".join(repr(c) for c in twenty) + " and 2 more"
    assert describe_chars(list("abcdef"), limit=4) == "'a', 'b', 'c', 'd' and 2 more"
