"""How the command line reports a user's mistake."""

from typer.testing import CliRunner

from charrnn.cli import app


def test_error_messages_are_printed_verbatim(tmp_path):
    """Square brackets in a message (a file name, "pip install 'charrnn[plot]'") are not markup."""
    path = tmp_path / "run[best].pt"
    result = CliRunner().invoke(app, ["info", str(path)])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"charrnn: error: {path}: no such checkpoint"
