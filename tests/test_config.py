import pytest

from charrnn.config import SampleConfig, TrainConfig, build, read_toml
from charrnn.errors import CharRNNError


def test_command_line_wins_over_file_over_defaults(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('hidden = 64\nseq-len = 50\nlr = 1\ncell = "gru"\n')
    cfg = build(TrainConfig, read_toml(toml, TrainConfig), {"hidden": 32, "layers": None})
    assert (cfg.hidden, cfg.seq_len, cfg.cell, cfg.layers) == (32, 50, "gru", TrainConfig().layers)
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)


@pytest.mark.parametrize(
    "text, message",
    [("hiden = 3\n", "unknown key 'hiden'"), ("hidden = \n", "not valid TOML"), ('hidden = "big"\n', "--hidden 'big'")],
)
def test_bad_config_files(tmp_path, text, message):
    toml = tmp_path / "c.toml"
    toml.write_text(text)
    with pytest.raises(CharRNNError, match=message):
        build(TrainConfig, read_toml(toml, TrainConfig), {})


@pytest.mark.parametrize(
    "cls, values, message",
    [
        (TrainConfig, {"hidden": 0}, "--hidden"),
        (TrainConfig, {"cell": "transformer"}, "--cell 'transformer' is not one of"),
        (TrainConfig, {"val_frac": 0.5}, "--val-frac"),
        (TrainConfig, {"dropout": 1.0}, "--dropout"),
        (SampleConfig, {"temp": -1.0}, "--temp"),
        (SampleConfig, {"top_p": 0.0}, "--top-p"),
        (SampleConfig, {"top_k": -1}, "--top-k"),
    ],
)
def test_invalid_values_are_rejected(cls, values, message):
    with pytest.raises(CharRNNError, match=message):
        build(cls, {}, values)


def test_plural():
    from charrnn.errors import plural

    assert [plural(n, "step") for n in (0, 1, 2, 1000)] == ["0 steps", "1 step", "2 steps", "1,000 steps"]
    assert plural(1, "process", "processes") == "1 process" and plural(3, "process", "processes") == "3 processes"


def test_threads_is_auto_or_a_count():
    assert TrainConfig().validate().threads == "auto"
    assert TrainConfig(threads=None).validate().threads == "auto"  # checkpoints from before auto
    assert TrainConfig(threads=3).validate().threads == 3
    for bad in (0, "many", 1.5):
        with pytest.raises(CharRNNError, match="--threads .* must be auto or at least 1"):
            TrainConfig(threads=bad).validate()


def test_beam_norm_is_bounded():
    """length ** 1e308 overflows: a bound, not a traceback (sample, serve)."""
    from charrnn.config import MAX_BEAM_NORM

    for bad in (-0.5, MAX_BEAM_NORM + 1, 1e308, float("inf"), float("nan")):
        with pytest.raises(CharRNNError, match="--beam-norm"):
            SampleConfig(beam=2, beam_norm=bad).validate()
    assert SampleConfig(beam=2, beam_norm=MAX_BEAM_NORM).validate().beam_norm == MAX_BEAM_NORM
