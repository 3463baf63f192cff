"""Issue #8 (1): LRF-Dyn training path, FFT-parallel vs step-by-step recurrence.

Forward + backward of the dendrites alone (:mod:`lrfdyn.train.functional.dendrite`)
with random inputs and parameters that require grad, k = 8, B·T = 8 streams. The
parameters start from the raw (unconstrained) values training optimises, so both
paths include building A; the FFT path also builds the kernel ``K_m = C A^m Γ``.
Baseline: the recurrence; the figure is the FFT path's speed-up (target ≥ 5× at N = 196).
"""

from __future__ import annotations

import math

import torch

from common import Row, measure_interleaved, set_threads
from lrfdyn.train.functional import dendrite as dfn

TOKENS = (49, 196, 784)
DIMS = (128, 512)
K = 8
STREAMS = 8  # B·T
TARGET_N = 196
TARGET_SPEEDUP = 5.0


def _params(d: int, k: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    tau0 = torch.logspace(math.log10(2.0), math.log10(16.0), k)
    tau_raw = dfn.raw_from_tau(tau0).repeat(d, 1).requires_grad_()
    beta_raw = (0.5 * torch.randn(d, k - 1, generator=g)).requires_grad_()
    gamma = torch.ones(d, k).requires_grad_()
    c = (torch.randn(d, k, generator=g) / math.sqrt(k)).requires_grad_()
    return [tau_raw, beta_raw, gamma, c]


def _parameters(leaves: list[torch.Tensor]) -> dfn.DendriteParameters:
    tau_raw, beta_raw, gamma, c = leaves
    tau = dfn.tau_from_raw(tau_raw)
    return dfn.DendriteParameters(dfn.build_a(tau, dfn.beta_from_raw(beta_raw, tau)), gamma, c)


def _step(path: str, u: torch.Tensor, leaves: list[torch.Tensor]) -> None:
    p = _parameters(leaves)
    if path == "fft":
        y = dfn.causal_conv_fft(u, dfn.dendrite_kernel(p, u.shape[-2]))
    else:
        y, _ = dfn.dendrite_recurrence(u, p)
    y.square().mean().backward()
    for t in (u, *leaves):
        t.grad = None


def run(quick: bool = False) -> tuple[list[Row], dict]:
    threads = set_threads()
    rows: list[Row] = []
    repeats = 5
    for d in DIMS:
        for n in TOKENS:
            g = torch.Generator().manual_seed(1)
            u = (torch.rand(STREAMS, n, d, generator=g) < 0.2).float().requires_grad_()
            leaves = _params(d, K)
            # Agreement check (float32): both paths compute the same y.
            with torch.no_grad():
                p = _parameters(leaves)
                y_fft = dfn.causal_conv_fft(u, dfn.dendrite_kernel(p, n))
                y_rec, _ = dfn.dendrite_recurrence(u, p)
                err = float((y_fft - y_rec).abs().max())
            both = measure_interleaved(
                {"fft": lambda: _step("fft", u, leaves),
                 "rec": lambda: _step("recurrence", u, leaves)},
                repeats=repeats, warmup=0 if n >= 784 else 1)
            fft, rec = both["fft"], both["rec"]
            speedup = rec["median"] / fft["median"]
            target = n == TARGET_N
            met = speedup >= TARGET_SPEEDUP if target else None
            rows.append(Row(
                group="dendrite", name=f"LRF-Dyn fwd+bwd FFT, N={n}, d={d}, k={K}, B·T={STREAMS}",
                value=fft, unit="s", baseline_name="recurrence (step by step)", baseline=rec,
                ratio=speedup, ratio_label="speed-up (recurrence / FFT)",
                target=f"≥ {TARGET_SPEEDUP:g}× at N = {TARGET_N}" if target else "",
                met=met,
                reason="" if met in (None, True) else
                (f"FFT only {speedup:.2f}× faster: on CPU the recurrence is already vectorised "
                 f"over B·T·d = {STREAMS * d} streams (a {K}×{K} matvec each per token), so "
                 "the FFT saves only the Python loop over N; its O(N log N) complex "
                 "transforms at 2N padding cost about as much as the O(N·k²) recurrence"),
                extra={"max_abs_diff_fft_vs_recurrence": err},
            ))
    return rows, {"k": K, "streams": STREAMS, "torch_threads": threads}


if __name__ == "__main__":
    for r in run()[0]:
        print(r.name, f"{r.value['median'] * 1e3:.2f} ms vs {r.baseline['median'] * 1e3:.2f} ms",
              f"→ {r.ratio:.1f}×")
