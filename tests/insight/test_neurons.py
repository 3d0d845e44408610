"""`charrnn neurons`: per-unit activations, text features, ranking, terminal and HTML views."""

from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from tiny_run import invoke, structured_text, train_tiny_run

from charrnn.errors import CharRNNError
from charrnn.insight.neurons import activations, check_choice, correlations, rank_units, text_features
from charrnn.insight.neurons_view import colour
from charrnn.store.model_file import build_model, open_model_file

TEXT = structured_text(5000)


@pytest.fixture(scope="module", params=["lstm", "gru"])
def run(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("neurons") / request.param
    train_tiny_run(folder, TEXT, cell=request.param)
    record = open_model_file(folder / "best.pt")
    model, vocab = build_model(record), record.vocab
    sample = folder.parent / "sample.txt"
    sample.write_text(structured_text(400, seed=3), encoding="utf-8")
    return folder, model, vocab, sample


def test_step_by_step_activations_match_the_whole_sequence(run):
    """Reading one character at a time gives the states the model computes in one pass."""
    _, model, vocab, _ = run
    text = TEXT[:120]
    h = activations(model, vocab, text, state="h")  # (T, L, H)
    assert h.shape == (120, model.cfg.layers, model.cfg.hidden)
    x = model.embed(torch.tensor(vocab.encode(text).astype(np.int64)))[:, None]  # (T, 1, E)
    batch_first = model.rnn.batch_first
    with torch.no_grad():
        out, final = model.rnn(x.transpose(0, 1) if batch_first else x)
    out = out[0] if batch_first else out[:, 0]  # (T, H)
    np.testing.assert_allclose(h[:, -1], out.numpy(), atol=1e-5)  # the top layer, every step
    if model.cfg.cell == "lstm":
        c = activations(model, vocab, text, state="c")
        np.testing.assert_allclose(c[-1], torch.tanh(final[1][:, 0]).numpy(), atol=1e-5)  # every layer, last step
        hand_h, hand_tanh_c = lstm_by_hand(model, x[:, 0])
        np.testing.assert_allclose(h, hand_h, atol=1e-5)  # every layer, every step
        np.testing.assert_allclose(c, hand_tanh_c, atol=1e-5)


def lstm_by_hand(model, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """h and tanh(c), (T, L, H), of the model's LSTM layers on inputs x (T, E), from torch's
    equations: gates i, f, g, o = W_ih x + b_ih + W_hh h + b_hh; c = σ(f) c + σ(i) tanh(g);
    h = σ(o) tanh(c); each layer's input is the h of the layer below."""
    hs, cs = [], []
    with torch.no_grad():
        inputs = x
        for k in range(model.cfg.layers):
            w_ih, w_hh = getattr(model.rnn, f"weight_ih_l{k}"), getattr(model.rnn, f"weight_hh_l{k}")
            bias = getattr(model.rnn, f"bias_ih_l{k}") + getattr(model.rnn, f"bias_hh_l{k}")
            h = c = torch.zeros(model.cfg.hidden)
            layer_h, layer_c = [], []
            for x_t in inputs:
                i, f, g, o = (w_ih @ x_t + w_hh @ h + bias).chunk(4)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                layer_h.append(h)
                layer_c.append(torch.tanh(c))
            hs.append(torch.stack(layer_h))
            cs.append(torch.stack(layer_c))
            inputs = hs[-1]
    return torch.stack(hs, dim=1).numpy(), torch.stack(cs, dim=1).numpy()


def test_text_features_are_the_state_after_each_character():
    f = text_features('a "b" (c)\nde')
    assert f["in quotes"].tolist() == [0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    assert f["in brackets"].tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0]
    assert f["line position"].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2]
    assert f["word start"].tolist() == [1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 1, 0]
    assert text_features("“x” y")["in quotes"].tolist() == [1, 1, 1, 0, 0]


def test_correlations_are_pearsons():
    rng = np.random.default_rng(0)
    acts = rng.normal(size=(50, 2, 3))
    feature = rng.normal(size=50)
    r = correlations(acts, feature)
    assert r.shape == (2, 3)
    assert r[1, 2] == pytest.approx(np.corrcoef(acts[:, 1, 2], feature)[0, 1])
    acts[:, 0, 0] = 0.5  # a unit that never moves correlates with nothing
    assert correlations(acts, feature)[0, 0] == 0


def test_ranking_finds_a_planted_unit():
    rng = np.random.default_rng(1)
    features = text_features(structured_text(600))
    acts = rng.normal(scale=0.3, size=(600, 2, 8))
    acts[:, 1, 5] = -np.tanh(features["in quotes"] * 2 - 1) + rng.normal(scale=0.1, size=600)
    matches, absent = rank_units(acts, features, top=2)
    best = {m.feature: m for m in reversed(matches)}
    assert (best["in quotes"].layer, best["in quotes"].unit) == (1, 5) and best["in quotes"].correlation < -0.9
    assert absent == [] and len(matches) == 8
    only_layer_0, _ = rank_units(acts, features, top=2, layer=0)
    assert {m.layer for m in only_layer_0} == {0}
    _, absent = rank_units(acts[:5], text_features(" " * 5), top=1)  # only the line position moves
    assert absent == ["in quotes", "in brackets", "word start"]


def test_colours_run_from_red_through_white_to_blue():
    assert colour(-1) == (255, 51, 51) and colour(0) == (255, 255, 255) and colour(1) == (0, 115, 255)
    assert colour(5) == colour(1)


def test_choices_are_checked_against_the_model(run):
    _, model, _, _ = run
    assert check_choice(model, None, 0, None) == (model.cfg.layers - 1, "c" if model.cfg.cell == "lstm" else "h")
    assert check_choice(model, -2, 3, "h") == (0, "h")
    with pytest.raises(CharRNNError, match="--layer 2: the model has 2 layer"):
        check_choice(model, 2, 0, None)
    with pytest.raises(CharRNNError, match="--unit 16: each layer has 16 units"):
        check_choice(model, None, 16, None)
    if model.cfg.cell != "lstm":
        with pytest.raises(CharRNNError, match="only an LSTM has a cell state"):
            check_choice(model, None, 0, "c")


class Spans(HTMLParser):
    """The characters of the coloured text and their values, read back from the page."""

    def __init__(self):
        super().__init__()
        self.chars, self.values, self.in_span, self.tables = [], [], False, 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "span" and "title" in attrs:
            self.in_span = True
            self.values.append(float(attrs["title"]))
            assert attrs["style"].startswith("background:#")
        self.tables += tag == "table"

    def handle_endtag(self, tag):
        self.in_span = self.in_span and tag != "span"

    def handle_data(self, data):
        if self.in_span:
            self.chars.append(data)


def test_neurons_command_terminal_and_html(run, tmp_path):
    folder, model, vocab, sample = run
    page = tmp_path / "unit.html"
    result = invoke(
        "neurons", folder / "best.pt", sample, "--layer", "0", "--unit", "3", "--max-chars", "300", "--html", page
    )
    assert result.exit_code == 0, result.stderr
    text = sample.read_text()[:300]
    state = "tanh(c)" if model.cfg.cell == "lstm" else "h"
    assert result.stdout.startswith(f"layer 0, unit 3 ({state})\n")
    assert text.replace("\n", "↵\n") in result.stdout  # the text itself (colours need a terminal)
    parser = Spans()
    parser.feed(page.read_text(encoding="utf-8"))
    assert "".join(parser.chars) == text.replace("\n", "↵")
    expected = activations(model, vocab, text, "c" if model.cfg.cell == "lstm" else "h")[:, 0, 3]
    np.testing.assert_allclose(parser.values, expected, atol=6e-4)  # titles hold 3 decimals


def test_neurons_find_ranks_units_for_each_feature(run, tmp_path):
    folder, _, _, sample = run
    page = tmp_path / "find.html"
    result = invoke("neurons", folder, sample, "--find", "--top", "2", "--html", page)
    assert result.exit_code == 0, result.stderr
    table = result.stdout.split("\n\n")[0]
    for feature in ("in quotes", "in brackets", "line position", "word start"):
        assert table.count(feature) == 2
        assert f"{feature}: layer " in result.stdout  # the best unit of each feature is shown
    parser = Spans()
    parser.feed(page.read_text(encoding="utf-8"))
    assert parser.tables == 1 and len(parser.values) == 4 * 400  # four sections of the whole text
    assert f"wrote {page}" in result.stderr


def test_colours_reach_a_terminal(run):
    folder, _, _, sample = run
    from typer.testing import CliRunner

    from charrnn.cli.app import app

    result = CliRunner(env={"FORCE_COLOR": "1", "COLORTERM": "truecolor", "NO_COLOR": None}).invoke(
        app, ["neurons", str(folder), str(sample), "--max-chars", "40"]
    )
    assert result.exit_code == 0 and "\x1b[30;48;2;" in result.stdout and "activation:" in result.stdout


def test_neurons_command_errors(run, tmp_path):
    folder, _, _, sample = run
    result = invoke("neurons", folder, sample, "--unit", "99")
    assert result.exit_code == 2 and "--unit 99" in result.stderr and result.stdout == ""
    odd = tmp_path / "odd.txt"
    odd.write_text("é☃ the (a) é", encoding="utf-8")
    result = invoke("neurons", folder, odd)
    assert result.exit_code == 0 and "skipped 3 characters" in result.stderr
