"""End to end through real subprocesses, as a user runs charrnn."""

import json
import os
import re
import subprocess
import sys

import pytest
from conftest import TINY, invoke, missing, run_cli, words_text


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny model trained through the CLI, shared by the tests of this module."""
    root = tmp_path_factory.mktemp("cli")
    corpus = root / "corpus.txt"
    corpus.write_text(words_text(20_000), encoding="utf-8")
    result = run_cli("train", str(corpus), *TINY, "--max-steps", "40", "--eval-every", "20", cwd=root, check=True)
    return root, corpus, result


def test_train_writes_the_run_folder_and_logs_to_stderr(trained):
    root, corpus, result = trained
    run = root / "checkpoints" / "corpus"
    assert {p.name for p in run.iterdir()} >= {"last.pt", "best.pt", "metrics.jsonl"}
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [20, 40]
    assert rows[-1]["val_loss"] < rows[0]["val_loss"]
    assert result.stdout == b""  # training writes nothing to stdout
    log = result.stderr.decode()
    assert re.search(r"step +20 \| epoch .* val \d\.\d+", log) and "best:" in log


def test_sample_stdout_holds_only_the_sample(trained):
    root, _, _ = trained
    result = run_cli("sample", "--length", "200", "--prime", "The ", "--seed", "3", cwd=root, check=True)
    text = result.stdout.decode("utf-8")
    assert text.startswith("The ") and len(text) == 204
    again = run_cli("sample", "--length", "200", "--prime", "The ", "--seed", "3", cwd=root, check=True)
    assert again.stdout == result.stdout
    assert set(text) <= set(words_text(20_000))


def test_sample_options_through_the_cli(trained):
    root, _, _ = trained
    ckpt = str(root / "checkpoints" / "corpus" / "best.pt")
    many = run_cli(
        "sample",
        "-c",
        ckpt,
        "--length",
        "30",
        "--num-samples",
        "3",
        "--separator",
        "|",
        "--seed",
        "1",
        "--no-echo-prime",
        "--prime",
        "a",
        cwd=root,
        check=True,
    )
    parts = many.stdout.decode().split("|")
    assert len(parts) == 3 and all(len(p) == 30 for p in parts)
    stop = run_cli(
        "sample", "-c", ckpt, "--length", "500", "--stop", ".", "--seed", "2", "--temp", "1", cwd=root, check=True
    )
    assert stop.stdout.decode().endswith(".") and stop.stdout.decode().count(".") == 1
    bad = run_cli("sample", "-c", ckpt, "--prime", "Zq€", cwd=root)
    assert bad.returncode == 2 and "'€'" in bad.stderr.decode() and bad.stdout == b""
    skipped = run_cli(
        "sample", "-c", ckpt, "--prime", "th€", "--unknown", "skip", "--length", "5", cwd=root, check=True
    )
    assert skipped.stdout.decode().startswith("th") and "€" in skipped.stderr.decode()


def test_info_and_help(trained):
    root, _, _ = trained
    info = run_cli("info", str(root / "checkpoints" / "corpus" / "best.pt"), "--json", cwd=root, check=True)
    meta = json.loads(info.stdout)
    assert meta["model"]["cell"] == "lstm" and meta["model"]["hidden"] == 32 and meta["progress"]["step"] in (20, 40)
    table = run_cli("info", str(root / "checkpoints" / "corpus"), cwd=root, check=True).stdout.decode()
    assert "LSTM 1×32" in table and "best loss" in table
    for command in ([], ["train"], ["sample"], ["info"]):
        out = run_cli(*command, "--help", check=True).stdout.decode()
        assert "Usage" in out
    assert "--seq-len" in run_cli("train", "--help").stdout.decode()
    assert run_cli("--version").stdout.decode().startswith("charrnn ")


def test_existing_run_is_refused_then_resumed(trained):
    root, corpus, _ = trained
    again = run_cli("train", str(corpus), *TINY, "--max-steps", "40", cwd=root)
    assert again.returncode == 2 and "--resume" in again.stderr.decode()
    longer = run_cli(
        "train",
        str(corpus),
        "--resume",
        "--max-steps",
        "50",
        "--eval-every",
        "20",
        "--threads",
        "1",
        cwd=root,
        check=True,
    )
    assert "resuming at step 40" in longer.stderr.decode()
    info = json.loads(
        run_cli("info", str(root / "checkpoints" / "corpus" / "last.pt"), "--json", cwd=root, check=True).stdout
    )
    assert info["progress"]["step"] == 50
    changed = run_cli("train", str(corpus), "--resume", "--hidden", "64", cwd=root)
    assert changed.returncode == 2 and "--hidden" in changed.stderr.decode()


def test_init_from_fine_tunes_and_names_unknown_characters(trained, tmp_path):
    root, _, _ = trained
    ckpt = str(root / "checkpoints" / "corpus" / "best.pt")
    new = tmp_path / "new.txt"
    new.write_text(words_text(5000, seed=9), encoding="utf-8")
    ok = run_cli(
        "train",
        str(new),
        "--init-from",
        ckpt,
        "--max-steps",
        "5",
        "--out",
        str(tmp_path / "ck"),
        "--threads",
        "1",
        check=True,
    )
    assert (tmp_path / "ck" / "new" / "best.pt").exists() and ok.returncode == 0
    alien = tmp_path / "alien.txt"
    alien.write_text(words_text(5000) + "¿Qué?", encoding="utf-8")
    bad = run_cli("train", str(alien), "--init-from", ckpt, "--out", str(tmp_path / "ck2"))
    assert bad.returncode == 2 and "'¿'" in bad.stderr.decode() and "'é'" in bad.stderr.decode()
    assert not (tmp_path / "ck2").exists()


def test_config_file_and_command_line(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text(words_text(5000), encoding="utf-8")
    toml = tmp_path / "run.toml"
    toml.write_text('cell = "gru"\nhidden = 24\nlayers = 1\nembed = 8\nseq-len = 16\nbatch-size = 4\nmax-steps = 3\n')
    run_cli(
        "train",
        str(corpus),
        "--config",
        str(toml),
        "--hidden",
        "20",
        "--out",
        str(tmp_path / "ck"),
        "--threads",
        "1",
        check=True,
    )
    meta = json.loads(run_cli("info", str(tmp_path / "ck" / "c" / "last.pt"), "--json", check=True).stdout)
    assert (meta["model"]["cell"], meta["model"]["hidden"], meta["progress"]["step"]) == ("gru", 20, 3)


def test_sample_into_a_closed_pipe_exits_quietly(trained):
    root, _, _ = trained
    sample = f"{sys.executable} -m charrnn sample --length 100000 --temp 1"
    cmd = f"{sample} | head -c 100 > /dev/null; echo ${{PIPESTATUS[0]}}"
    result = subprocess.run(["bash", "-c", cmd], cwd=root, capture_output=True, timeout=120)
    assert result.stdout.decode().strip() == "0"
    assert result.stderr.decode().startswith("sampling from checkpoints/corpus/best.pt")  # no -c: it says which
    assert result.stderr.decode().count("\n") == 1, result.stderr.decode()  # and nothing about the pipe


def test_sample_ends_its_line_on_a_terminal_only(trained):
    """Into a pipe the bytes are the sample's own (checked above: exactly 204 characters); on a
    terminal a newline follows, so the shell's prompt does not start mid-line."""
    import os
    import pty
    import select

    root, _, _ = trained
    args = [sys.executable, "-m", "charrnn", "sample", "--length", "30", "--prime", "The ", "--seed", "3"]
    piped = subprocess.run(args, cwd=root, capture_output=True, timeout=120, check=True).stdout
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(args, cwd=root, stdout=follower, stderr=subprocess.DEVNULL)
        os.close(follower)
        seen = b""
        while True:
            if not select.select([leader], [], [], 60)[0]:  # never hang the suite on a stuck child
                proc.kill()
                raise AssertionError(f"no output for 60 s; so far {seen!r}")
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        assert proc.wait(timeout=120) == 0
    finally:
        os.close(leader)
    assert not piped.endswith(b"\n")
    assert seen.replace(b"\r\n", b"\n") == piped + b"\n"  # the terminal turns \n into \r\n


def test_sample_and_info_accept_a_run_folder(trained, tmp_path):
    root, _, _ = trained
    run = root / "checkpoints" / "corpus"
    by_file = run_cli("sample", "-c", str(run / "best.pt"), "--length", "40", "--seed", "5", cwd=root, check=True)
    by_folder = run_cli("sample", "-c", str(run), "--length", "40", "--seed", "5", cwd=root, check=True)
    assert by_folder.stdout == by_file.stdout and len(by_folder.stdout) == 40
    only_last = tmp_path / "only-last"
    only_last.mkdir()
    (only_last / "last.pt").write_bytes((run / "last.pt").read_bytes())  # no validation, no best.pt
    meta = json.loads(run_cli("info", str(only_last), "--json", check=True).stdout)
    assert meta["path"].endswith("last.pt")
    empty = run_cli("sample", "-c", str(tmp_path), cwd=root)
    assert empty.returncode == 2 and "no best.pt or last.pt" in empty.stderr.decode() and empty.stdout == b""


def test_chinese_samples_survive_a_c_locale_pipe(tmp_path):
    poems = "".join(
        chr(0x4E00 + (i * 37) % 300) + ("，" if i % 5 == 4 else "") + ("。\n" if i % 20 == 19 else "")
        for i in range(6000)
    )
    corpus = tmp_path / "poems.txt"
    corpus.write_text(poems, encoding="utf-8")
    run_cli("train", str(corpus), *TINY, "--max-steps", "5", "--out", str(tmp_path / "ck"), check=True)
    env = {"LC_ALL": "C", "LANG": "C", "PYTHONIOENCODING": ""}
    result = run_cli(
        "sample",
        "-c",
        str(tmp_path / "ck" / "poems" / "best.pt"),
        "--prime",
        "一",
        "--length",
        "50",
        env_extra=env,
        check=True,
    )
    text = result.stdout.decode("utf-8")  # strict: must be valid UTF-8
    assert text.startswith("一") and len(text) == 51 and set(text) <= set(poems)


def test_sample_without_c_takes_the_newest_last_pt_when_no_run_has_a_best_one(trained, tmp_path, monkeypatch):
    """And names it on stderr as it is, [brackets] and all (no rich markup in paths)."""
    from conftest import invoke

    root, _, _ = trained
    run = tmp_path / "checkpoints" / "exp[lr]"
    run.mkdir(parents=True)
    (run / "last.pt").write_bytes((root / "checkpoints" / "corpus" / "last.pt").read_bytes())
    monkeypatch.chdir(tmp_path)
    result = invoke("sample", "--length", "20", "--seed", "1")
    assert result.returncode == 0, result.stderr.decode()
    assert len(result.stdout.decode()) == 20
    assert result.stderr.decode().startswith("sampling from checkpoints/exp[lr]/last.pt (the newest last.pt")
    (run / "last.pt").unlink()
    none = invoke("sample")
    assert none.returncode == 2 and "no checkpoint under checkpoints/" in none.stderr.decode()


def test_python_m_charrnn_without_the_dependencies_hands_over_to_the_project_venv(tmp_path):
    """`python3 -m charrnn` from a checkout, with a Python that lacks typer and torch (here: -S,
    no site-packages), runs the project's .venv/bin/python once; without one it says what to do."""
    from pathlib import Path

    import charrnn

    root = Path(charrnn.__file__).resolve().parent.parent
    if not (root / ".venv" / "bin" / "python").exists():
        missing("no .venv in this checkout (make setup makes it)")
    env = {**os.environ, "PYTHONPATH": str(root)}
    env.pop("CHARRNN_VENV_HOP", None)
    args = [sys.executable, "-S", "-m", "charrnn", "--help"]
    handed = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, timeout=120)
    assert handed.returncode == 0 and b"Usage:" in handed.stdout, handed.stderr.decode()
    refused = subprocess.run(args, cwd=tmp_path, env={**env, "CHARRNN_VENV_HOP": "1"}, capture_output=True, timeout=120)
    err = refused.stderr.decode()
    assert refused.returncode == 1 and "lacks charrnn's dependencies" in err and "make setup" in err, err
    assert "Traceback" not in err


def test_threads_and_log_every_flags_are_checked(write_corpus):
    corpus = write_corpus(words_text(2000))
    for flags, message in (
        (["--threads", "0"], "--threads '0' must be auto or a number"),
        (["--threads", "two"], "--threads 'two' must be auto"),
        (["--log-every", "-1"], "--log-every -1.0 must be 0"),
    ):
        result = invoke("train", str(corpus), *flags)
        assert result.returncode == 2 and message in result.stderr.decode(), result.stderr.decode()
