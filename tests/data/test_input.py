"""Bad input gets one clear line on stderr, exit code 2, no traceback, nothing written;
awkward but valid text trains."""

import pytest
from conftest import TINY, invoke, words_text

from charrnn.data.corpus import read_bytes
from charrnn.data.decoding import decode
from charrnn.errors import CharRNNError


def assert_one_line_error(result, *needles):
    err = result.stderr.decode("utf-8")
    assert result.returncode == 2, err
    assert "Traceback" not in err and err.strip().count("\n") == 0, err
    for needle in needles:
        assert needle in err, err
    assert result.stdout == b""


def train(path, tmp_path, *extra):
    return invoke("train", str(path), *TINY, "--max-steps", "2", "--out", str(tmp_path / "ck"), *extra)


@pytest.mark.parametrize(
    "content, needles",
    [
        (None, ["no such file"]),
        (b"", ["the corpus is empty"]),
        (b"ab\x00cd" * 100, ["binary", "NUL"]),
        (bytes(range(1, 9)) * 200, ["binary", "control characters"]),
        (b"good text \xff\xfe more", ["not valid utf-8 at byte offset 10", "--encoding"]),
        (b"abc", ["too short", "at least 17"]),
        (b"a", ["too short", "has 1 character,"]),
        (b"x" * 16, ["too short", "at least 17"]),  # one character short of one chunk
    ],
)
def test_bad_corpora_are_refused_and_nothing_is_written(tmp_path, content, needles):
    path = tmp_path / "corpus.txt"
    if content is not None:
        path.write_bytes(content)
    result = train(path, tmp_path, "--cache-dir", str(tmp_path / "cache"))
    assert_one_line_error(result, str(path), *needles)
    assert not (tmp_path / "ck").exists()
    assert not list((tmp_path / "cache").glob("*")), "a refused corpus left a cache entry"


def test_directory_and_unreadable_file(tmp_path, monkeypatch):
    assert_one_line_error(train(tmp_path, tmp_path), "is a directory")

    def denied(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("pathlib.Path.read_bytes", denied)
    with pytest.raises(CharRNNError, match="permission denied"):
        read_bytes(tmp_path / "x.txt")


def test_encodings_bom_and_line_endings():
    assert decode("\ufeffhello\r\nworld\rend".encode("utf-8"), "f") == "hello\nworld\nend"
    assert decode(b"a\r\nb", "f", keep_newlines=True) == "a\r\nb"
    assert decode("café".encode("cp1252"), "f", encoding="cp1252") == "café"
    assert decode(b"caf\xe9", "f", errors="replace") == "caf\ufffd"
    with pytest.raises(CharRNNError, match="byte offset 3 .byte 0xe9"):
        decode(b"caf\xe9", "f")
    with pytest.raises(CharRNNError, match="--encoding 'klingon'"):
        decode(b"x", "f", encoding="klingon")


def test_latin1_corpus_trains_with_encoding_flag(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes(words_text(3000).replace("the", "thé").encode("latin-1"))
    assert_one_line_error(train(path, tmp_path), "byte offset")
    ok = train(path, tmp_path, "--encoding", "latin-1")
    assert ok.returncode == 0, ok.stderr.decode()


@pytest.mark.parametrize(
    "text",
    [
        "x" * 2_000_000,  # a single two-megabyte line
        words_text(3000) + " 😀🎉 e\u0301 n\u0303 👩‍👩‍👧 " * 20,  # emoji, combining marks, ZWJ sequences
        "".join(chr(0x4E00 + (i * 7919) % 4000) for i in range(12000)) + "\U00020000\n",  # thousands of CJK + astral
    ],
    ids=["one-long-line", "emoji-combining", "chinese-4000"],
)
def test_awkward_valid_text_trains(tmp_path, text):
    path = tmp_path / "c.txt"
    path.write_text(text, encoding="utf-8")
    result = train(path, tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    assert (tmp_path / "ck" / "c" / "best.pt").exists()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["train", "{corpus}", "--hidden", "0"], "--hidden 0 must be at least 1"),
        (["train", "{corpus}", "--seq-len", "-5"], "--seq-len -5"),
        (["train", "{corpus}", "--val-frac", "0.5"], "--val-frac 0.5"),
        (["train", "{corpus}", "--cell", "lstmm"], "--cell 'lstmm' is not one of"),
        (["train", "{corpus}", "--lr", "0"], "--lr 0.0"),
        (["train", "{corpus}", "--config", "{bad_toml}"], "not valid TOML"),
        (["train", "{corpus}", "--config", "{unknown_toml}"], "unknown key 'hiddenn'"),
        (["train", "{corpus}", "--config", "{binary_toml}"], "not valid TOML"),
        (["train", "{corpus}", "--seed", "-1"], "--seed -1 must be in [0, "),
        (["train", "{corpus}", "--seed", "99999999999999999999"], "--seed 99999999999999999999 must be in"),
        (["sample", "--seed", "-1"], "--seed -1 must be in [0, "),
        (["sample", "--temp", "inf"], "--temp inf must be a finite number"),
        (["sample", "--stop", ""], "--stop must not be an empty string"),
        (["sample", "--temp", "-1"], "--temp -1.0"),
        (["sample", "--top-p", "1.5"], "--top-p 1.5"),
        (["sample", "--top-p", "0"], "--top-p 0.0"),
        (["sample", "--top-k", "-1"], "--top-k -1"),
    ],
)
def test_invalid_options_are_rejected_before_any_work(tmp_path, args, needle):
    corpus = tmp_path / "c.txt"
    corpus.write_text(words_text(3000), encoding="utf-8")
    (tmp_path / "bad.toml").write_text("hidden = = 3\n")
    (tmp_path / "unknown.toml").write_text("hiddenn = 3\n")
    (tmp_path / "binary.toml").write_bytes(b"hidden = 3\n\xff\xfe\x00")
    args = [
        a.format(
            corpus=corpus,
            bad_toml=tmp_path / "bad.toml",
            unknown_toml=tmp_path / "unknown.toml",
            binary_toml=tmp_path / "binary.toml",
        )
        for a in args
    ]
    result = invoke(*args, "--out", str(tmp_path / "ck")) if args[0] == "train" else invoke(*args)
    assert_one_line_error(result, needle)
    assert not (tmp_path / "ck").exists()


@pytest.mark.parametrize(
    "encoding, needles",
    [
        ("utf-16", ["cannot be read as utf-16", "--encoding"]),  # no byte-order mark
        ("hex", ["not a text encoding"]),
        ("rot13", ["not a text encoding"]),
    ],
)
def test_encodings_that_cannot_read_the_file_are_one_line_errors(tmp_path, encoding, needles):
    path = tmp_path / "corpus.txt"
    path.write_bytes(words_text(500).encode("latin-1"))
    result = train(path, tmp_path, "--encoding", encoding)
    assert_one_line_error(result, *needles)
    assert not (tmp_path / "ck").exists()


def test_resume_hint_can_be_pasted_into_a_shell(monkeypatch):
    import shlex

    from charrnn.cli import training_run as cli
    from charrnn.training.distributed import Dist

    monkeypatch.delenv(cli.LAUNCHED_AS, raising=False)
    monkeypatch.setattr(
        "sys.argv", ["charrnn", "train", "/tmp/my corpus/t.txt", "--sample-prime", "To be", "--overwrite"]
    )
    hint = cli._resume_hint(Dist())
    command = hint.split("resume with: ", 1)[1]
    assert shlex.split(command) == ["charrnn", "train", "/tmp/my corpus/t.txt", "--sample-prime", "To be", "--resume"]


def test_places_that_cannot_be_written_are_one_line_errors(tmp_path):
    """A run folder or an export under a file (or anywhere the system refuses) fails in one
    line, with the system's reason, and without the 'disk full' guess."""
    corpus = tmp_path / "c.txt"
    corpus.write_text(words_text(3000), encoding="utf-8")
    result = invoke("train", str(corpus), *TINY, "--max-steps", "2", "--out", str(corpus))
    err = result.stderr.decode()
    last = err.strip().splitlines()[-1]  # (after the line describing the corpus)
    assert result.returncode == 1 and "cannot make the run folder (Not a directory); give another --out" in last, err
    assert "Traceback" not in err and "disk full" not in err

    assert invoke("train", str(corpus), *TINY, "--max-steps", "2", "--out", str(tmp_path / "ck")).returncode == 0
    ckpt = tmp_path / "ck" / "c" / "last.pt"
    result = invoke("export", str(ckpt), "-o", str(corpus / "x.npz"))
    err = result.stderr.decode()
    assert result.returncode == 1 and f"could not write the export ({corpus} is a file, not a folder)" in err, err
    assert "Traceback" not in err and err.strip().count("\n") == 0
    assert not list(tmp_path.glob("**/.*.tmp"))


def test_resuming_a_finished_run_says_how_to_go_on(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text(words_text(3000), encoding="utf-8")
    common = [str(corpus), *TINY, "--max-steps", "3", "--out", str(tmp_path / "ck")]
    assert invoke("train", *common).returncode == 0
    again = invoke("train", *common, "--resume")
    err = again.stderr.decode()
    assert again.returncode == 0 and "already reached its limit at step 3 (--max-steps 3);" in err, err
    assert "resume with a higher one" in err


def test_text_files_of_eval_and_prime_file_get_advice_their_command_can_follow(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text(words_text(3000), encoding="utf-8")
    assert invoke("train", str(corpus), *TINY, "--max-steps", "2", "--out", str(tmp_path / "ck")).returncode == 0
    run = str(tmp_path / "ck" / "c")
    latin, empty = tmp_path / "latin.txt", tmp_path / "empty.txt"
    latin.write_bytes("the café".encode("latin-1"))
    empty.write_bytes(b"")
    cases = [
        (["eval", run, str(latin)], "pass --encoding (e.g. latin-1, cp1252)", "--errors"),  # eval has no --errors
        (["sample", "-c", run, "--prime-file", str(latin)], "save it as UTF-8", "--encoding"),  # sample has neither
        (["eval", run, str(empty)], "the text is empty", "corpus"),
        (["sample", "-c", run, "--prime-file", str(empty)], "the prime file is empty", "corpus"),
    ]
    for args, needle, absent in cases:
        result = invoke(*args)
        err = result.stderr.decode()
        assert result.returncode == 2 and needle in err and absent not in err, (args, err)


def test_warnings_and_empty_out_read_as_plain_text(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text(words_text(3000), encoding="utf-8")
    empty_out = invoke("train", str(corpus), *TINY, "--out", "")
    assert_one_line_error(empty_out, "--out '' must name a folder")
    short = invoke(
        "train",
        str(corpus),
        "--layers",
        "1",
        "--hidden",
        "8",
        "--embed",
        "4",
        "--max-steps",
        "1",
        "--out",
        str(tmp_path / "ck"),
    )
    err = short.stderr.decode()
    assert short.returncode == 0 and "warning: the corpus is short: using --batch-size" in err, err
    assert "[yellow]" not in err and "[/]" not in err  # rich markup rendered, not printed


@pytest.mark.parametrize("handler", ["surrogateescape", "surrogatepass"])
def test_error_handlers_that_make_lone_surrogates_are_refused(tmp_path, handler):
    """They would put non-characters in the vocabulary, and samples would not be UTF-8."""
    path = tmp_path / "latin1.txt"
    path.write_bytes(words_text(3000).replace("the", "th\xe9").encode("latin-1"))
    for command in ("train", "prepare"):
        result = (
            train(path, tmp_path, "--errors", handler)
            if command == "train"
            else invoke("prepare", str(path), "--errors", handler)
        )
        assert_one_line_error(
            result, f"--errors {handler!r}", "lone surrogates", "--encoding latin-1", "--errors replace"
        )
    assert not (tmp_path / "ck").exists()


def test_an_error_handler_for_writing_is_refused_for_reading(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(words_text(3000).replace("the", "th\xe9").encode("latin-1"))
    assert_one_line_error(
        train(path, tmp_path, "--errors", "xmlcharrefreplace"), "--errors 'xmlcharrefreplace'", "for writing"
    )


def test_an_encoding_that_decodes_to_lone_surrogates_is_refused(tmp_path):
    path = tmp_path / "escaped.txt"
    path.write_bytes(words_text(3000).encode() + b" \\udcff \\ud800 end")  # unicode_escape reads them as surrogates
    assert_one_line_error(train(path, tmp_path, "--encoding", "unicode_escape"), str(path), "lone surrogates", "U+DCFF")
    assert not (tmp_path / "ck").exists()


@pytest.mark.parametrize(
    "encoding, text, suggested",
    [
        ("utf-16", words_text(3000), "utf-16"),  # a byte-order mark (Python writes one)
        ("utf-16-le", words_text(3000) + " café", "utf-16-le"),  # none: where the NUL bytes are
        ("utf-16-be", words_text(3000), "utf-16-be"),
        ("utf-32", words_text(3000), "utf-32"),
        ("utf-32-le", words_text(3000), "utf-32-le"),
        ("utf-32-be", words_text(3000) + " 😀", "utf-32-be"),
        ("utf-16", "世界和平" * 500, "utf-16"),  # no NUL byte at all: the mark is not UTF-8
    ],
    ids=["utf-16-bom", "utf-16-le", "utf-16-be", "utf-32-bom", "utf-32-le", "utf-32-be", "utf-16-bom-cjk"],
)
def test_utf16_and_utf32_files_are_named_with_the_encoding_to_pass(tmp_path, encoding, text, suggested):
    path = tmp_path / "wide.txt"
    path.write_bytes(text.encode(encoding))
    refused = train(path, tmp_path, "--cache-dir", str(tmp_path / "cache"))
    assert_one_line_error(refused, str(path), f"looks like {suggested.upper()} text", f"pass --encoding {suggested}")
    assert not list((tmp_path / "cache").glob("*"))
    result = train(path, tmp_path, "--encoding", suggested)  # the advice works
    assert result.returncode == 0, result.stderr.decode()


def test_binary_files_with_nul_bytes_are_still_binary_and_a_bom_is_believed_only_where_it_must_be():
    with pytest.raises(CharRNNError, match="binary file .it contains NUL bytes"):
        decode(bytes(range(256)) * 20, "f")
    assert decode("ÿþok".encode("latin-1"), "f", encoding="latin-1") == "ÿþok"  # a UTF-16 mark, but valid latin-1 text
    with pytest.raises(
        CharRNNError, match="looks like UTF-16 text .a UTF-16 byte-order mark., not utf-8; save it as UTF-8"
    ):
        decode("hi there".encode("utf-16"), "f", flags=())  # a command without --encoding
