"""``lrfdyn profile``: run a lowered network and count what it does, layer by layer.

Counts come from recorded spikes (Lava's CPU backend has no hardware counters),
in the T input steps of every sample, in logical time: Lava's group ``g`` at
step ``t + latency(g)`` is the reference's step ``t`` (docs/design.md §3.5), so the
Lava run and the integer reference (``fast=True``) give identical counts when
they are spike-exact.

Definitions (N samples, T steps each):

* spikes, firing rate = spikes / (neurons · T · N)  (spikes per neuron per step);
* SynOps into a layer = Σ_steps Σ_sources events × fan-out, where an event is a
  spike, a non-zero graded input payload, or the bias source's every-step spike,
  and fan-out counts the non-zero weights leaving that source
  (:func:`lrfdyn.sim.report.count_synops`);
* neuron updates = neurons · T · N;
* dense-equivalent MACs = Σ over weight layers (bias excluded) of
  n_dst · n_src · T · N: what a non-spiking network of the same shape computes
  when it evaluates every weight, zero or not, at every step;
* state / synaptic memory as :func:`lrfdyn.sim.report.memory_bits`, per layer.

Energy figures are estimates (:mod:`lrfdyn.sim.energy`); the core count is a
model (:mod:`lrfdyn.loihi.resources`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lrfdyn.errors import ValidationError
from lrfdyn.io import write_json, write_text
from lrfdyn.loihi.ir import LoweredNetwork, clock_offset
from lrfdyn.loihi.resources import ResourceMap, layer_bits, map_to_cores
from lrfdyn.sim import energy
from lrfdyn.sim.reference import check_samples, run_reference
from lrfdyn.sim.report import count_synops, memory_bits, source_events

#: Format version of ``profile.json``.
PROFILE_VERSION = 1

BACKEND_LAVA = "lava-cpu fixed_pt"
BACKEND_REFERENCE = "integer reference (numpy)"
BACKEND_LOIHI2 = "loihi2 hardware"


@dataclass
class SynapseProfile:
    """What one synapse layer did over the run."""

    name: str
    src: str
    dst: str
    shape: list[int]
    nonzero_weights: int
    graded: bool
    events: int
    synops: int
    dense_macs: int


@dataclass
class LayerProfile:
    """What one neuron group did over the run (``*_per_sample`` divide by N)."""

    name: str
    neurons: int
    spikes: int
    firing_rate: float
    synops_in: int
    neuron_updates: int
    dense_macs_in: int
    state_bits: int
    synaptic_bits: int
    cores: int
    spikes_per_sample: float
    synops_in_per_sample: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.firing_rate <= 1.0:
            raise ValidationError(
                f"layer {self.name}: firing rate {self.firing_rate} is not in [0, 1]"
            )


@dataclass
class ProfileReport:
    """Counts, memory, energy estimates and the Loihi 2 mapping of one profiled run."""

    backend: str
    samples: int
    timesteps: int
    latency: int
    dt: float
    accuracy: float
    layers: list[LayerProfile]
    synapses: list[SynapseProfile]
    spikes: int
    synops: int
    neuron_updates: int
    dense_macs: int
    first_layer_macs: int
    state_memory_bits: int
    synaptic_memory_bits: int
    energy: dict[str, energy.EnergyEstimate]
    resources: ResourceMap
    labels: np.ndarray = field(repr=False)
    predictions: np.ndarray = field(repr=False)
    #: Spikes per group, (N, T, size), reference-aligned (logical time); not serialised.
    spike_trains: dict[str, np.ndarray] = field(repr=False, default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.samples < 1 or self.timesteps < 1:
            raise ValidationError("a profile needs at least one sample and one step")

    def per_sample(self) -> dict[str, float]:
        n = self.samples
        return {"spikes": self.spikes / n, "synops": self.synops / n,
                "neuron_updates": self.neuron_updates / n, "dense_macs": self.dense_macs / n,
                "first_layer_macs": self.first_layer_macs / n}

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "lrfdyn-profile", "version": PROFILE_VERSION,
            "backend": self.backend, "samples": self.samples, "timesteps": self.timesteps,
            "latency": self.latency, "dt": self.dt, "accuracy": self.accuracy,
            "totals": {"spikes": self.spikes, "synops": self.synops,
                       "neuron_updates": self.neuron_updates, "dense_macs": self.dense_macs,
                       "first_layer_macs": self.first_layer_macs,
                       "state_memory_bits": self.state_memory_bits,
                       "synaptic_memory_bits": self.synaptic_memory_bits},
            "per_sample": self.per_sample(),
            "definitions": {
                "firing_rate": "spikes / (neurons * T * samples)",
                "synops": "sum over steps and sources of events x fan-out (non-zero weights)",
                "neuron_updates": "neurons * T * samples",
                "dense_macs": "sum over weight layers of n_dst * n_src * T * samples",
                "first_layer_macs": "dense MACs of the layers fed by the graded input",
            },
            "layers": [asdict(layer) for layer in self.layers],
            "synapses": [asdict(s) for s in self.synapses],
            "energy_estimates": {k: v.to_dict() for k, v in self.energy.items()},
            "loihi2_resources": self.resources.to_dict(),
            "timings": dict(self.timings),
        }

    def summary(self) -> str:
        """A short human summary: a per-layer table, per-sample totals, estimates, cores."""
        ps = self.per_sample()
        lines = [
            f"backend            {self.backend}",
            f"samples            {self.samples} (T = {self.timesteps}), accuracy "
            f"{100 * self.accuracy:.2f} %",
            f"{'layer':<14} {'neurons':>8} {'spikes/sample':>14} {'rate':>7} "
            f"{'SynOps/sample':>14} {'cores':>6}",
        ]
        for la in self.layers:
            lines.append(f"{la.name:<14} {la.neurons:>8,} {la.spikes_per_sample:>14,.1f} "
                         f"{la.firing_rate:>7.3f} {la.synops_in_per_sample:>14,.0f} "
                         f"{la.cores:>6}")
        lines += [
            f"per sample         {ps['spikes']:,.0f} spikes, {ps['synops']:,.0f} SynOps, "
            f"{ps['neuron_updates']:,.0f} neuron updates, {ps['dense_macs']:,.0f} dense MACs",
            f"memory             state {self.state_memory_bits:,} bits, synaptic "
            f"{self.synaptic_memory_bits:,} bits",
        ]
        for est in self.energy.values():
            lines.append(f"energy ESTIMATE    {est.per_sample_pj / 1e3:,.2f} nJ/sample  "
                         f"[{est.method}]")
        fit = "fits one chip" if self.resources.fits_one_chip else "does NOT fit one chip"
        lines.append(f"Loihi 2 cores      {self.resources.cores} (model; {fit})")
        return "\n".join(lines)


# ---------------------------------------------------------------- running


def profile(
    net: LoweredNetwork,
    x: np.ndarray,
    y: np.ndarray,
    *,
    fast: bool = False,
    on_sample: Callable[[int], None] | None = None,
    hardware: bool = False,
) -> ProfileReport:
    """Run integer samples ``x`` (N, input_size) with labels ``y`` and count everything.

    Args:
        net: the lowered network.
        x: integer input payloads, one row per sample.
        y: the labels (for the accuracy of this run).
        fast: count from the integer reference instead of Lava (same counts, seconds).
        on_sample: called with the sample index after each Lava sample (progress).
        hardware: run on Loihi 2 (:func:`run_loihi2`); needs lava-loihi and a chip.
    """
    x = check_samples(net, x)
    y = np.asarray(y)
    if len(y) != len(x) or len(x) < 1:
        raise ValidationError(f"{len(x)} samples but {len(y)} labels; need at least one each")
    t_in = net.input.timesteps
    t0 = time.perf_counter()
    if hardware:
        backend, spikes = BACKEND_LOIHI2, _aligned(net, run_loihi2(net, x, on_sample=on_sample))
    elif fast:
        backend = BACKEND_REFERENCE
        spikes = {g: s[:, :t_in] for g, s in run_reference(net, x, t_in).items()}
    else:
        from lrfdyn.sim.lava_run import run_lava

        backend = BACKEND_LAVA
        spikes = _aligned(net, run_lava(net, x, on_sample=on_sample).spikes)
    run_s = time.perf_counter() - t0
    report = count_profile(net, x, y, spikes, backend)
    report.timings["run_s"] = run_s
    return report


def _aligned(net: LoweredNetwork, spikes: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Raw Lava spikes → logical time: group g's steps latency(g) … latency(g)+T−1."""
    t_in = net.input.timesteps
    return {g: spikes[g][:, grp.latency: grp.latency + t_in] for g, grp in net.groups.items()}


def count_profile(net: LoweredNetwork, x: np.ndarray, y: np.ndarray,
                  spikes: dict[str, np.ndarray], backend: str) -> ProfileReport:
    """Build the report from reference-aligned spikes (N, T, size) per group (pure)."""
    n, t_in = len(x), net.input.timesteps
    syn_profiles = [_synapse_profile(net, s, x, spikes) for s in net.synapses]
    synops_in = count_synops(net, spikes, x, t_in)
    for g in net.groups:  # two independent counts of the same thing must agree
        mine = sum(s.synops for s in syn_profiles if s.dst == g)
        if mine != synops_in[g]:
            raise RuntimeError(f"SynOps of {g}: {mine} per synapse vs {synops_in[g]} per group")
    resources = map_to_cores(net)
    cores = {m.name: m.cores for m in resources.layers}
    layers = []
    for g, grp in net.groups.items():
        count = int(np.count_nonzero(spikes[g]))  # events: a graded or ternary value is one
        _, state, syn = layer_bits(net, g)
        layers.append(LayerProfile(
            name=g, neurons=grp.size, spikes=count,
            firing_rate=count / (grp.size * t_in * n) if grp.size else 0.0,
            synops_in=synops_in[g], neuron_updates=grp.size * t_in * n,
            dense_macs_in=sum(s.dense_macs for s in syn_profiles if s.dst == g),
            state_bits=state, synaptic_bits=syn, cores=cores[g],
            spikes_per_sample=count / n, synops_in_per_sample=synops_in[g] / n,
        ))
    state_bits, syn_bits = memory_bits(net)
    if (state_bits, syn_bits) != (sum(la.state_bits for la in layers),
                                  sum(la.synaptic_bits for la in layers)):
        raise RuntimeError("per-layer memory does not add up to memory_bits(net)")
    total_spikes = sum(la.spikes for la in layers)
    total_synops = sum(synops_in.values())
    updates = sum(la.neuron_updates for la in layers)
    dense = sum(s.dense_macs for s in syn_profiles)
    first = sum(s.dense_macs for s in syn_profiles if s.graded)
    spike_synops = sum(s.synops for s in syn_profiles if not s.graded)
    pred = spikes[net.output].sum(axis=1).argmax(axis=1)
    return ProfileReport(
        backend=backend, samples=n, timesteps=t_in, latency=net.latency, dt=net.dt,
        accuracy=float((pred == y).mean()), layers=layers, synapses=syn_profiles,
        spikes=total_spikes, synops=total_synops, neuron_updates=updates, dense_macs=dense,
        first_layer_macs=first, state_memory_bits=state_bits, synaptic_memory_bits=syn_bits,
        energy={
            "spiking_transformer_45nm": energy.transformer_convention(first, spike_synops, n),
            "loihi": energy.loihi_estimate(total_synops, updates, total_spikes, n),
            "dense_ann_45nm": energy.dense_ann_estimate(dense, n),
        },
        resources=resources, labels=y, predictions=pred, spike_trains=spikes,
    )


def _synapse_profile(net: LoweredNetwork, s: Any, x: np.ndarray,
                     spikes: dict[str, np.ndarray]) -> SynapseProfile:
    n, t_in = len(x), net.input.timesteps
    fan_out = s.fan_out.astype(np.int64)
    graded = s.src == net.input.name and net.input.levels > 1
    events = source_events(net, s, spikes, x, t_in)
    # What a dense ANN layer of the same connectivity would multiply-accumulate per step.
    macs = s.nnz if s.kind == "conv" else s.n_dst * s.n_src
    return SynapseProfile(
        name=s.name, src=str(s.src), dst=s.dst, shape=[int(s.n_dst), int(s.n_src)],
        nonzero_weights=int(fan_out.sum()), graded=bool(graded), events=int(events.sum()),
        synops=int(events @ fan_out),
        dense_macs=0 if clock_offset(s.src) is not None else int(macs * t_in * n),
    )


def run_loihi2(net: LoweredNetwork, x: np.ndarray, *,
               on_sample: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Run samples on Loihi 2 hardware; raw spikes per group, (N, steps_per_sample, size).

    :func:`lrfdyn.sim.lava_run.run_lava` with ``Loihi2HwCfg`` (NeuroCore models for
    LIF/Dense, host models for the ring buffers). It checks for the hardware before it
    builds a single process. Untested here: no Loihi 2 system was available.
    """
    from lrfdyn.loihi.hardware import require_loihi2

    require_loihi2()
    import lrfdyn.loihi.compat  # noqa: F401  (before any lava import)
    from lava.magma.core.run_configs import Loihi2HwCfg

    from lrfdyn.loihi.processes.recorder import RECORDER_MODELS
    from lrfdyn.sim.lava_run import run_lava

    # No tag: prefer NcProcModels, fall back to Py models for the host-side processes.
    cfg = Loihi2HwCfg(exception_proc_model_map=dict(RECORDER_MODELS))
    return run_lava(net, x, on_sample=on_sample, run_cfg=cfg, backend="Loihi 2 run").spikes


# ---------------------------------------------------------------- writing


def default_out_dir(nir_path: str | os.PathLike[str]) -> Path:
    """``<dir>/<stem>_profile/`` next to the NIR file."""
    p = Path(nir_path)
    return p.with_name(f"{p.stem}_profile")


def write_profile(report: ProfileReport, out: str | os.PathLike[str], *, sample: int = 0,
                  model: str = "model") -> dict[str, Path]:
    """Write profile.json, four PNGs and profile.md (which embeds them) into ``out``.

    Every file is written atomically. Returns the paths by kind.
    """
    from lrfdyn.sim import plots

    if not 0 <= sample < report.samples:
        raise ValidationError(
            f"--sample {sample} is out of range; this profile has samples 0..{report.samples - 1}"
        )
    out = Path(out)
    names = [la.name for la in report.layers]
    label, pred = int(report.labels[sample]), int(report.predictions[sample])
    files = {
        "raster": plots.spike_raster(
            {g: s[sample] for g, s in report.spike_trains.items()}, out / "raster.png",
            title=f"{model}: spikes of test sample {sample} (label {label}, predicted {pred})\n"
                  f"{report.backend}, T = {report.timesteps}",
            highlight=label if report.layers[-1].neurons > label >= 0 else None,
        ),
        "firing_rate": plots.bar_per_layer(
            names, [la.firing_rate for la in report.layers], out / "firing_rate.png",
            title=f"{model}: firing rate per layer ({report.samples} samples)",
            ylabel="spikes per neuron per step", fmt="{:.3f}",
        ),
        "synops": plots.bar_per_layer(
            names, [la.synops_in_per_sample for la in report.layers], out / "synops.png",
            title=f"{model}: SynOps into each layer, per sample\n"
                  "(events × fan-out; an event is a spike, a non-zero input pixel or the bias)",
            ylabel="SynOps per sample",
        ),
        "memory": plots.memory_comparison(
            names, {"neuron state (u, v)": [la.state_bits for la in report.layers],
                    "synapses (8-bit weights + buffers)":
                        [la.synaptic_bits for la in report.layers]},
            out / "memory.png", title=f"{model}: memory per layer on Loihi (as lowered)",
        ),
    }
    files["json"] = write_json(out / "profile.json", report.to_dict())
    files["markdown"] = write_text(out / "profile.md", _markdown(report, model, sample))
    return files


_COLUMNS = ["layer", "neurons", "spikes / sample", "firing rate (per neuron per step)",
            "SynOps in / sample", "neuron updates / sample", "dense MACs / sample",
            "state memory", "synaptic memory", "Loihi 2 cores"]
_TABLE_HEAD = ("| " + " | ".join(_COLUMNS) + " |\n|---|" + "---:|" * (len(_COLUMNS) - 1))


def _markdown(r: ProfileReport, model: str, sample: int) -> str:
    ps = r.per_sample()
    kb = lambda bits: f"{bits / 8192:,.1f} KiB"  # noqa: E731
    rows = "\n".join(
        f"| {la.name} | {la.neurons:,} | {la.spikes_per_sample:,.1f} | {la.firing_rate:.3f} | "
        f"{la.synops_in_per_sample:,.0f} | {la.neuron_updates // r.samples:,} | "
        f"{la.dense_macs_in // r.samples:,} | {kb(la.state_bits)} | {kb(la.synaptic_bits)} | "
        f"{la.cores} |"
        for la in r.layers
    )
    energy_rows = []
    for est in r.energy.values():
        energy_rows.append(f"* **{est.per_sample_pj / 1e3:,.2f} nJ per sample (estimate)** — "
                           f"{est.method}: {est.formula()} over {r.samples} samples. "
                           f"{est.caveat}.")
        for t in est.terms:
            c = t.constant
            note = f"; {c.note}" if c.note else ""
            energy_rows.append(f"  * {c.name} = {c.pj:g} pJ — {c.source}{note}")
    res = r.resources
    newline = "\n"
    fit = ("fits one chip" if res.fits_one_chip
           else f"does **not** fit one chip ({'; '.join(res.problems)})")
    return f"""# Profile of {model}

{r.samples} test samples, T = {r.timesteps} steps each, run on **{r.backend}**;
accuracy on these samples {100 * r.accuracy:.2f} %. Counts come from the recorded
spikes (Lava's CPU backend has no hardware counters).

## Per layer

{_TABLE_HEAD}
{rows}

**Per sample:** {ps['spikes']:,.1f} spikes, {ps['synops']:,.0f} SynOps,
{ps['neuron_updates']:,.0f} neuron updates, {ps['dense_macs']:,.0f} dense-equivalent MACs
(of which {ps['first_layer_macs']:,.0f} in the graded-input layer, counted at each of
the T steps as Loihi runs it; papers that count it once divide this by T).
**Memory:** state {kb(r.state_memory_bits)}, synaptic {kb(r.synaptic_memory_bits)}.

SynOps = Σ incoming events × fan-out (non-zero weights); dense MACs = Σ n_dst · n_src per
weight layer and step (zeros included).

![spike raster](raster.png)

![firing rate per layer](firing_rate.png)

![SynOps per layer](synops.png)

![memory per layer](memory.png)

## Energy (estimates, not measurements)

{newline.join(energy_rows)}

## Loihi 2 resources (model)

{res.cores} neuro-cores, {res.neurons:,} neurons, {res.synapses:,} synapses: {fit}.
Limits: {res.limits.neurons_per_core:,} neurons per core,
{res.limits.memory_bits_per_core // 8192:,} KB per core (estimate),
{res.limits.cores_per_chip} cores per chip (Intel Loihi 2 brief, 2021).
See `lrfdyn deploy --dry-run` for the per-layer mapping.
"""
