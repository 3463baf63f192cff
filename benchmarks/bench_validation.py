"""Issue #8 (2): validation speed.

* Integer reference executor vs Lava CPU ``fixed_pt`` on the same lowered network and
  the same digits samples, per sample, Lava's compile excluded (reported on its own).
  Both run the same number of steps per sample (T plus the pipeline fill). The
  reference runs one sample per call here (its batched per-sample time is in ``extra``).
* Lava's per-step cost of the demo transformer vs a plain Dense+LIF chain with the same
  number of Lava processes (Lava's own floor: one OS process per ProcessModel).

Every Lava sample after the first is timed separately (from the runner's per-sample
callback: run + spike collection + state reset), so the median is over samples.
"""

from __future__ import annotations

import time

import numpy as np

from common import Row, digits_test, measure, set_threads, summary, train_small_transformer
from lrfdyn.export.to_nir import model_to_nir
from lrfdyn.loihi.build import build_lava
from lrfdyn.loihi.ir import LoweredNetwork
from lrfdyn.loihi.lower import lower
from lrfdyn.sim.lava_run import run_lava
from lrfdyn.sim.reference import run_reference
from lrfdyn.sim.report import first_mismatches

LAVA_SAMPLES = 7  # the first one compiles; 6 timed samples
REF_TARGET = 50.0
FLOOR_TARGET = 3.0


TRAIN_EPOCHS = 3


def transformer_net() -> tuple[LoweredNetwork, float]:
    """The demo transformer, trained briefly so that its layers spike, lowered."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="lrfdyn-bench-") as tmp:
        model, acc = train_small_transformer(tmp, epochs=TRAIN_EPOCHS)
    return lower(model_to_nir(model, (1, 8, 8), model.cfg.timesteps)), acc


def chain_net(processes: int, width: int = 64, timesteps: int = 4) -> tuple[LoweredNetwork, int]:
    """A Dense+LIF chain (the spiking MLP, 64 → width … → 10) with ``processes`` Lava processes.

    Without biases the chain has 1 + 3·L processes (source, then Dense, LIF and sink per
    layer); biases on j layers add the bias source and j bias synapses (2 + 3·L + j).
    """
    import torch

    from lrfdyn.train.models import build_model

    best = None
    for layers in range(1, processes):
        for j in range(0, 4):
            count = 1 + 3 * layers + (1 + j if j else 0)
            if count == processes and j <= layers:
                best = (layers, j)
                break
        if best:
            break
    if best is None:
        raise ValueError(f"no Dense+LIF chain has {processes} processes")
    layers, j = best
    torch.manual_seed(0)
    model = build_model("mlp", {"in_features": 64, "hidden": [width] * (layers - 1),
                                "num_classes": 10, "timesteps": timesteps}).eval()
    with torch.no_grad():
        linears = [m for m in model.layers if isinstance(m, torch.nn.Linear)]
        for lin in linears[:j]:
            lin.bias.fill_(0.05)
    return lower(model_to_nir(model, (1, 8, 8), timesteps)), layers


def lava_per_sample(net: LoweredNetwork, x: np.ndarray) -> tuple[dict, float, dict]:
    """Per-sample Lava times (samples 2…N), compile + first sample, and all spikes."""
    stamps: list[float] = []
    t0 = time.perf_counter()
    run = run_lava(net, x, on_sample=lambda i: stamps.append(time.perf_counter()))
    per = [b - a for a, b in zip(stamps[:-1], stamps[1:])]
    first = stamps[0] - t0  # includes build_lava's ring-buffer setup, compile and start
    return summary(per), first, run.spikes


def _spikes_per_sample(ref: dict[str, np.ndarray], t_in: int) -> dict[str, float]:
    return {g: float(s[:, :t_in].sum() / len(s)) for g, s in ref.items()}


def run(quick: bool = False) -> tuple[list[Row], dict]:
    set_threads()
    rows: list[Row] = []
    images, _ = digits_test(LAVA_SAMPLES)
    x = images.reshape(len(images), -1).astype(np.int64)

    tnet, float_acc = transformer_net()
    steps = tnet.steps_per_sample()
    n_proc = len(build_lava(tnet, x[:1]).processes)
    ref_one = measure(lambda: run_reference(tnet, x[:1], steps), repeats=LAVA_SAMPLES)
    t0 = time.perf_counter()
    ref_all = run_reference(tnet, x, steps)
    ref_batched = (time.perf_counter() - t0) / len(x)
    lava_t, first_t, lava_spikes = lava_per_sample(tnet, x)
    counts, first = first_mismatches(lava_spikes, ref_all, tnet)
    spk = _spikes_per_sample(ref_all, tnet.input.timesteps)
    silent = [g for g, v in spk.items() if v == 0]
    ratio = lava_t["median"] / ref_one["median"]
    info = {
        "network": f"LRF-Dyn Spikformer trained {TRAIN_EPOCHS} epochs on 8x8 digits, dim 32, "
                   "depth 1, T=4, stem_strides [1, 2], 16 tokens",
        "float_test_accuracy": float_acc,
        "lava_processes": n_proc, "groups": len(tnet.groups), "synapse_layers":
        len(tnet.synapses), "neurons": sum(g.size for g in tnet.groups.values()),
        "steps_per_sample": steps, "latency": tnet.latency,
        "spikes_per_sample_by_group": spk, "silent_groups": silent,
        "lava_vs_reference_mismatches": int(sum(counts.values())),
        "first_mismatch": None if first is None else str(first),
    }
    rows.append(Row(
        group="validation", name="integer reference per sample (batch of 1), demo transformer",
        value=ref_one, unit="s", baseline_name="Lava CPU fixed_pt per sample (compile excluded)",
        baseline=lava_t, ratio=ratio, ratio_label="speed-up (Lava / reference)",
        target=f"≥ {REF_TARGET:g}×", met=ratio >= REF_TARGET,
        reason="" if ratio >= REF_TARGET else
        f"reference only {ratio:.1f}× faster than Lava per sample",
        extra={**info, "reference_batched_per_sample_s": ref_batched,
               "speedup_vs_batched_reference": lava_t["median"] / ref_batched},
    ))
    rows.append(Row(
        group="validation", name="Lava compile + start + first sample, demo transformer",
        value=summary([first_t]), unit="s", target="reported separately",
        extra={"note": "one measurement per run (each needs a fresh Lava runtime); "
                       "pure compile time is in the toolchain group"},
    ))

    cnet, layers = chain_net(n_proc, timesteps=tnet.input.timesteps)
    c_proc = len(build_lava(cnet, x[:1]).processes)
    chain_t, chain_first, _ = lava_per_sample(cnet, x)
    t_step = {k: (v / steps if isinstance(v, float) else v) for k, v in lava_t.items()}
    t_step["samples"] = [s / steps for s in lava_t["samples"]]
    c_steps = cnet.steps_per_sample()
    c_step = {k: (v / c_steps if isinstance(v, float) else v) for k, v in chain_t.items()}
    c_step["samples"] = [s / c_steps for s in chain_t["samples"]]
    ratio2 = t_step["median"] / c_step["median"]
    rows.append(Row(
        group="validation", name=f"Lava per step, demo transformer ({n_proc} processes)",
        value=t_step, unit="s",
        baseline_name=f"Dense+LIF chain, {layers} layers ({c_proc} processes)",
        baseline=c_step, ratio=ratio2, ratio_label="transformer / chain",
        target=f"≤ {FLOOR_TARGET:g}×", met=ratio2 <= FLOOR_TARGET,
        reason="" if ratio2 <= FLOOR_TARGET else
        f"{ratio2:.1f}× the floor: the transformer's synapse matrices are larger "
        f"({sum(s.nnz for s in tnet.synapses)} vs {sum(s.nnz for s in cnet.synapses)} synapses)",
        extra={"transformer_steps_per_sample": steps, "chain_steps_per_sample": c_steps,
               "transformer_synapses": int(sum(s.nnz for s in tnet.synapses)),
               "chain_synapses": int(sum(s.nnz for s in cnet.synapses)),
               "transformer_neurons": info["neurons"],
               "chain_neurons": int(sum(g.size for g in cnet.groups.values())),
               "chain_compile_and_first_sample_s": chain_first},
    ))
    return rows, info


if __name__ == "__main__":
    rows, info = run()
    for r in rows:
        print(r.name, r.value["median"], r.baseline and r.baseline["median"], r.ratio)
    print(info)
