import numpy as np

from charrnn.data.batches import batchify, fit_batch_size, get_chunk, num_chunks


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
