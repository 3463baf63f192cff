"""Dendritic mode as one Lava network: run it, lay its reference out on its clock, check
every process at every step, and count what it holds.

:func:`run_dendritic_network_lava` runs the network that
:mod:`lrfdyn.loihi.dendritic_network` lowers and builds (with copies side by side, split
back into one run's recordings); :func:`network_reference` is the hybrid integer
reference (:mod:`lrfdyn.sim.streams`) on the network's clock; :func:`check_network`
compares the two, and :func:`simulate_network` makes the report of
``simulate --mode dendritic``. :func:`whole_network_memory` counts both modes' whole
networks off built Lava processes.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from lrfdyn.loihi import fixed
from lrfdyn.loihi.dendritic import TOKENS, DendriticBlock, source_data
from lrfdyn.loihi.ir import LoweredNetwork
from lrfdyn.sim.dendritic_report import DendriticReport, NetworkMismatch
from lrfdyn.sim.reference import readout, run_reference
from lrfdyn.sim.streams import HybridRun, run_hybrid_reference, run_stream_timelines


@dataclass
class NetworkRun:
    """What the one network's processes sent: per-token side and deserializers by model
    step (``phase``, ``(S·T + 1, size)``, last row = off-phase non-zero counts), stream
    processes every Lava step (``full``)."""

    phase: dict[str, np.ndarray]
    full: dict[str, np.ndarray]
    kinds: dict[str, str]
    counts: dict[str, Any]
    compile_s: float
    run_s: float
    steps: int


def run_dendritic_network_lava(dn: Any, x: np.ndarray, *, deser_shift: int = 0,
                               on_sample: Callable[[int], None] | None = None,
                               copies: int = 1) -> NetworkRun:
    """Run samples ``x`` through the one dendritic Lava network (compiled once, run
    one sample per call, then the pipeline's fill). Stopped on every path.

    ``copies > 1``: blocks of ``copies`` samples side by side through
    :func:`~lrfdyn.loihi.dendritic_network.copy_dendritic_network` of ``dn``; the
    recordings are split back into what a run of ``dn`` over ``x`` records
    (:func:`split_network_run`), and ``counts`` stay those of ``dn`` itself.
    """
    if copies > 1:
        return _run_network_copies(dn, x, copies, deser_shift=deser_shift,
                                   on_sample=on_sample)
    from lava.magma.core.run_configs import Loihi2SimCfg

    from lrfdyn.loihi.dendritic_network import build_dendritic_network, dendritic_models
    from lrfdyn.sim.lava_run import run_steps, stop

    x = np.asarray(x, np.int64)
    lava_net = build_dendritic_network(dn, x, deser_shift=deser_shift)
    counts = count_network(lava_net, dn)
    cfg = Loihi2SimCfg(select_tag="fixed_pt", exception_proc_model_map=dendritic_models())
    compile_s = run_s = 0.0
    total = len(x) * dn.sample_steps + dn.fill_steps
    try:
        # One step compiles and starts the workers; the rest of the first period times a
        # period for the runner's watchdog; then one call per sample (few run calls: a
        # run of ~100 one-period calls once hung in Lava on a loaded machine).
        t0 = time.perf_counter()
        lanes = dn.net.copies  # copies side by side: watchdog scales
        run_steps(lava_net.runner, 1, cfg, "Lava failed to start the dendritic network",
                  copies=lanes)
        compile_s = time.perf_counter() - t0
        ends = sorted({min(dn.period, total), *range(dn.sample_steps, total,
                                                      dn.sample_steps), total})
        done, reported = 1, 0
        t0 = time.perf_counter()
        for end in ends:
            if end <= done:
                continue
            sample = min(done // dn.sample_steps, len(x) - 1) * lanes
            run_steps(lava_net.runner, end - done, cfg, f"Lava failed on sample {sample}",
                      copies=lanes)
            done = end
            while on_sample is not None and reported < len(x) and \
                    done >= (reported + 1) * dn.sample_steps:
                on_sample(reported)
                reported += 1
        run_s = time.perf_counter() - t0
        phase = {k: np.array(v) for k, v in lava_net.phase.items()}
        full = {k: np.array(v) for k, v in lava_net.full.items()}
    finally:
        stop(lava_net.runner)
        lava_net.close()
    return NetworkRun(phase, full, dict(lava_net.kinds), counts, compile_s, run_s,
                      lava_net.steps)


def _run_network_copies(dn: Any, x: np.ndarray, copies: int, *, deser_shift: int,
                        on_sample: Callable[[int], None] | None) -> NetworkRun:
    from lrfdyn.loihi.copies import stack_samples
    from lrfdyn.loihi.dendritic_network import build_dendritic_network, copy_dendritic_network

    x = np.asarray(x, np.int64)
    n = len(x)

    def tick(b: int) -> None:
        for i in range(b * copies, min(n, (b + 1) * copies)):
            on_sample(i)

    run = run_dendritic_network_lava(copy_dendritic_network(dn, copies),
                                     stack_samples(x, copies), deser_shift=deser_shift,
                                     on_sample=None if on_sample is None else tick)
    one = build_dendritic_network(dn, x[:1])  # built, not compiled: the model's own counts
    try:
        counts = count_network(one, dn)
    finally:
        one.close()
    return dataclasses.replace(split_network_run(dn, run, copies, n), counts=counts)


def split_network_run(dn: Any, run: NetworkRun, copies: int, samples: int) -> NetworkRun:
    """A copies run's recordings as a run of ``dn`` over its ``samples`` one after another
    would record them: update rows in sample order; off-phase counts summed over copies;
    stream steps per model step in sample order, the steps before the first stream summed
    over copies (the tail after the last stream is not compared). ``steps`` stays the
    Lava steps that ran."""
    T, P = dn.timesteps, dn.period
    phase = {}
    for name, rec in run.phase.items():
        size = rec.shape[1] // copies
        rows = rec[:-1].reshape(-1, T, copies, size).transpose(0, 2, 1, 3)
        phase[name] = np.concatenate([rows.reshape(-1, size)[:samples * T],
                                      rec[-1:].reshape(1, copies, size).sum(axis=1)])
    full = {}
    sigma = {plan.proc(""): plan.sigma for plan in dn.streams}
    for name, rec in run.full.items():
        s0 = next(v for k, v in sigma.items() if name.startswith(k))
        size = rec.shape[1] // copies
        blocks = (rec.shape[0] - s0) // (T * P)
        body = rec[s0:s0 + blocks * T * P].reshape(blocks, T * P, copies, size)
        body = body.transpose(0, 2, 1, 3).reshape(-1, size)[:samples * T * P]
        lead = np.abs(rec[:s0].reshape(s0, copies, size)).sum(axis=1)
        full[name] = np.concatenate([lead, body]).astype(rec.dtype)
    return dataclasses.replace(run, phase=phase, full=full)


def count_network(lava_net: Any, dn: Any) -> dict[str, Any]:
    """Neurons, state, weights and buffers per Lava process type, counted on the built
    processes; compartments per block; steps per sample."""
    from lrfdyn.sim.bits import process_memory

    by_type: dict[str, dict[str, int]] = {}
    procs = [(True, p) for p in lava_net.neurons.values()] + \
        [(False, p) for p in lava_net.synapses.values()]
    for is_neuron, p in procs:
        kind = type(p).__name__
        row = by_type.setdefault(kind, {"processes": 0, "neurons": 0, "state_bits": 0,
                                        "weight_bits": 0, "buffer_bits": 0})
        mem = process_memory(p)
        row["processes"] += 1
        if is_neuron:
            row["neurons"] += int(np.prod(p.s_out.shape))
        extra = int(np.prod(p.pending.shape)) * fixed.UV_BITS if hasattr(p, "pending") else 0
        row["state_bits"] += mem.state + extra
        row["weight_bits"] += mem.weights
        row["buffer_bits"] += mem.buffers
    total = {k: sum(r[k] for r in by_type.values()) for k in
             ("processes", "neurons", "state_bits", "weight_bits", "buffer_bits")}
    compartments = {plan.name: sum(int(np.prod(p.s_out.shape))
                                   for n, p in lava_net.neurons.items()
                                   if type(p).__name__ == "DendriteCompartments"
                                   and n.startswith(plan.name + ".stream."))
                    for plan in dn.streams}
    return {"by_type": by_type, "total": total, "compartments": compartments,
            "period": dn.period, "steps_per_sample": dn.sample_steps,
            "sample_latency_steps": dn.sample_latency(), "fill_steps": dn.fill_steps,
            "sources": len(lava_net.sources)}


@dataclass
class NetworkReference:
    """The one network's reference: the hybrid run, and every stream on the network's
    timeline (period P)."""

    hybrid: HybridRun
    streams: dict[str, dict[str, np.ndarray]]  # process -> (S·T, P, size)
    z: dict[str, np.ndarray]  # block -> deserializer rows (S·T, d·N)


def network_reference(dn: Any, x: np.ndarray, copies: int = 1) -> NetworkReference:
    """Successor of :func:`run_hybrid_reference` for the one network: the same integer
    arithmetic, laid out on the network's clock.

    With ``copies``, each copy's streams form their own timeline (samples c, c + copies,
    …): a stream's first steps hold the tail of the stream before it in that timeline,
    which is the only place a copies run's values differ from a one-copy run's.
    """
    from lrfdyn.loihi.dendritic_network import SER

    hybrid = run_hybrid_reference(dn.net, [p.block for p in dn.streams], x)
    streams: dict[str, dict[str, np.ndarray]] = {}
    zs: dict[str, np.ndarray] = {}
    for plan in dn.streams:
        b = plan.block
        u = hybrid.streams[b.name]
        run = run_stream_timelines(b, u, dn.timesteps, copies, period=dn.period)
        values = {plan.proc(k): v for k, v in run.values.items()}
        tokens = source_data(b, u, period=dn.period)[TOKENS]
        values[plan.proc(TOKENS)] = tokens
        for j in range(1, plan.ser_levels + 1):  # ser_j repeats token g + 64j at step g
            shift = j * (fixed.MAX_DELAY + 1)
            ser = np.zeros_like(tokens)
            ser[:, : b.tokens - shift] = tokens[:, shift: b.tokens]
            values[plan.proc(f"{SER}{j}")] = ser
        streams[plan.name] = values
        z = run.z_tokens(b)  # (S·T, N, d)
        zs[plan.name] = z.transpose(0, 2, 1).reshape(len(z), -1)
    return NetworkReference(hybrid, streams, zs)


def check_network(dn: Any, run: NetworkRun, ref: NetworkReference
                  ) -> tuple[dict[str, int], NetworkMismatch | None]:
    """Mismatches of every process (every neuron, every step), and the first one.

    Every count is a number of values: a wrong value at an update or a stream step, or a
    non-zero value at one of a neuron's off-phase steps (each one, as the recorder
    counts them), so the counts of runs over parts of the samples add up to the count of
    one run over all of them (:func:`lrfdyn.sim.shard.merge_dendritic`).
    """
    from lrfdyn.loihi.dendritic_network import DESER

    T = dn.timesteps
    counts: dict[str, int] = {}
    first: NetworkMismatch | None = None

    def note(name: str, diff: np.ndarray, lava: np.ndarray, want: np.ndarray,
             to_sample, where, part: str) -> None:
        nonlocal first
        counts[name] = counts.get(name, 0) + int(diff.sum())
        if first is None and diff.any():
            idx = tuple(int(v) for v in np.argwhere(diff)[0])
            s, t = to_sample(idx)
            first = NetworkMismatch(name, s, t, idx[-1], int(lava[idx]), int(want[idx]),
                                    where(idx), part)

    by_row = lambda idx: divmod(idx[0], T)  # noqa: E731
    for name, rec in run.phase.items():
        if name in dn.groups:
            want = ref.hybrid.spikes[dn.repeats.get(name, name)]
            want = want.reshape(-1, want.shape[-1]).astype(np.int64)
        else:
            plan = next(p for p in dn.streams if p.proc(DESER) == name)
            want = ref.z[plan.name]
        got = rec[:-1].astype(np.int64)
        note(name, got != want, got, want, by_row, lambda idx: "update", "update")
        off = rec[-1:].astype(np.int64)  # per neuron: its non-zero values off its phase
        note(name, off, off, np.zeros_like(off), lambda idx: (-1, -1),
             lambda idx: "non-zero at steps other than its updates", "off_phase")
    for plan in dn.streams:
        for name, want in ref.streams[plan.name].items():
            rec = run.full[name].astype(np.int64)
            lead = rec[:plan.sigma]
            note(name, lead != 0, lead, np.zeros_like(lead), lambda idx: (0, 0),
                 lambda idx: f"Lava step {idx[0] + 1}, before the first stream", "lead")
            n = want.shape[0] * want.shape[1]
            got = rec[plan.sigma:plan.sigma + n].reshape(want.shape)
            note(name, got != want, got, want, lambda idx: divmod(idx[0], T),
                 lambda idx: f"stream step {idx[1] + 1}", "stream")
    return counts, first


def lava_predictions(dn: Any, run: NetworkRun) -> np.ndarray:
    head = run.phase[dn.net.output][:-1]
    return readout(head.reshape(-1, dn.timesteps, head.shape[-1]), dn.timesteps)


def simulate_network(net: LoweredNetwork, blocks: list[DendriticBlock], x: np.ndarray,
                     y: np.ndarray, *, float_predictions: np.ndarray | None = None,
                     on_sample: Callable[[int], None] | None = None,
                     deser_shift: int = 0, copies: int | None = 1) -> DendriticReport:
    """``simulate --mode dendritic``: the whole model as one Lava network, checked at
    every neuron of every process and every step against :func:`network_reference`.

    ``copies`` samples run side by side (None: sized from the network,
    :func:`~lrfdyn.loihi.dendritic_network.choose_network_copies`); the report is the
    same whatever the copies, except ``timings`` (``copies``, ``lava_steps`` that ran).
    """
    from lrfdyn.loihi.dendritic_network import choose_network_copies, lower_network

    t_in = net.input.timesteps
    dn = lower_network(net, blocks)
    if copies is None:
        copies = choose_network_copies(dn, len(x))
    t0 = time.perf_counter()
    parallel = run_reference(net, x)
    ref = network_reference(dn, x, copies)
    timings = {"reference_s": time.perf_counter() - t0}
    run = run_dendritic_network_lava(dn, x, deser_shift=deser_shift, on_sample=on_sample,
                                     copies=copies)
    timings.update(lava_compile_s=run.compile_s, lava_run_s=run.run_s,
                   samples_per_s=(len(x) / run.run_s) if run.run_s > 0 else 0.0,
                   copies=copies, lava_steps=run.steps)
    counts, first = check_network(dn, run, ref)
    pred = lambda s: readout(s[net.output], t_in)  # noqa: E731
    lava_pred = lava_predictions(dn, run)
    ref_pred = pred(ref.hybrid.spikes)
    rows = []
    for plan in dn.streams:
        b = plan.block
        mine = {k: v for k, v in counts.items() if k.startswith(b.name + ".stream.")}
        rows.append({
            "name": b.name, "d": b.d, "k": b.k, "tokens": b.tokens,
            "stream_steps": b.stream_steps, "latency": b.latency,
            "neurons": b.sizes(), "quantization": b.quantization_report(),
            "scales": b.scales, "stream_start": plan.sigma,
            "serializer_relays": plan.ser_levels,
            "mismatches": sum(mine.values()), "mismatches_by_process": mine,
            "compartments_counted": run.counts["compartments"][b.name],
        })
    network = {
        "counts": run.counts, "mismatches_by_process": counts,
        "predictions_equal": bool(np.array_equal(lava_pred, ref_pred)),
        "lava_predictions": lava_pred.tolist(), "reference_predictions": ref_pred.tolist(),
    }
    return DendriticReport(
        samples=len(x), timesteps=t_in,
        float_accuracy=(None if float_predictions is None
                        else float((np.asarray(float_predictions) == y).mean())),
        parallel_accuracy=float((pred(parallel) == y).mean()),
        dendritic_accuracy=float((ref_pred == y).mean()),
        blocks=rows, mismatches=sum(counts.values()), first_mismatch=first,
        timings=timings, lava_accuracy=float((lava_pred == y).mean()), network=network,
    )


def whole_network_memory(net: LoweredNetwork, blocks: list[DendriticBlock]) -> dict[str, Any]:
    """Whole-network memory of both modes, read off built (not compiled) Lava process
    graphs: the parallel network of :func:`~lrfdyn.loihi.build.build_lava` and the one
    dendritic network. Bits per kind, neurons, processes and Lava steps per sample."""
    from lrfdyn.loihi.build import build_lava, drain_steps
    from lrfdyn.loihi.dendritic_network import build_dendritic_network, lower_network
    from lrfdyn.sim.bits import process_memory

    x = np.zeros((1, net.input.size), np.int64)
    par = build_lava(net, x)
    try:
        mem = {"state": 0, "weights": 0, "buffers": 0}
        for p in [*par.lifs.values(), *par.synapses.values()]:
            m = process_memory(p)
            mem["state"] += m.state
            mem["weights"] += m.weights
            mem["buffers"] += m.buffers
        parallel = {**mem, "total": sum(mem.values()),
                    "neurons": sum(g.size for g in net.groups.values()),
                    "processes": len(par.lifs) + len(par.synapses),
                    "steps_per_sample": net.steps_per_sample() + drain_steps(net),
                    "sample_latency_steps": net.steps_per_sample()}
    finally:
        par.close()
    dn = lower_network(net, blocks)
    lava_net = build_dendritic_network(dn, x)
    try:
        c = count_network(lava_net, dn)
    finally:
        lava_net.close()
    t = c["total"]
    dendritic = {"state": t["state_bits"], "weights": t["weight_bits"],
                 "buffers": t["buffer_bits"],
                 "total": t["state_bits"] + t["weight_bits"] + t["buffer_bits"],
                 "neurons": t["neurons"], "processes": t["processes"],
                 "steps_per_sample": c["steps_per_sample"],
                 "sample_latency_steps": c["sample_latency_steps"],
                 "compartments": c["compartments"], "by_type": c["by_type"]}
    return {"lrf_dyn_parallel": parallel, "lrf_dyn_dendritic_one_network": dendritic}
