"""Issue #8 (4): peak memory of training and simulation, SSA vs LRF-Dyn, d = 128 and 512.

Each figure comes from a fresh interpreter (``python bench_memory.py child …``), which
reports its own peak RSS (``VmHWM``) so the measurements cannot contaminate each other.

* training: one Spikformer (depth 1, T = 4, 28×28 input, stem strides [1, 2] → N = 196
  tokens, batch 8) runs 2 optimiser steps (forward, backward, AdamW) on random images;
  the figure is the peak RSS minus the RSS after imports (the model, activations,
  gradients and optimiser state).
* simulation: the integer reference (:func:`lrfdyn.sim.reference.run_reference`) on
  8 digits samples of the lowered LRF-Dyn network (8×8 input, N = 16 tokens, T = 4).
  The peak is reset after lowering (Linux ``clear_refs``), so the figure is the peak
  while simulating (the resident network included). SSA cannot be simulated: NIR 1.0
  has no product node, so its export is refused (docs/design.md §5). Lava with a d = 512
  transformer is too big for this machine (one OS process per layer, dense synapse
  matrices of tens of millions of entries), so simulation memory is the reference's.

Repetitions: memory is deterministic up to allocator noise, so each figure is the
median of 5 child runs for the d = 128 cases, of 3 for training at d = 512 and a single
run for simulation at d = 512 (whose lowering alone takes ~2 min and ~5 GB: 187 M
synapses); see ``value.n``. The 15-minute budget of ``make bench`` does not allow more.
"""

from __future__ import annotations

import json
import sys

from common import Row, run_child, summary

DIMS = (128, 512)
BATCH = 8


def _train_child(attention: str, dim: int) -> dict:
    import torch

    from common import peak_rss_mib, rss_mib, set_threads
    from lrfdyn.train.models import build_model

    set_threads()
    base = rss_mib()
    torch.manual_seed(0)
    model = build_model("spikformer", dict(
        img_size=28, in_channels=1, num_classes=10, dim=dim, depth=1, heads=8, timesteps=4,
        attention=attention, stem_strides=[1, 2]))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.rand(BATCH, 1, 28, 28)
    y = torch.randint(0, 10, (BATCH,))
    for _ in range(2):
        out, _ = model(x)
        loss = torch.nn.functional.cross_entropy(out.sum(0), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {"peak_mib": peak_rss_mib() - base, "peak_total_mib": peak_rss_mib(),
            "base_mib": base, "tokens": model.cfg.grid[0] * model.cfg.grid[1]}


def _sim_child(attention: str, dim: int) -> dict:
    import numpy as np

    from common import build_small_transformer, digits_test, peak_rss_mib, reset_peak_rss
    from common import rss_mib
    from lrfdyn.export.to_nir import model_to_nir
    from lrfdyn.loihi.lower import lower
    from lrfdyn.sim.reference import run_reference

    model = build_small_transformer(dim=dim, attention=attention, heads=8)
    net = lower(model_to_nir(model, (1, 8, 8), model.cfg.timesteps))
    del model
    import gc

    gc.collect()
    images, _ = digits_test(8)
    x = images.reshape(8, -1).astype(np.int64)
    after_lower = rss_mib()
    lowering_peak = peak_rss_mib()
    reset = reset_peak_rss()
    run_reference(net, x, net.steps_per_sample())
    return {"peak_mib": peak_rss_mib(), "rss_after_lowering_mib": after_lower,
            "peak_during_lowering_mib": lowering_peak, "peak_reset": reset,
            "neurons": int(sum(g.size for g in net.groups.values())),
            "synapses": int(sum(s.nnz for s in net.synapses))}


def _median_child(kind: str, attention: str, dim: int, reps: int) -> dict:
    runs = [run_child("bench_memory.py", ["child", kind, attention, str(dim)], timeout=400)
            for _ in range(reps)]
    out = dict(runs[0])
    out["value"] = summary([r["peak_mib"] for r in runs])
    return out


def run(quick: bool = False) -> tuple[list[Row], dict]:
    rows: list[Row] = []
    for dim in DIMS:
        reps = 5 if dim == 128 else 3
        ssa = _median_child("train", "ssa", dim, reps)
        dyn = _median_child("train", "lrf_dyn", dim, reps)
        rows.append(Row(
            group="memory", name=f"training peak RSS, LRF-Dyn, d={dim}, N={dyn['tokens']}, "
            f"batch {BATCH}, T=4", value=dyn["value"], unit="MiB",
            baseline_name="SSA (same model and batch)", baseline=ssa["value"],
            ratio=dyn["value"]["median"] / ssa["value"]["median"],
            ratio_label="LRF-Dyn / SSA", target="informational (no target in #8)",
            extra={"lrf_dyn": {k: v for k, v in dyn.items() if k != "value"},
                   "ssa": {k: v for k, v in ssa.items() if k != "value"},
                   "measure": "peak RSS minus RSS after imports, fresh process"}))
    sims = {}
    for dim in DIMS:
        reps = 5 if dim == 128 else 1  # d=512: lowering alone takes ~2 min and ~5 GB
        try:
            sims[dim] = _median_child("sim", "lrf_dyn", dim, reps)
        except Exception as exc:  # noqa: BLE001  (report and go on)
            sims[dim] = {"error": str(exc)}
    base = sims[128].get("value")
    for dim in DIMS:
        s = sims[dim]
        v = s.get("value")
        rows.append(Row(
            group="memory", name=f"simulation peak RSS (integer reference), LRF-Dyn, d={dim}, "
            "N=16, 8 samples", value=v, unit="MiB",
            baseline_name="LRF-Dyn d=128" if dim != 128 else None,
            baseline=base if dim != 128 else None,
            ratio=(v["median"] / base["median"]) if (v and base and dim != 128) else None,
            ratio_label="d / d=128" if dim != 128 else "",
            target="informational", met=None if v else False,
            reason="" if v else s.get("error", ""),
            extra={k: val for k, val in s.items() if k != "value"}))
        rows.append(Row(
            group="memory", name=f"simulation peak RSS, SSA, d={dim}", value=None, unit="MiB",
            target="not measurable", met=None,
            reason="SSA multiplies activations (Q·Kᵀ·V); NIR 1.0 has no product node, so "
                   "export is refused and there is no lowered network to simulate"))
    rows.append(Row(
        group="memory", name="simulation peak RSS on Lava, LRF-Dyn d=512", value=None,
        unit="MiB", target="not measurable here", met=None,
        reason="too big for this machine: at d=32 the transformer already needs 36–44 Lava "
               "processes and ~0.25 s per step; d=512 multiplies the dense synapse "
               "matrices by 256"))
    from lrfdyn.train.functional.dendrite import state_size

    rows.append(Row(
        group="memory", name="dendritic-mode attention state (streaming), d=512, k=8",
        value=None, unit="bits", target="placeholder: depends on issue #6", met=None,
        reason="the dendritic (streaming) lowering is issue #6; until it exists only the "
               f"analytic state is known: k·d = {state_size(512, 8)} compartments per stream "
               "(×24-bit u and v each on Loihi), vs N·d membranes in parallel mode",
        extra={"analytic_state_values": state_size(512, 8)}))
    return rows, {"batch": BATCH}


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "child":
        kind, attention, dim = sys.argv[2], sys.argv[3], int(sys.argv[4])
        fn = _train_child if kind == "train" else _sim_child
        print(json.dumps(fn(attention, dim)))
    else:
        for r in run()[0]:
            print(r.name, r.value and r.value["median"], r.ratio, r.reason)
