import numpy as np

from charrnn.data.batches import batchify, even_share_of_streams, fit_batch_size, get_chunk, num_chunks, shard_rows


def test_streams_are_contiguous_and_chunks_continue():
    ids = np.arange(26, dtype=np.uint8)
    streams = batchify(ids, 2)
    assert streams.tolist() == [list(range(13)), list(range(13, 26))]
    x0, y0 = get_chunk(streams, 0, 4)
    x1, _ = get_chunk(streams, 1, 4)
    assert x0.tolist() == [[0, 1, 2, 3], [13, 14, 15, 16]]
    assert y0.tolist() == [[1, 2, 3, 4], [14, 15, 16, 17]]
    assert x1[:, 0].tolist() == [4, 17]  # chunk 1 starts where chunk 0 stopped
    assert num_chunks(streams, 4) == 3  # 13 chars: 12 inputs with targets -> 3 chunks of 4


def test_fit_batch_size_shrinks_for_short_corpora():
    assert fit_batch_size(1000, 10, 32) == 32
    assert fit_batch_size(50, 10, 32) == 4
    assert fit_batch_size(10, 10, 32) == 0
    assert (
        fit_batch_size(170, 16, 32) == 10 and fit_batch_size(169, 16, 32) == 9
    )  # each stream: 16 inputs and 1 more target


def test_a_chunk_needs_seq_len_inputs_and_one_more_target():
    assert [num_chunks(np.zeros((2, width)), 4) for width in (1, 4, 5, 8, 9, 13)] == [0, 0, 1, 1, 2, 3]
    assert isinstance(num_chunks(np.zeros((2, 13)), 4), int)


def test_streams_are_shared_out_in_contiguous_blocks_that_differ_by_one_at_most():
    for n_rows in range(0, 12):
        for world in range(1, 5):
            blocks = [shard_rows(n_rows, rank, world) for rank in range(world)]
            assert [i for b in blocks for i in range(n_rows)[b]] == list(range(n_rows)), (n_rows, world)
            sizes = [len(range(n_rows)[b]) for b in blocks]
            assert sizes == sorted(sizes, reverse=True) and sizes[0] - sizes[-1] <= 1, (n_rows, world, sizes)
            assert all(b.start is not None and b.stop is not None for b in blocks)


def test_a_resumed_run_keeps_its_total_number_of_streams():
    assert (
        even_share_of_streams(8, 2, 1) == 16
        and even_share_of_streams(8, 2, 4) == 4
        and even_share_of_streams(16, 1, 2) == 8
    )
    assert type(even_share_of_streams(8, 2, 4)) is int  # (a number of streams: slices and shapes need an int)
    assert even_share_of_streams(8, 2, 3) is None and even_share_of_streams(5, 1, 2) is None


def resident_kib(path) -> int:
    """How much of the file at `path` this process has in memory (its mappings' Rss, Linux)."""
    total, mapped = 0, False
    with open("/proc/self/smaps") as fh:
        for line in fh:
            first = line.split(maxsplit=1)[0]
            if "-" in first and not first.endswith(":"):  # a mapping's header line: address range ... path
                mapped = line.rstrip("\n").endswith(str(path))
            elif mapped and first == "Rss:":
                total += int(line.split()[1])
    return total


def test_release_pages_gives_back_the_memory_of_a_memory_mapped_corpus_walked_through(tmp_path):
    import sys

    import pytest

    if not sys.platform.startswith("linux"):
        pytest.skip(
            "reads /proc/self/smaps"
        )  # (not a tool make setup installs: where it is missing, there is nothing to check)
    from charrnn.data.batches import release_pages

    path = tmp_path / "ids.npy"
    np.save(path, np.arange(8 << 20, dtype=np.uint16) % 251)  # 16 MiB
    ids = np.load(path, mmap_mode="r")
    streams = batchify(ids[1000:], 4)  # a view of a view of the map, as training holds it
    total = int(streams.sum(dtype=np.int64))  # read every page
    assert resident_kib(path) > 12 * 1024
    release_pages(streams)
    assert resident_kib(path) < 1024
    assert int(streams.sum(dtype=np.int64)) == total  # read again, from the file (or the page cache)
    for other in (np.arange(10), np.frombuffer(b"\x01\x02\x03", dtype=np.uint8), np.arange(10)[2:5]):
        release_pages(other)  # anything else is left alone
    assert np.frombuffer(b"\x01\x02\x03", dtype=np.uint8).tolist() == [1, 2, 3]
