"""The benchmark's pure parts (FLOP counts) and one tiny pass through its machinery.
Speed itself is never asserted: `charrnn bench` prints it."""

from charrnn import bench


def test_flop_counts_follow_the_gate_counts():
    # LSTM 2x512 on 64-dim embeddings, 65 characters: 8H(E+H) + 8H(2H) + 2HV
    assert bench.forward_flops_per_char("lstm", 2, 512, 64, 65) == 8 * 512 * 576 + 8 * 512 * 1024 + 2 * 512 * 65
    assert bench.forward_flops_per_char("gru", 1, 10, 5, 7) == 6 * 10 * 15 + 2 * 10 * 7
    assert bench.forward_flops_per_char("rnn", 1, 10, 5, 7) == 2 * 10 * 15 + 2 * 10 * 7


def test_train_step_factories_run():
    case = bench.TrainCase("gru", 1, 16, 8, 4)
    step = bench.charrnn_train_step(case)
    step()
    bench.textbook_train_step(bench.TrainCase("lstm", 2, 16, 8, 4))()
    assert bench._timed(step, warmup=1, steps=3) > 0
