"""charrnn.load(...) -> Model, used the way a notebook would: the same text as `charrnn sample`,
streaming, scoring, beams, errors, and threads that overlap."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from tiny_run import invoke, structured_text, train_tiny_run

import charrnn
from charrnn.insight.scores import score_text
from charrnn.store.model_file import build_model, open_model_file


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("api") / "run"
    train_tiny_run(folder, structured_text(6000), max_steps=200)
    return folder


@pytest.fixture(scope="module")
def model(run_folder):
    return charrnn.load(run_folder)


def cli_sample(folder, *args) -> str:
    result = invoke("sample", "-c", folder, *args)
    assert result.exit_code == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("engine", ["packed", "numpy", "torch"])
def test_generate_gives_the_text_of_charrnn_sample_with_the_same_seed(run_folder, engine):
    model = charrnn.load(run_folder, engine=engine)
    texts = model.generate("The ", length=120, temperature=0.9, top_k=5, seed=7, n=3)
    assert isinstance(texts, list) and len(texts) == 3
    assert all(t.startswith("The ") and len(t) == 4 + 120 for t in texts)
    assert len(set(texts)) == 3  # three samples, not one three times
    printed = cli_sample(
        run_folder, "--prime", "The ", "--length", "120", "--temp", "0.9", "--top-k", "5", "--seed", "7",
        "--num-samples", "3", "--separator", "|", "--engine", engine,
    )  # fmt: skip
    assert printed == "|".join(texts)
    # one sample: a string, the first of the three (sample b draws the b-th random numbers)
    assert model.generate("The ", length=120, temperature=0.9, top_k=5, seed=7) == texts[0]


def test_stream_yields_the_generated_text_in_pieces_and_may_be_left_early(model):
    whole = model.generate("a", length=200, temperature=1.0, seed=3, n=2)
    pieces = list(model.stream("a", length=200, temperature=1.0, seed=3, n=2, separator="\n--\n"))
    assert len(pieces) > 100  # character by character, not all at the end
    assert "".join(pieces) == "\n--\n".join(whole)
    first = next(iter(model.stream("a", length=200, temperature=1.0, seed=3)))
    assert first == "a"  # the prime, echoed at once
    unread = model.stream("a", length=10**6, seed=1)
    next(unread), next(unread)  # a stream read halfway and left open...
    assert model.generate("a", length=50, temperature=1.0, seed=3) == whole[0][:51]  # ...does not block the next call
    unread.close()


def test_options_the_command_has(model):
    plain = model.generate("the", length=80, temperature=0, echo=False)
    assert plain == model.generate("the", length=80, temperature=0, echo=False)  # greedy: no randomness
    assert model.generate("the", length=80, temperature=0) == "the" + plain
    stopped = model.generate("the", length=500, temperature=1.0, seed=2, stop=".")
    assert stopped.endswith(".") and stopped.count(".") == 1
    assert model.generate("", length=30, seed=1, n=1) == [model.generate(length=30, seed=1)]
    beams = model.generate("the", length=40, beam=4, n=2)
    assert cli_sample(model.record.path, "--prime", "the", "--length", "40", "--beam", "4", "--num-samples", "2",
                      "--separator", "|") == "|".join(beams)  # fmt: skip


def test_errors_are_charrnn_errors_with_the_commands_words(model):
    with pytest.raises(charrnn.CharRNNError, match="never saw: 'Ж'"):
        model.generate("Ж", length=5)
    assert model.generate("Жthe", length=5, seed=1, unknown="skip").startswith("the")
    assert model.unknown_chars("Жthe") == ["Ж"]
    with pytest.raises(charrnn.CharRNNError, match="--temp"):
        model.generate(temperature=-1)
    with pytest.raises(charrnn.CharRNNError, match="--top-p"):
        list(model.stream(top_p=0))
    with pytest.raises(charrnn.CharRNNError, match="no such checkpoint"):
        charrnn.load("/nonexistent/model.pt")


def test_score_is_the_models_loss_on_the_text_with_or_without_torch(model, run_folder):
    text = structured_text(3000, seed=5)
    score = model.score(text)
    record = open_model_file(run_folder)
    expected = score_text(build_model(record), record.vocab, text)
    assert score.loss_nats == pytest.approx(expected.loss_nats, rel=1e-6)
    assert score.bpc == pytest.approx(score.loss_nats / np.log(2))
    assert score.chars_scored == len(text) - 1
    # the NumPy path (no torch) steps through the same text: the same loss to float32 rounding
    assert model._numpy_loss(record.vocab.encode(text[:500])) == pytest.approx(
        model.score(text[:500]).loss_nats, rel=1e-4
    )
    # a text the model saw often is likelier than a shuffled one
    shuffled = "".join(np.random.default_rng(0).permutation(list(text)))
    assert model.score(shuffled).loss_nats > score.loss_nats + 0.3


def test_info_says_what_the_model_is(model, run_folder):
    record = open_model_file(run_folder)
    info = model.info
    assert (info.cell, info.layers, info.hidden, info.embed) == ("lstm", 2, 16, 8)
    assert info.chars == "".join(record.vocab.chars) and info.vocab_size == len(record.vocab)
    assert info.training.step == record.info.progress.step and info.training.step > 0
    assert info.training.best_val_loss == pytest.approx(record.info.progress.best_loss)
    assert info.best_val_bpc == pytest.approx(record.info.progress.best_loss / np.log(2))
    assert info.parameters == sum(w.size for w in record.weights.values())


def test_the_library_prints_nothing(run_folder, capfd):
    model = charrnn.load(run_folder)
    model.generate("the", length=50, seed=1)
    list(model.stream("the", length=50, seed=1))
    model.score("the cat sat on the mat")
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""


def test_calls_from_several_threads_give_each_its_own_text(model):
    wanted = {seed: model.generate("the", length=150, temperature=1.0, seed=seed) for seed in range(6)}
    got: dict[int, str] = {}

    def one(seed):
        got[seed] = model.generate("the", length=150, temperature=1.0, seed=seed)

    threads = [threading.Thread(target=one, args=(seed,)) for seed in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == wanted


def test_arguments_of_the_wrong_kind_are_charrnn_errors(model):
    with pytest.raises(charrnn.CharRNNError, match="--num-samples 0 must be at least 1"):
        model.generate("the", length=5, n=0)  # (not one sample: n=0 is not "not given")
    with pytest.raises(charrnn.CharRNNError, match="length must be an integer, not str"):
        model.generate("the", length="20")
    with pytest.raises(charrnn.CharRNNError, match="temperature must be a number"):
        list(model.stream("the", temperature=True))


def test_a_gpu_asked_for_runs_an_export_too(run_folder, tmp_path):
    """device="cuda" on a model folder or an .npz runs torch on the GPU, or says there is none;
    it is never quietly the CPU (auto picked numpy for an export before looking at the device)."""
    import torch

    from charrnn.sample.engines import choose_engine
    from charrnn.store.model_file import resolve_checkpoint

    folder = charrnn.load(run_folder).save(tmp_path / "folder")
    for path in (resolve_checkpoint(folder), tmp_path / "x.npz"):
        if torch.cuda.is_available():
            assert choose_engine("auto", "cuda", path) == "torch"
        else:
            with pytest.raises(charrnn.CharRNNError, match="cuda"):
                choose_engine("auto", "cuda", path)
        assert choose_engine("auto", "cpu", path) == "numpy"  # (no torch needed on the CPU)


def test_score_with_dynamic_evaluation(model):
    text = "the cat sat on the mat. " * 30
    score = model.score(text, dynamic=True, dynamic_lr=1e-2)
    assert score.dynamic.loss_nats < score.loss_nats - 0.05 and score.dynamic.segment == 50
    assert model.score(text).dynamic is None and model.score(text).loss_nats == score.loss_nats
