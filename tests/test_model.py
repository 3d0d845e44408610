"""The network's regularisation and weight sharing: where dropout acts, and tied weights."""

import numpy as np
import pytest
import torch
from tiny_run import invoke, structured_text, train_tiny_run

from charrnn.config import ModelConfig, TrainConfig
from charrnn.errors import CharRNNError
from charrnn.model import CharRNN
from charrnn.store import checkpoint
from charrnn.store.model_file import build_model, open_model_file


def recorded(model: CharRNN, ids: torch.Tensor):
    """The inputs of the recurrent layers and of the read-out, and the layers' own outputs."""
    seen = {}
    hooks = [
        model.rnn.register_forward_hook(
            lambda m, args, out: seen.update(rnn_in=args[0], rnn_out=out[0], rnn_state=out[1])
        ),
        model.head.register_forward_hook(lambda m, args, out: seen.update(head_in=args[0])),
    ]
    model(ids)
    for hook in hooks:
        hook.remove()
    return seen


def zero_share(t: torch.Tensor) -> float:
    return (t == 0).float().mean().item()


def test_dropout_acts_on_the_non_recurrent_connections_only():
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=20, layers=1, hidden=64, embed=64, dropout=0.5))
    ids = torch.randint(0, 20, (8, 50))
    model.train()
    seen = recorded(model, ids)
    assert 0.4 < zero_share(seen["rnn_in"]) < 0.6  # the embedding's output
    assert 0.4 < zero_share(seen["head_in"]) < 0.6  # the read-out's input
    assert zero_share(seen["rnn_out"]) < 0.01  # the recurrent path itself is never dropped:
    h_last = seen["rnn_state"][0][-1]  # the state carried to the next chunk is the undropped output
    assert torch.equal(h_last, seen["rnn_out"][-1])
    model.eval()
    quiet = recorded(model, ids)
    assert zero_share(quiet["rnn_in"]) < 0.01 and zero_share(quiet["head_in"]) < 0.01  # no dropout when sampling


def test_dropout_between_layers():
    """torch's own dropout between layers: what `--dropout-mask element` trains with (and eval and
    a GPU's layers run the module as it is)."""
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=20, layers=2, hidden=32, embed=32, dropout=0.5))
    assert model.rnn.dropout == 0.5  # torch's LSTM drops the outputs of every layer but the last
    assert CharRNN(ModelConfig(vocab_size=20, layers=1, hidden=32, embed=32, dropout=0.5)).rnn.dropout == 0.0


def test_locked_dropout_drops_the_same_units_at_every_step_and_element_dropout_does_not():
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=20, layers=2, hidden=32, embed=32, dropout=0.5)).train()
    x = torch.ones(50, 8, 32)  # (T, B, D)
    locked = model._dropped(x)
    assert set(locked.unique().tolist()) == {0.0, 2.0}  # dropped, or kept and scaled by 1 / (1 - p)
    assert 0.3 < zero_share(locked[0]) < 0.7
    assert torch.equal(locked, locked[:1].expand_as(locked))  # one mask for the whole chunk
    assert not torch.equal(locked[:, 0], locked[:, 1])  # but each stream its own
    model.dropout_mask = "element"
    element = model._dropped(x)
    assert 0.3 < zero_share(element) < 0.7
    assert not torch.equal(element, element[:1].expand_as(element))  # a new mask at every step
    model.eval()
    assert torch.equal(model._dropped(x), x)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_locked_dropout_runs_each_layer_on_the_masked_output_of_the_one_below(cell):
    """With locked dropout the layers run one by one: what they compute is, by hand, one-layer
    torch modules with the same weights, each fed the layer below's output times its mask; the
    state carried on is the layers' own (unmasked)."""
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=20, cell=cell, layers=3, hidden=16, embed=8, dropout=0.5)).train()
    masks = []

    def mask(x):
        masks.append(torch.rand(1, *x.shape[1:]).round() * 2)  # (kept: 2 = 1 / (1 - p))
        return masks[-1]

    model._mask = mask
    ids = torch.randint(0, 20, (4, 30))
    given = tuple(torch.randn(3, 4, 16) for _ in range(2 if cell == "lstm" else 1))  # (L, B, H) each
    logits, hidden = model(ids, given if cell == "lstm" else given[0])
    assert len(masks) == 4  # the embedding's output, between the 3 layers twice, the read-out's input
    x = model.embed(ids.t()) * masks[0]
    states = []
    for layer in range(3):
        one = type(model.rnn)(model.rnn.input_size if layer == 0 else 16, 16)
        for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(one, f"{kind}_l0").data = getattr(model.rnn, f"{kind}_l{layer}").data
        start = tuple(part[layer : layer + 1] for part in given)
        x, state = one(x * masks[layer] if layer else x, start if cell == "lstm" else start[0])
        states.append(state)
    by_hand = model.head(x * masks[3]).transpose(0, 1)
    assert torch.allclose(logits, by_hand, atol=1e-6)
    parts = hidden if cell == "lstm" else (hidden,)
    by_hand_parts = (
        [torch.cat([s[i] for s in states]) for i in range(len(parts))] if cell == "lstm" else [torch.cat(states)]
    )
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(parts, by_hand_parts))


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_the_layers_one_call_each_compute_what_the_module_does_bit_for_bit(cell):
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=20, cell=cell, layers=3, hidden=16, embed=8))
    model._mask = torch.ones_like  # (the layers' inputs as they are)
    x = torch.randn(30, 4, 8)
    for hidden in (None, torch.randn(3, 4, 16)):
        given = (hidden, torch.randn(3, 4, 16)) if cell == "lstm" and hidden is not None else hidden
        out, state = model.rnn(x, given)
        out2, state2 = model._layers(x, given, dict(model.rnn.named_parameters()))
        assert torch.equal(out, out2)
        for a, b in zip(*(s if isinstance(s, tuple) else (s,) for s in (state, state2))):
            assert torch.equal(a, b)


def test_locked_dropout_trains_in_bf16():
    """The layers one call each under autocast, as `--precision bf16` trains them."""
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=20, layers=2, hidden=32, embed=16, dropout=0.2)).train()
    ids = torch.randint(0, 20, (4, 31))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, (h, c) = model(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), ids[:, 1:].flatten())
    loss.backward()
    assert torch.isfinite(loss) and h.shape == c.shape == (2, 4, 32)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("cell,fused", [("lstm", "aten::lstm"), ("gru", "aten::gru"), ("rnn", "aten::rnn_tanh")])
def test_locked_dropout_and_weight_drop_keep_a_fused_kernel_a_layer(cell, fused):
    from torch.profiler import profile

    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=20, cell=cell, layers=2, hidden=32, embed=16, dropout=0.25))
    model.weight_drop = 0.5
    model.train()
    with profile() as prof:
        logits, _ = model(torch.randint(0, 20, (4, 30)))
        logits.sum().backward()
    calls = {e.key: e.count for e in prof.key_averages()}
    assert calls.get(fused) == 2, sorted(calls)  # one call a layer, each over every time step
    assert not [k for k in calls if k.endswith("_cell")], sorted(calls)
    for layer in range(2):  # the dropped recurrent matrices were the ones the layers ran with
        assert 0.4 < zero_share(getattr(model.rnn, f"weight_hh_l{layer}").grad) < 0.6


def test_the_dropout_mask_is_the_runs_and_an_unknown_one_is_refused(tmp_path):
    assert TrainConfig().dropout_mask == "locked"
    with pytest.raises(CharRNNError, match="--dropout-mask .columns. is not one of: locked, element"):
        TrainConfig(dropout_mask="columns").validate()
    trainer = train_tiny_run(tmp_path / "run", structured_text(3000), max_steps=2, dropout=0.2, dropout_mask="element")
    assert trainer.model.dropout_mask == "element"


def test_tied_weights_share_one_matrix_through_training_and_a_checkpoint(tmp_path):
    text = structured_text(6000)
    trainer = train_tiny_run(tmp_path / "run", text, max_steps=12, hidden=16, embed=16, tie_weights=True)
    model = trainer.model
    assert model.head.weight is model.embed.weight
    untied = sum(
        p.numel()
        for p in CharRNN(ModelConfig(vocab_size=model.cfg.vocab_size, layers=2, hidden=16, embed=16)).parameters()
    )
    assert sum(p.numel() for p in model.parameters()) == untied - model.embed.weight.numel()
    record = open_model_file(tmp_path / "run" / "last.pt")
    assert record.model.tie_weights
    rebuilt = build_model(record)
    assert rebuilt.head.weight is rebuilt.embed.weight
    assert torch.equal(rebuilt.head.weight, model.embed.weight.detach())


def test_tied_weights_survive_export_and_sampling(tmp_path):
    text = structured_text(6000)
    train_tiny_run(tmp_path / "run", text, max_steps=4, hidden=16, embed=16, tie_weights=True)
    out = tmp_path / "m.npz"
    assert invoke("export", tmp_path / "run" / "last.pt", "--out", out).exit_code == 0
    texts = []
    for source in (tmp_path / "run" / "last.pt", out):  # torch computes the first, NumPy the second
        result = invoke("sample", "--checkpoint", source, "--length", 40, "--seed", 1)
        assert result.exit_code == 0, result.stderr
        texts.append(result.stdout)
    assert len(texts[0]) == 40 and texts[0] == texts[1]  # the same weights read in and out: the same text


def test_tied_weights_need_embed_equal_to_hidden():
    with pytest.raises(CharRNNError, match="--embed equal to --hidden"):
        TrainConfig(tie_weights=True, embed=64, hidden=256).validate()
    assert TrainConfig(tie_weights=True, embed=128, hidden=128).validate().tie_weights


def test_checkpoints_from_before_tied_weights_load_untied(tmp_path):
    train_tiny_run(tmp_path / "run", structured_text(6000), max_steps=4)
    ckpt = checkpoint.load(tmp_path / "run" / "last.pt")
    assert ckpt.meta["model"]["tie_weights"] is False
    meta = dict(ckpt.meta)
    meta["model"] = {k: v for k, v in meta["model"].items() if k != "tie_weights"}
    meta["config"] = {k: v for k, v in meta["config"].items() if k not in ("tie_weights", "size")}
    from charrnn.store.metadata import read_info

    info = read_info(meta)
    assert info.model.tie_weights is False and info.config.tie_weights is False


def test_a_hidden_state_goes_to_a_list_and_back_on_the_device_asked_for():
    from charrnn.model import hidden_from_list, hidden_to_list

    h, c = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    assert hidden_to_list(None) == [] and hidden_from_list([], "lstm", "cpu") is None
    pair = hidden_from_list(hidden_to_list((h, c)), "lstm", "cpu")
    assert isinstance(pair, tuple) and torch.equal(pair[0], h) and torch.equal(pair[1], c)
    for cell in ("gru", "rnn"):
        one = hidden_from_list(hidden_to_list(h), cell, "cpu")
        assert isinstance(one, torch.Tensor) and torch.equal(one, h)
    assert hidden_from_list([h], "gru", "meta").device.type == "meta"
    assert all(t.device.type == "meta" for t in hidden_from_list([h, c], "lstm", torch.device("meta")))


def by_hand_losses(model, streams: np.ndarray) -> torch.Tensor:
    """The loss of every next character of each stream, read in one pass (the state carried)."""
    with torch.no_grad():
        logits, _ = model(torch.from_numpy(streams[:, :-1]))
        return torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), torch.from_numpy(streams[:, 1:]), reduction="none"
        )


def test_stream_loss_is_the_loss_of_each_next_character_read_chunk_by_chunk():
    """Chunks of seq_len with the state carried give the loss of one pass over the streams: full
    chunks only, or with `whole` every character; without carried state, each chunk from zero;
    in eval mode (no dropout), leaving the model's mode as it was."""
    from charrnn.model import stream_loss

    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=7, layers=2, hidden=12, embed=5, dropout=0.5))
    streams = np.random.default_rng(0).integers(0, 7, size=(3, 30))  # 29 targets: 3 chunks of 8, and 5
    model.eval()
    losses = by_hand_losses(model, streams)
    model.train()
    total, count = stream_loss(model, streams, 8, "cpu")
    assert model.training and count == 3 * 24 and total == pytest.approx(losses[:, :24].sum().item(), rel=1e-5)
    total, count = stream_loss(model, streams, 8, "cpu", whole=True)
    assert count == 3 * 29 and total == pytest.approx(losses.sum().item(), rel=1e-5)
    model.eval()
    reset = sum(by_hand_losses(model, streams[:, start : start + 9]).sum().item() for start in (0, 8, 16))
    total, count = stream_loss(model, streams, 8, "cpu", carry_state=False)
    assert not model.training and count == 3 * 24 and total == pytest.approx(reset, rel=1e-5)
    assert stream_loss(model, streams[:, :8], 8, "cpu") == (0.0, 0)  # 7 targets: no full chunk


def test_stream_loss_reports_progress_and_stops_at_a_deadline():
    from charrnn.model import stream_loss

    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=7, layers=1, hidden=8, embed=4)).eval()
    streams = np.random.default_rng(1).integers(0, 7, size=(2, 30))
    seen = []
    stream_loss(model, streams, 8, "cpu", whole=True, on_progress=lambda done, total: seen.append((done, total)))
    assert seen == [(8, 29), (16, 29), (24, 29), (29, 29)]
    readings = iter(range(100))  # a clock read once after each chunk: 0, 1, 2...
    total, count = stream_loss(model, streams, 8, "cpu", deadline=1, clock=lambda: next(readings))
    assert count == 2 * 2 * 8  # the clock reached the deadline after the second chunk: stop there
    assert total == pytest.approx(by_hand_losses(model, streams)[:, :16].sum().item(), rel=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_weight_drop_masks_the_recurrent_matrices_only(cell):
    """DropConnect: about `weight_drop` of each hidden-to-hidden matrix gets no gradient in a
    training step (its weights were zeroed for that chunk); the input matrices are untouched."""
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=20, cell=cell, layers=2, hidden=32, embed=16))
    model.weight_drop = 0.5
    model.train()
    logits, _ = model(torch.randint(0, 20, (4, 30)))
    logits.sum().backward()
    for layer in range(2):
        assert 0.4 < zero_share(getattr(model.rnn, f"weight_hh_l{layer}").grad) < 0.6
        assert zero_share(getattr(model.rnn, f"weight_ih_l{layer}").grad) < 0.05


@pytest.mark.parametrize("cell,fused", [("lstm", "aten::lstm"), ("gru", "aten::gru"), ("rnn", "aten::rnn_tanh")])
def test_weight_drop_keeps_the_fused_kernel(cell, fused):
    """The dropped matrices go to the one fused call that runs every layer and time step, as
    the weights do without weight drop: the profiler counts one call a forward, and no cell
    stepped one time step at a time."""
    from torch.profiler import profile

    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=20, cell=cell, layers=2, hidden=32, embed=16))
    model.weight_drop = 0.3
    model.train()
    with profile() as prof:
        model(torch.randint(0, 20, (4, 30)))[0].sum().backward()
    calls = {e.key: e.count for e in prof.key_averages()}
    assert calls.get(fused) == 1, sorted(calls)
    assert not [k for k in calls if k.endswith("_cell")], sorted(calls)


def test_weight_drop_is_off_in_eval_mode_and_leaves_the_weights_alone():
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=20, layers=2, hidden=32, embed=16))
    ids = torch.randint(0, 20, (4, 30))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    plain = model(ids)[0]
    model.weight_drop = 0.5
    dropped = model(ids)[0]
    assert not torch.allclose(plain, dropped)  # training: the recurrent matrices were masked
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # (for that call only)
    twin = CharRNN(model.cfg)
    twin.load_state_dict(before)
    model.eval()
    twin.eval()
    assert torch.equal(model(ids)[0], twin(ids)[0])  # eval: the weights as they are


def test_the_trainer_gives_the_model_its_weight_drop():
    from charrnn.training.distributed import Dist
    from charrnn.training.parts import build_model as build_for_training

    cfg = TrainConfig(hidden=16, embed=8, layers=1, weight_drop=0.25).validate()
    model, _, _ = build_for_training(cfg, cfg.model_config(12), 2, torch.device("cpu"), Dist())
    assert model.weight_drop == 0.25
    with pytest.raises(CharRNNError, match="--weight-drop 1.0 must be in"):
        TrainConfig(weight_drop=1.0).validate()
