"""Could a hand-written GRU train faster than torch's fused nn.GRU on the CPU? (It cannot.)

`charrnn bench` finds the GRU 2x512 at about 60% of the matmul peak, against 84% for the LSTM.
This script tests the obvious way to do better: a GRU layer as an autograd Function that

- computes the input projections of the whole chunk in one large matmul (near peak),
- steps through time with one (B, H) x (H, 3H) product and a few in-place element-wise ops,
- in backward, computes every gate's coefficient for all steps at once (outside the loop), so
  that the sequential loop is one multiply and one (B, 3H) x (3H, H) product per step,
- and the weight gradients as three large matmuls after the loop.

It checks the gradients against nn.GRU (float64), then times both in interleaved rounds.

    PYTHONPATH=. python scripts/gru_by_hand.py [--rounds 8]

Measured on the 2-core EPYC (2026-11-23, two runs of 8 rounds): hand-written / nn.GRU median
1.01x both times (per round 0.83-1.29x); 71% vs 73% of peak in the second run. The sequential
64x512x1536 products and the element-wise steps between them bound both, so charrnn keeps
nn.GRU. (Here there is no optimizer step or clipping, so the fractions of peak are higher
than `charrnn bench`'s.)
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn


class GRULayer(torch.autograd.Function):
    """One GRU layer over a chunk, torch's equations and parameter layout (r, z, n):
    r = σ(W_ir x + b_ir + W_hr h + b_hr), z = σ(W_iz x + b_iz + W_hz h + b_hz),
    n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)), h' = (1 − z) ⊙ n + z ⊙ h."""

    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh):
        T, B, _ = x.shape
        H = h0.shape[-1]
        gi = torch.addmm(b_ih, x.reshape(T * B, -1), w_ih.t()).view(T, B, 3 * H)  # all steps at once
        hs = x.new_empty(T + 1, B, H)  # hs[t] is the state before step t
        hs[0] = h0
        rz, n, ghn = x.new_empty(T, B, 2 * H), x.new_empty(T, B, H), x.new_empty(T, B, H)
        gh = x.new_empty(B, 3 * H)
        for t in range(T):
            torch.addmm(b_hh, hs[t], w_hh.t(), out=gh)
            torch.add(gi[t, :, : 2 * H], gh[:, : 2 * H], out=rz[t]).sigmoid_()
            ghn[t] = gh[:, 2 * H :]
            torch.addcmul(gi[t, :, 2 * H :], rz[t, :, :H], ghn[t], out=n[t]).tanh_()
            torch.sub(hs[t], n[t], out=hs[t + 1]).mul_(rz[t, :, H:]).add_(n[t])  # n + z (h − n)
        ctx.save_for_backward(x, w_ih, w_hh, hs, rz, n, ghn)
        return hs[1:], hs[T]

    @staticmethod
    def backward(ctx, d_out, d_last):
        x, w_ih, w_hh, hs, rz, n, ghn = ctx.saved_tensors
        T, B, _ = x.shape
        H = hs.shape[-1]
        r, z = rz[..., :H], rz[..., H:]
        # Every gate's gradient is dh_t times a coefficient fixed by the forward pass.
        a = (1 - z) * (1 - n * n)  # ∂h'/∂(n's pre-activation)
        coef = x.new_empty(T, B, 3, H)
        torch.mul(a * ghn, r * (1 - r), out=coef[:, :, 0])  # r's pre-activation
        torch.mul(hs[:T] - n, z * (1 - z), out=coef[:, :, 1])  # z's pre-activation
        torch.mul(a, r, out=coef[:, :, 2])  # W_hn h + b_hn
        d_gh, d_h = x.new_empty(T, B, 3, H), x.new_empty(T, B, H)
        dh = d_last.clone() if d_last is not None else x.new_zeros(B, H)
        for t in range(T - 1, -1, -1):
            if d_out is not None:
                dh.add_(d_out[t])
            d_h[t] = dh
            torch.mul(dh.unsqueeze(1), coef[t], out=d_gh[t])
            dh = torch.addmm(dh * z[t], d_gh[t].view(B, 3 * H), w_hh)
        d_gi = d_gh.clone()
        d_gi[:, :, 2] = d_h * a  # the input side of n is not multiplied by r
        d_gi, d_gh = d_gi.view(T * B, 3 * H), d_gh.view(T * B, 3 * H)
        dx = (d_gi @ w_ih).view_as(x)
        return dx, dh, d_gi.t() @ x.reshape(T * B, -1), d_gh.t() @ hs[:T].reshape(T * B, H), d_gi.sum(0), d_gh.sum(0)


def gru_by_hand(gru: nn.GRU, x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """nn.GRU's forward (time-major, no dropout) through GRULayer, with gru's own parameters."""
    last = []
    for layer in range(gru.num_layers):
        weights = [getattr(gru, f"{kind}_l{layer}") for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        x, h = GRULayer.apply(x, h0[layer], *weights)
        last.append(h)
    return x, torch.stack(last)


def max_gradient_error(seed: int = 0) -> float:
    """Largest difference between the hand-written and nn.GRU's outputs and gradients (float64)."""
    torch.manual_seed(seed)
    gru = nn.GRU(8, 16, 2).double()
    x = torch.randn(7, 3, 8, dtype=torch.double, requires_grad=True)
    h0 = torch.randn(2, 3, 16, dtype=torch.double, requires_grad=True)
    results = []
    for forward in (gru, lambda a, b: gru_by_hand(gru, a, b)):
        out, h = forward(x, h0)
        loss = out.sin().sum() + h.cos().sum()
        grads = torch.autograd.grad(loss, [x, h0, *gru.parameters()])
        results.append([out, h, *grads])
    return max((a - b).abs().max().item() for a, b in zip(*results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    print(f"largest difference from nn.GRU (outputs and gradients, float64): {max_gradient_error():.1e}")

    T, B, E, H, V = 100, 64, 64, 512, 65  # the benchmark's GRU 2x512 case
    embed, gru, head = nn.Embedding(V, E), nn.GRU(E, H, 2), nn.Linear(H, V)
    ids, targets, h0 = torch.randint(0, V, (T, B)), torch.randint(0, V, (T * B,)), torch.zeros(2, B, H)
    flops = 3 * (6 * H * (E + H) + 6 * H * 2 * H + 2 * H * V) * T * B  # training ≈ 3 × forward

    def step(by_hand: bool) -> float:
        t = time.perf_counter()
        out, _ = gru_by_hand(gru, embed(ids), h0) if by_hand else gru(embed(ids), h0)
        nn.functional.cross_entropy(head(out).view(-1, V), targets).backward()
        return time.perf_counter() - t

    a = torch.randn(2048, 2048)
    step(True), step(False)
    peaks, speed = [], {False: [], True: []}
    for _ in range(args.rounds):
        t = time.perf_counter()
        torch.mm(a, a)
        peaks.append(2 * 2048**3 / (time.perf_counter() - t) / 1e9)
        for by_hand in (False, True):
            speed[by_hand].append(flops / step(by_hand) / 1e9)
    peak = statistics.median(peaks)
    for by_hand, name in ((False, "nn.GRU (oneDNN)"), (True, "hand-written")):
        gflops = statistics.median(speed[by_hand])
        print(
            f"{name:16} {gflops * 1e9 / flops * T * B:7,.0f} chars/s  {gflops:5.1f} GFLOP/s  {gflops / peak:4.0%} of "
            f"peak {peak:.0f}"
        )
    ratios = [b / a for a, b in zip(speed[False], speed[True])]
    print(
        f"hand-written / nn.GRU per round: {', '.join(f'{r:.2f}' for r in ratios)}; median "
        f"{statistics.median(ratios):.2f}"
    )


if __name__ == "__main__":
    main()
