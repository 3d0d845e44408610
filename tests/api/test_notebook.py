"""The library as a notebook uses it, end to end: train a tiny model with `charrnn.train`, write
with it (the text `charrnn sample` prints for the same seed), score a text, save it as
model.safetensors + config.json, and load that back in a Python where torch cannot be imported."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import pytest
from tiny_run import invoke, structured_text

import charrnn

TINY = dict(layers=1, hidden=32, embed=16, seq_len=16, batch_size=8, threads=1, eval_every=50, sample_every=0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("notebook")
    corpus = folder / "words.txt"
    corpus.write_text(structured_text(20_000), encoding="utf-8")
    events = []
    run = charrnn.train(corpus, max_steps=200, out=folder / "ck", name="nb", callbacks=[events.append], **TINY)
    return folder, run, events


def test_train_generate_score_save_and_load_without_torch(trained, capfd):
    folder, run, events = trained
    assert run.reason == "done" and run.summary["step"] == 200 and run.best is not None
    assert [row["step"] for row in run.metrics] == [50, 100, 150, 200]
    assert any(e["event"] == "eval" for e in events)
    model = run.model()
    text = model.generate("The ", length=200, temperature=0.8, seed=11)
    printed = invoke("sample", "-c", run.folder, "--prime", "The ", "--length", "200", "--seed", "11")
    assert printed.exit_code == 0 and printed.stdout == text
    score = model.score(structured_text(2000, seed=9))
    uniform = math.log2(model.info.vocab_size)  # bits a character when every one is as likely
    assert 0 < score.bpc < uniform - 1  # it learned something
    saved = model.save(folder / "export")
    assert sorted(p.name for p in saved.iterdir()) == ["config.json", "model.safetensors"]
    assert capfd.readouterr().out == ""  # the library printed nothing on stdout
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.modules["torch"] = None  # `import torch` now fails, as on a machine without it
        import charrnn
        model = charrnn.load({str(saved)!r})
        print(json.dumps({{
            "text": model.generate("The ", length=200, temperature=0.8, seed=11),
            "bpc": model.score({structured_text(2000, seed=9)!r}).bpc,
            "engine": model.engine,
            "torch": sys.modules["torch"] is None,
        }}))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    there = json.loads(done.stdout)
    assert there["engine"] == "numpy" and there["torch"] is True
    assert there["text"] == text  # batch 1: the same NumPy product as the packed engine's
    assert there["bpc"] == pytest.approx(score.bpc, rel=1e-4)
