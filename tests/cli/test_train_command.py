"""`charrnn train` as a driver over `charrnn.train()`: its help texts are those of config.py."""

from __future__ import annotations

import re
from dataclasses import fields

import pytest

from charrnn.config import ReadConfig, TrainConfig, help_of


@pytest.fixture(scope="module")
def help_text():
    """`charrnn train --help` on one long line per option: the box drawing and the wrapping removed."""
    from typer.testing import CliRunner

    from charrnn.cli import app

    result = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "100", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())


@pytest.mark.parametrize("cls", [TrainConfig, ReadConfig])
def test_every_option_s_help_is_the_one_written_in_config(help_text, cls):
    for f in fields(cls):
        text, default = help_of(cls, f.name)
        shown = " ".join(text.split()) + (f" [default: {default}]" if default else "")
        assert f"--{f.name.replace('_', '-')}" in help_text
        assert shown in help_text, f.name


def test_defaults_shown_are_the_config_s(help_text):
    assert "Hidden units per layer. [default: 256]" in help_text
    assert "Text encoding of the corpus. [default: utf-8]" in help_text
