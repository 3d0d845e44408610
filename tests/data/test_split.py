"""The validation split: the contiguous tail of the corpus, the rest before it for training."""

from __future__ import annotations

import numpy as np
from conftest import words_text

from charrnn.data.prepare import prepare_corpus


def test_validation_is_the_tail_and_training_the_rest(tmp_path):
    text = (
        words_text(3000, seed=1) + "\n" + words_text(999, seed=2).upper()
    )  # 4000 characters, the last 999 in capitals
    path = tmp_path / "c.txt"
    path.write_text(text, encoding="utf-8")
    corpus = prepare_corpus([path], cache_dir=tmp_path / "cache")
    train, val = corpus.split(0.1)
    assert (len(train), len(val)) == (3600, 400)
    assert corpus.vocab.decode(val) == text[-400:] and corpus.vocab.decode(val).isupper()
    assert corpus.vocab.decode(train) == text[:3600]
    assert np.shares_memory(train, corpus.ids) and np.shares_memory(val, corpus.ids)  # views, no copy
    train, val = corpus.split(0.25)
    assert corpus.vocab.decode(val) == text[3000:] and corpus.vocab.decode(train) == text[:3000]


def test_a_split_too_small_for_one_prediction_is_none():
    from charrnn.data.corpus import Corpus
    from charrnn.data.vocab import Vocab

    corpus = Corpus("c", Vocab(("a", "b")), np.array([0, 1] * 10, dtype=np.uint8))
    train, val = corpus.split(0.05)  # 1 character: nothing to predict from it
    assert len(train) == 20 and len(val) == 0
    train, val = corpus.split(0.1)  # 2 characters: one prediction
    assert train.tolist() == [0, 1] * 9 and val.tolist() == [0, 1]
    train, val = corpus.split(0.0)
    assert len(train) == 20 and len(val) == 0
