"""Dendritic mode as one Lava network: per-token layers, serializer, streams, deserializer."""

from __future__ import annotations

import numpy as np
import pytest

from lrfdyn.loihi import fixed
from lrfdyn.loihi.dendritic import Z
from lrfdyn.loihi.dendritic_network import (DESER, lower_network, source_schedules,
                                            stream_sizes)
from lrfdyn.sim.dendritic_network import (check_network, lava_predictions, network_reference,
                                          run_dendritic_network_lava)
from lrfdyn.sim.reference import readout
from lrfdyn.sim.streams import lower_both


@pytest.fixture(scope="module")
def joined(active_lrf_dyn):
    net, blocks = lower_both(active_lrf_dyn)
    return net, blocks, lower_network(net, blocks)


def _x(net, n: int = 2, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, net.input.size))


def test_one_clock_schedule(joined) -> None:
    """Latencies and delays put every input inside its target's period window."""
    net, (block,), dn = joined
    plan = dn.streams[0]
    assert dn.period >= block.stream_steps
    assert plan.sigma == dn.groups[block.u_group].latency + 1
    assert dn.groups[block.out_group].latency == plan.sigma + block.tokens + block.offsets[Z]
    # The parallel path into the attention LIF is gone; the stream replaces it.
    assert "blocks.0.attn.dendrite" not in dn.groups
    assert [s.src for s in dn.synapses if s.dst == block.out_group] == []
    from lrfdyn.loihi.ir import bias_offset

    lat = {net.input.name: 0, **{g: grp.latency for g, grp in dn.groups.items()}}
    for s in dn.synapses:
        assert 0 <= s.delay <= fixed.MAX_DELAY
        src_lat = bias_offset(s.src) if bias_offset(s.src) is not None else lat[s.src]
        arrive = src_lat + 1 + s.delay
        target = dn.groups[s.dst].latency
        if dn.groups[s.dst].graded:  # memoryless: exactly at its step
            assert arrive == target, s.name
        else:  # clocked: anywhere in (update − P, update]
            assert target - dn.period < arrive <= target, s.name


def test_deserializer_masks_are_one_hot_per_step(joined) -> None:
    net, (block,), dn = joined
    sched = source_schedules(dn, _x(net, 1))
    mask = sched[dn.streams[0].proc("deser_mask")]
    assert mask.sum() == block.tokens * dn.timesteps
    assert mask.sum(axis=0).max() == 1  # one token per step
    sizes = stream_sizes(dn.streams[0])
    assert sizes[dn.streams[0].proc("compartments")] == ("DendriteCompartments",
                                                         block.k * block.d)
    assert sizes[dn.streams[0].proc(DESER)] == ("ProdNeuron", block.d * block.tokens)


def test_reference_matches_the_hybrid_reference(joined) -> None:
    """The network reference is the hybrid run; its deserializer rows are the z the
    hybrid run fed each attention LIF."""
    net, (block,), dn = joined
    x = _x(net)
    ref = network_reference(dn, x)
    from lrfdyn.sim.streams import run_streams

    u = ref.hybrid.streams[block.name]
    z = run_streams(block, u, chained=False, record=lambda n: n == Z).z_tokens(block)
    assert np.array_equal(ref.z[block.name], z.transpose(0, 2, 1).reshape(len(z), -1))
    assert np.abs(ref.z[block.name]).max() > 0


def test_clocked_lif_updates_once_per_period_on_lava() -> None:
    """ClockedLIF on Lava = lif_step once per period on the period's summed input."""
    import lrfdyn.loihi.compat  # noqa: F401
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.dense.process import Dense
    from lava.proc.io.source import RingBuffer

    from lrfdyn.loihi.dendritic_network import dendritic_models
    from lrfdyn.loihi.processes.clocked import (ClockedLIF, PhaseRecorder,
                                                open_phase_recording)

    period, start, every, rows, n = 5, 3, 2, 4, 3
    steps = start + (rows - 1) * period + 2  # ends before a fifth update
    rng = np.random.default_rng(0)
    data = rng.integers(0, 2, (2, steps)).astype(np.int32)
    w = np.array([[60, -20], [30, 30], [100, 0]], np.int32)
    params = fixed.LifParams(du=4095, dv=2048, vth=80)
    import tempfile

    path = tempfile.mktemp(suffix=".int32", dir="/dev/shm")
    rec_mem = open_phase_recording(path, rows, n)
    src = RingBuffer(data=data)
    dense = Dense(weights=w)
    lif = ClockedLIF(shape=(n,), du=params.du, dv=params.dv, vth=params.vth, period=period,
                     start=start, reset_every=every)
    rec = PhaseRecorder(shape=(n,), rows=rows, period=period, start=start, path=path)
    src.s_out.connect(dense.s_in)
    dense.a_out.connect(lif.a_in)
    lif.s_out.connect(rec.a_in)
    try:
        src.run(condition=RunSteps(num_steps=steps),
                run_cfg=Loihi2SimCfg(select_tag="fixed_pt",
                                     exception_proc_model_map=dendritic_models()))
        got = np.array(rec_mem)
    finally:
        src.stop()
    # Expected: a_in at step s is w·data[:, s − 2] (source at s−1, dense adds one step).
    a_in = np.zeros((steps + 1, n), np.int64)
    for s in range(2, steps + 1):
        a_in[s] = w.astype(np.int64) @ data[:, s - 2]
    state = fixed.LifState(np.zeros(n, np.int64), np.zeros(n, np.int64))
    want, last = [], 0
    for r in range(rows):
        step = start + r * period
        spikes, state = fixed.lif_step(state, a_in[last + 1:step + 1].sum(axis=0), params)
        last = step
        want.append(spikes.astype(np.int32))
        if (r + 1) % every == 0:
            state = fixed.LifState(np.zeros(n, np.int64), np.zeros(n, np.int64))
    assert np.array_equal(got[:rows], np.array(want))
    assert np.array(want).any()
    assert not got[rows].any()  # nothing is sent between updates
    import os

    os.remove(path)


@pytest.mark.slow
def test_one_network_is_spike_exact_and_a_phase_error_is_caught(joined) -> None:
    """Every process, every neuron, every step; readout equal; then the deserializer one
    step late makes the check fail at the attention LIF."""
    net, (block,), dn = joined
    x = _x(net)
    ref = network_reference(dn, x)
    run = run_dendritic_network_lava(dn, x)
    counts, first = check_network(dn, run, ref)
    assert sum(counts.values()) == 0, str(first)
    assert set(counts) >= set(dn.groups) | {dn.streams[0].proc(DESER)}
    want = readout(ref.hybrid.spikes[net.output], net.input.timesteps)
    assert np.array_equal(lava_predictions(dn, run), want)
    assert run.counts["compartments"] == {block.name: block.k * block.d}
    assert ref.hybrid.spikes[block.out_group].any()
    late = run_dendritic_network_lava(dn, x, deser_shift=1)
    counts, first = check_network(dn, late, ref)
    assert counts[dn.streams[0].proc(DESER)] > 0
    assert counts[block.out_group] > 0
    assert first is not None and first.process in (block.out_group, dn.streams[0].proc(DESER))
    # Everything upstream of the deserializer is untouched by its phase.
    assert counts[block.u_group] == 0 and counts[dn.streams[0].proc(Z)] == 0


@pytest.mark.slow
def test_paper_grid_one_network_is_spike_exact(activate_model) -> None:
    """14×14 tokens (N = 196): a serializer with relays beyond 63 steps, 2 samples."""
    import torch

    from lrfdyn.export.to_nir import model_to_nir
    from lrfdyn.train.models import build_model

    torch.manual_seed(1)
    model = build_model("spikformer", dict(
        img_size=28, in_channels=1, num_classes=4, dim=4, depth=1, heads=2, timesteps=1,
        k_dendrites=2, stem_strides=[1, 2], attention="lrf_dyn", lrf_dilations=[3, 5])).eval()
    activate_model(model, 1)
    net, blocks = lower_both(model_to_nir(model, (1, 28, 28), 1))
    dn = lower_network(net, blocks)
    assert blocks[0].grid == (14, 14) and dn.streams[0].ser_levels == 3
    x = np.random.default_rng(0).integers(0, 256, (2, net.input.size))
    ref = network_reference(dn, x)
    run = run_dendritic_network_lava(dn, x)
    counts, first = check_network(dn, run, ref)
    assert sum(counts.values()) == 0, str(first)
    assert np.abs(run.full[dn.streams[0].proc("ser3")]).max() > 0


@pytest.mark.slow
def test_copies_match_single_runs_and_a_silent_copy_stays_silent(joined) -> None:
    """Three samples as copies (2 per run: the second block half empty) of the one
    network: every per-token group and deserializer records exactly what the one-copy
    run records, each copy's streams match its own timeline's reference, and the copy
    fed silence stays silent at the input's layer and the head while its neighbour spikes."""
    from lrfdyn.loihi.dendritic_network import choose_network_copies, copy_dendritic_network

    net, _, dn = joined
    x = _x(net, 3)
    x[1] = 0
    dk = copy_dendritic_network(dn, 2)
    assert dk.period == dn.period and dk.sample_steps == dn.sample_steps
    assert dk.groups[net.output].size == 2 * dn.groups[net.output].size
    assert 2 <= choose_network_copies(dn, 5) <= 5 and choose_network_copies(dn, 1) == 1
    one = run_dendritic_network_lava(dn, x)
    two = run_dendritic_network_lava(dn, x, copies=2)
    assert two.steps == 2 * dn.sample_steps + dn.fill_steps < one.steps
    assert two.counts == one.counts  # the model's own network, whatever ran
    counts1, first1 = check_network(dn, one, network_reference(dn, x))
    counts2, first2 = check_network(dn, two, network_reference(dn, x, copies=2))
    assert counts2 == counts1 and sum(counts1.values()) == 0 and first1 is first2 is None
    for name, rec in one.phase.items():
        assert np.array_equal(two.phase[name], rec), name
    for name, rec in one.full.items():  # sample 0 has the same history in both timelines
        plan = next(p for p in dn.streams if name.startswith(p.proc("")))
        end = plan.sigma + dn.sample_steps
        assert np.array_equal(two.full[name][:end], rec[:end]), name
    T = dn.timesteps
    for name in ("stem_lif.0.in", net.output):
        rows = np.abs(two.phase[name][:-1]).reshape(3, T, -1).sum(axis=(1, 2))
        assert rows[1] == 0 and rows[0] > 0 and rows[2] > 0, (name, rows)
    np.testing.assert_array_equal(lava_predictions(dn, two), lava_predictions(dn, one))


def test_watchdog_minimum_scales_with_copies(monkeypatch) -> None:
    """A run call of k copies may take k times a single one's: the floor scales."""
    from lrfdyn.sim.lava_run import _MIN_TIMEOUT_S, TIMEOUT_ENV, _Guard

    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    one, four = _Guard(), _Guard(min_s=4 * _MIN_TIMEOUT_S)
    for g in (one, four):
        g.ran(0.5)  # a quick first call: the floor decides
    assert one.run_timeout() == _MIN_TIMEOUT_S and four.run_timeout() == 4 * _MIN_TIMEOUT_S
    four.ran(100.0)  # a slow call: 20 times it
    assert four.run_timeout() == 2000.0
