"""`train()` used the way a notebook would: a tiny text written here, a tiny model, a few steps."""

from __future__ import annotations

import pytest
from conftest import invoke, words_text

from charrnn.api.training import Run, Stop, train
from charrnn.errors import CharRNNError

TINY = dict(layers=1, hidden=16, embed=8, seq_len=16, batch_size=8, threads=1, eval_every=5, sample_every=0)
TIMING = ("chars_per_sec", "elapsed_s", "threads")  # what differs between two runs of the same model


@pytest.fixture
def text(tmp_path):
    path = tmp_path / "poems.txt"
    path.write_text(words_text(3000), encoding="utf-8")
    return path


def test_a_run_gives_its_folder_model_files_metrics_and_summary(text, tmp_path, capfd):
    events = []
    run = train(text, out=tmp_path / "runs", max_steps=10, callbacks=[events.append], **TINY)
    assert isinstance(run, Run) and run.folder == tmp_path / "runs" / "poems"
    assert run.reason == "done" and run.summary["step"] == 10
    assert run.best == run.folder / "best.pt" and run.last == run.folder / "last.pt" and run.last.is_file()
    assert [row["step"] for row in run.metrics] == [5, 10]
    assert run.summary["best_loss"] == min(row["val_loss"] for row in run.metrics)
    assert run.config.hidden == 16 and run.config.max_steps == 10
    kinds = [e["event"] for e in events]
    order = ["planned", "prepared", "corpus", "start", "eval", "end", "done"]
    firsts = [kinds.index(k) for k in order]
    assert firsts == sorted(firsts), kinds
    assert events[kinds.index("done")]["step"] == 10
    out, err = capfd.readouterr()
    assert out == "" and err == "", "the library prints nothing"


def test_the_model_options_left_out_are_chosen_for_the_corpus_as_by_the_command(text, tmp_path):
    """--size auto is the default of `train()` too: no model option given, they are chosen."""
    events = []
    run = train(
        text, out=tmp_path, max_steps=2, seq_len=16, threads=1, eval_every=2, sample_every=0, callbacks=[events.append]
    )
    sized = [e for e in events if e["event"] == "sized"]
    assert len(sized) == 1 and sized[0]["message"].startswith("--size auto: ")
    assert {run.config.layers, run.config.hidden} == {sized[0]["values"]["layers"], sized[0]["values"]["hidden"]}


def test_a_callback_stops_the_run_which_resumes_as_if_never_stopped(text, tmp_path):
    whole = train(text, out=tmp_path / "a", max_steps=12, save_every=100, **TINY)

    stop = Stop()

    def at_step_7(event):
        if event["event"] == "step" and event["step"] == 7:
            stop("enough for now")

    first = train(text, out=tmp_path / "b", max_steps=12, save_every=100, stop=stop, callbacks=[at_step_7], **TINY)
    assert first.reason == "enough for now" and first.summary["step"] == 7
    assert [row["step"] for row in first.metrics] == [5]

    again = train(text, out=tmp_path / "b", max_steps=12, save_every=100, resume=True, **TINY)
    assert again.reason == "done" and again.summary["step"] == 12

    def same(rows):
        return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]

    assert same(again.metrics) == same(whole.metrics)  # exact resume, through the API


def test_a_time_budget_counts_from_the_call_not_from_the_import(text, tmp_path, monkeypatch):
    """A notebook imports charrnn long before it trains: the budget starts with `train()`."""
    import time

    import charrnn

    monkeypatch.setattr(charrnn, "STARTED", time.monotonic() - 1e6)
    run = train(text, out=tmp_path, max_steps=3, time_budget=3600, **TINY)
    assert run.reason == "done" and run.summary["step"] == 3


@pytest.mark.parametrize(
    "options, flags",
    [
        (dict(hidden=0), ["--hidden", "0"]),
        (dict(resume=True, overwrite=True), ["--resume", "--overwrite"]),
        (dict(cell="lstn"), ["--cell", "lstn"]),
        (dict(resume=True), ["--resume"]),
    ],
)
def test_errors_are_charrnn_errors_with_the_command_s_message(text, tmp_path, options, flags, capfd):
    with pytest.raises(CharRNNError) as caught:
        train(text, out=tmp_path / "ck", max_steps=2, **{**TINY, **options})
    capfd.readouterr()
    result = invoke("train", str(text), "--out", str(tmp_path / "ck"), "--max-steps", "2", *flags)
    assert result.returncode == 2
    assert result.stderr.decode().strip() == f"charrnn: error: {caught.value}"


def test_a_run_folder_in_use_by_a_run_is_refused_without_overwrite(text, tmp_path):
    train(text, out=tmp_path, max_steps=2, **TINY)
    with pytest.raises(CharRNNError, match="already holds a run .*use --resume to continue it"):
        train(text, out=tmp_path, max_steps=2, **TINY)
    replaced = train(text, out=tmp_path, max_steps=3, overwrite=True, **TINY)
    assert replaced.summary["step"] == 3


def test_a_full_disk_says_how_to_go_on_in_python_terms(text, tmp_path, monkeypatch):
    """A write that fails mid-run: a WriteError, the run folder left resumable, and the way on in
    the caller's terms (the command passes its own command line as `resume_hint`)."""
    import errno

    from charrnn.errors import WriteError
    from charrnn.store import checkpoint
    from charrnn.store.files import atomic_write

    save = checkpoint.save

    def full_for_last(ckpt, path):
        if path.name != "last.pt":
            return save(ckpt, path)
        with atomic_write(path, "checkpoint"):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "save", full_for_last)
    with pytest.raises(WriteError) as caught:
        train(text, out=tmp_path, max_steps=10, save_every=10, **TINY)
    assert str(caught.value).endswith("; once there is room, call train() again with resume=True")
    monkeypatch.setattr(checkpoint, "save", save)
    assert train(text, out=tmp_path, max_steps=10, resume=True, **TINY).summary["step"] == 10


def test_a_stop_asked_before_training_starts_ends_it_before_its_first_step(text, tmp_path):
    stop = Stop()
    stop("changed my mind")
    run = train(text, out=tmp_path, max_steps=10, stop=stop, **TINY)
    assert run.reason == "changed my mind" and run.summary["step"] == 0 and run.last.is_file()


def test_another_thread_stops_the_run(text, tmp_path):
    """A `Stop` called from another thread (a notebook's button, a watchdog): here, one that the
    callback of step 4 starts and waits for, so that the step it lands on is known."""
    import threading

    stop = Stop()

    def at_step_4(event):
        if event["event"] == "step" and event["step"] == 4:
            helper = threading.Thread(target=stop, args=("from a thread",))
            helper.start()
            helper.join()

    run = train(text, out=tmp_path, max_steps=10, stop=stop, callbacks=[at_step_4], **TINY)
    assert run.reason == "from a thread" and run.summary["step"] == 4 and stop.requested


def test_a_budget_start_up_used_up_is_refused_and_writes_nothing(text, tmp_path):
    """Before: --time-budget 0.5 trained 0 steps, exited 0, and wrote an untrained last.pt (and
    --overwrite had already deleted the run it replaced). A microsecond: no start-up is shorter
    (a warm process with a cached corpus starts a tiny run in milliseconds)."""
    with pytest.raises(CharRNNError, match=r"^--time-budget 1e-06 leaves no time to train: start-up took"):
        train(text, out=tmp_path / "runs", time_budget=1e-6, **TINY)
    assert not (tmp_path / "runs" / "poems").exists()
    kept = train(text, out=tmp_path / "runs", max_steps=5, **TINY)
    before = {p.name: p.read_bytes() for p in kept.folder.iterdir()}
    with pytest.raises(CharRNNError, match="nothing was trained or written"):
        train(text, out=tmp_path / "runs", time_budget=1e-6, overwrite=True, **TINY)
    assert {p.name: p.read_bytes() for p in kept.folder.iterdir()} == before  # the old run is untouched
    result = invoke("train", str(text), "--out", str(tmp_path / "cli"), "--time-budget", "1e-6", "--threads", "1")
    assert result.returncode == 2 and "leaves no time to train" in result.stderr.decode()
    assert not (tmp_path / "cli").exists() or not any((tmp_path / "cli").rglob("*.pt"))


def test_a_misspelled_option_is_named_with_the_one_meant(text, tmp_path):
    with pytest.raises(CharRNNError, match=r"^unknown option 'hiden' \(did you mean 'hidden'\?\)$"):
        train(text, out=tmp_path, max_steps=2, hiden=32)
    with pytest.raises(CharRNNError, match=r"^unknown option 'colour'$"):
        train(text, out=tmp_path, max_steps=2, colour="red")
