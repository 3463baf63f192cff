"""Tests that kill mutants an audit found surviving in the core modules (issue 17).

Each test pins one behaviour that the rest of the suite let slip: it fails on the mutant
named in its docstring. They run without Lava, in well under a second each, so that
``make mutation`` can run them for every mutant.
"""

from __future__ import annotations

import nir
import numpy as np
import pytest

from lrfdyn.errors import LoihiRangeError
from lrfdyn.loihi import fixed
from lrfdyn.loihi.ir import SynapseSpec
from lrfdyn.loihi.lower import lower
from lrfdyn.loihi.quantize import _check_memoryless
from lrfdyn.loihi.neurons import CONVENTIONS, NEURON_LOWERINGS
from lrfdyn.sim.reference import run_reference
from lrfdyn.sim.report import first_mismatches


# ---------------------------------------------------------------- neurons: Norse's CubaLIF


def _cuba_lif(w_in: float) -> nir.CubaLIF:
    n = 3
    return nir.CubaLIF(tau_syn=np.full(n, 5e-3), tau_mem=np.full(n, 10e-3), r=np.full(n, 2.0),
                       v_leak=np.zeros(n), v_threshold=np.ones(n), v_reset=np.zeros(n),
                       w_in=np.full(n, w_in))


def test_norse_cuba_lif_ignores_w_in_and_nir_applies_it() -> None:
    """Mutant: w_in applied in Norse's CubaLIF (Norse's step adds the input to i unscaled)."""
    lower_cuba = NEURON_LOWERINGS[nir.CubaLIF]
    norse, nir_conv = CONVENTIONS["norse"], CONVENTIONS["nir"]
    dt = 1e-3
    a = lower_cuba(_cuba_lif(1.0), dt, "n", norse)
    b = lower_cuba(_cuba_lif(3.0), dt, "n", norse)
    assert b.gain == a.gain
    # Norse: the input reaches v with gain r·dt/τ_mem alone, w_in and dt/τ_syn unused.
    assert a.gain == pytest.approx(a.dv * 2.0) and a.du != a.dv
    # NIR's Euler step scales the input into i by dt/τ_syn·w_in.
    c = lower_cuba(_cuba_lif(1.0), dt, "n", nir_conv)
    d = lower_cuba(_cuba_lif(3.0), dt, "n", nir_conv)
    assert d.gain == pytest.approx(3.0 * c.gain)
    assert c.gain == pytest.approx((dt / 10e-3) * 2.0 * (dt / 5e-3))


# ---------------------------------------------------------------- report: the last step


def _hand_net(hand_graph):
    net = lower(hand_graph)
    x = np.array([[200, 30], [90, 250]])
    steps = net.steps_per_sample()
    ref = run_reference(net, x, steps)
    # What Lava records: every group shifted by its latency.
    lava = {}
    for g, grp in net.groups.items():
        arr = np.zeros_like(ref[g])
        arr[:, grp.latency:] = ref[g][:, : steps - grp.latency]
        lava[g] = arr
    return net, ref, lava


def test_a_mismatch_only_at_the_last_step_is_counted(hand_graph) -> None:
    """Mutant: the comparison window stops one step short of the last recorded step."""
    net, ref, lava = _hand_net(hand_graph)
    counts, first = first_mismatches(lava, ref, net)
    assert first is None and sum(counts.values()) == 0
    out = net.output
    lava[out][1, -1, 1] = not lava[out][1, -1, 1]
    counts, first = first_mismatches(lava, ref, net)
    assert counts[out] == 1 and sum(counts.values()) == 1
    steps = net.steps_per_sample()
    assert (first.layer, first.sample, first.neuron) == (out, 1, 1)
    assert first.step == steps - 1 - net.groups[out].latency
    assert first.lava != first.reference


def test_a_mismatch_at_the_first_step_and_sample_is_counted(hand_graph) -> None:
    """Mutants: the window starts one step late, or the first sample is skipped."""
    net, ref, lava = _hand_net(hand_graph)
    g = next(iter(net.groups))
    lat = net.groups[g].latency
    lava[g][0, lat, 0] = not lava[g][0, lat, 0]
    counts, first = first_mismatches(lava, ref, net)
    assert counts[g] == 1 and (first.sample, first.step, first.neuron) == (0, 0, 0)


# ---------------------------------------------------------------- build: the drain


def _brute_steps_to_zero(d: int) -> int:
    """Steps until the largest 24-bit value, decayed by Loihi's (4096 − d)/4096, is 0."""
    x, n = (1 << 23), 0
    while x:
        x = (x * (4096 - d)) >> 12
        n += 1
        assert n < 10_000
    return n


@pytest.mark.parametrize("d", [300, 1000, 2048, 4000, 4095])
def test_steps_to_zero_equals_a_brute_force_decay(d) -> None:
    from lrfdyn.loihi.build import steps_to_zero

    assert steps_to_zero(d) == _brute_steps_to_zero(d)
    assert steps_to_zero(1) is None  # ~35,000 steps: never, for a drain


def test_drain_covers_latency_longest_delay_and_slowest_decay(make_shortcut_graph) -> None:
    """Mutant: a drain one step short. The drain must outlast the pipeline (latency),
    the longest synaptic delay, the slowest voltage decay from the 24-bit maximum, and
    the one step u needs (du = 4095) to forget its last input."""
    from lrfdyn.loihi.build import drain_steps

    net = lower(make_shortcut_graph(seed=2))
    longest = max(s.delay for s in net.synapses)
    assert longest >= 1  # the shortcut is delayed: the delay term is exercised
    slowest = max(_brute_steps_to_zero(g.params.dv) for g in net.groups.values())
    assert drain_steps(net) == net.latency + longest + slowest + 1


# ---------------------------------------------------------------- lower: the memoryless check


class _Bounds:
    """The one method :func:`_check_memoryless` reads off the quantizer."""

    def __init__(self, levels: int) -> None:
        self.levels = levels

    def src_bound_int(self, src: str) -> np.ndarray:
        return np.full(1, float(self.levels))


def _threshold_net(levels: int):
    n_in, n = 4, 3
    rng = np.random.default_rng(0)
    nodes = {
        "input": nir.Input(input_type={"input": np.array([n_in])}),
        "lin": nir.Linear(weight=rng.uniform(0.1, 1.0, (n, n_in))),
        "thr": nir.Threshold(threshold=np.full(n, 0.8)),
        "output": nir.Output(output_type={"output": np.array([n])}),
    }
    edges = [("input", "lin"), ("lin", "thr"), ("thr", "output")]
    return lower(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False,
                              metadata={"dt": 1e-3, "timesteps": 3, "input_levels": levels}))


def test_memoryless_check_weighs_each_synapse_by_its_graded_payload() -> None:
    """Mutant: the graded payload size dropped from the memoryless-threshold check (every
    source counted as a binary spike). A weight of 1 from a 255-level input reaches
    255 << 6 ≥ 4096: the check must refuse it, though a spike of it would pass."""
    net = _threshold_net(255)
    group = net.groups["thr"]
    incoming = net.incoming("thr")
    _check_memoryless(group, incoming, _Bounds(255))  # what lowering built passes
    s = incoming[0]
    assert s.num_message_bits > 0
    one = SynapseSpec(name="w1", src=s.src, dst="thr", weights=np.ones((group.size, 1),
                      np.int64), weight_exp=0, num_message_bits=s.num_message_bits)
    with pytest.raises(LoihiRangeError, match="memoryless.*4096"):
        _check_memoryless(group, [one], _Bounds(255))
    # The same synapse carrying spikes (no payload) reaches 64 < 4096 and passes.
    spikes = SynapseSpec(name="w1", src=s.src, dst="thr", weights=one.weights, weight_exp=0)
    _check_memoryless(group, [spikes], _Bounds(255))
    # And the bound counts the payload exactly: 63 levels reach 4032 < 4096, 64 reach 4096.
    _check_memoryless(group, [one], _Bounds(63))
    with pytest.raises(LoihiRangeError):
        _check_memoryless(group, [one], _Bounds(64))


def test_memoryless_lowering_keeps_the_worst_graded_input_below_4096() -> None:
    """The threshold lowering sizes vth from the graded input's bound: the worst input of
    255-level payloads stays below 4096 (u << 6), so v forgets each step."""
    net = _threshold_net(255)
    worst = 0.0
    for s in net.incoming("thr"):
        payload = 255.0 if s.num_message_bits else 1.0
        w = np.abs(fixed.dense_effective_weights(s.weights))
        w = w.toarray() if hasattr(w, "toarray") else np.asarray(w)
        worst = max(worst, float((w.sum(axis=1) * payload * 2.0 ** s.weight_exp).max()))
    assert 0 < worst * 64 < 4096
    # The 255-level input really is graded and weights are non-trivial.
    assert net.input.levels == 255 and worst * 64 > 1000


# ---------------------------------------------------------------- survivors of `make mutation`


def test_a_graph_without_timesteps_is_refused_unless_they_are_given(hand_graph) -> None:
    """Mutant (lower.py, from the mutation run): a default of 1 timestep instead of
    none, so a graph without 'timesteps' would run one step silently."""
    from lrfdyn.errors import ValidationError

    del hand_graph.metadata["timesteps"]
    with pytest.raises(ValidationError, match="no 'timesteps'"):
        lower(hand_graph)
    assert lower(hand_graph, timesteps=3).input.timesteps == 3


@pytest.mark.parametrize("field_name, value", [("dv", 1.5), ("du", -0.25), ("dv", [0.5, 1.2])])
def test_decays_outside_0_1_are_refused(field_name, value) -> None:
    """Mutants (neurons.py): the decay check skipped, or ``&`` turned into ``|``."""
    from lrfdyn.errors import ValidationError
    from lrfdyn.loihi.neurons import Dynamics

    kwargs = {"gain": 1.0, "dv": 0.5, "v_th": 1.0, field_name: np.asarray(value)}
    with pytest.raises(ValidationError, match=f"decay {field_name}"):
        Dynamics(**kwargs)
    Dynamics(gain=1.0, dv=np.array([0.0, 1.0]), v_th=1.0, du=0.0)  # both ends are valid


def test_a_neuron_at_exactly_its_threshold_does_not_spike_by_default() -> None:
    """Mutant (neurons.py): ``spike_ge`` on by default. NIR and Loihi spike at v > θ;
    only conventions that say so (SpikingJelly, Sinabs, Rockpool) spike at v ≥ θ."""
    from lrfdyn.loihi.neurons import Dynamics
    from lrfdyn.sim.nir_sim import NeuronState

    dyn = Dynamics(gain=1.0, dv=1.0, v_th=1.0)
    out, _ = NeuronState.zeros(1, 2).step(np.array([[1.0, 1.0 + 1e-9]]), dyn)
    assert out.tolist() == [[False, True]] or out.tolist() == [[0.0, 1.0]]
    assert not CONVENTIONS["nir"].spike_ge and CONVENTIONS["spikingjelly"].spike_ge


def test_inputs_per_step_equal_the_held_input(hand_graph) -> None:
    """Mutant (reference.py): ``check_samples`` refusing (N, T, size) input. The same
    payload given at each of the T steps runs exactly as the held (N, size) input."""
    net = lower(hand_graph)
    x = np.array([[200, 30], [90, 250], [0, 7]])
    t = net.input.timesteps
    held = run_reference(net, x, net.steps_per_sample())
    per_step = run_reference(net, np.repeat(x[:, None, :], t, axis=1), net.steps_per_sample())
    assert all(np.array_equal(held[g], per_step[g]) for g in net.groups)
    assert any(held[g].any() for g in net.groups)


def test_a_nir_delay_reaches_the_oldest_step_it_keeps() -> None:
    """Mutant (reference.py): the history lookup skips its oldest entry, so a Delay of
    d steps (kept exactly d steps back) delivers nothing."""
    n, dt, d = 3, 1e-3, 3
    nodes = {
        "input": nir.Input(input_type={"input": np.array([n])}),
        "a": nir.Linear(weight=np.eye(n)),
        "t1": nir.Threshold(threshold=np.full(n, 0.5)),
        "delay": nir.Delay(delay=np.full(n, d * dt)),
        "b": nir.Linear(weight=np.eye(n)),
        "t2": nir.Threshold(threshold=np.full(n, 0.5)),
        "output": nir.Output(output_type={"output": np.array([n])}),
    }
    edges = [("input", "a"), ("a", "t1"), ("t1", "delay"), ("delay", "b"), ("b", "t2"),
             ("t2", "output")]
    graph = nir.NIRGraph(nodes=nodes, edges=edges, type_check=False,
                         metadata={"dt": dt, "timesteps": 8, "input_levels": 1})
    net = lower(graph)
    x = np.array([[1, 0, 1], [0, 1, 1]])
    ref = run_reference(net, x, 8)
    assert ref["t1"].any() and ref["t2"][:, d:].any()
    assert np.array_equal(ref["t2"][:, d:], ref["t1"][:, : 8 - d])
    assert not ref["t2"][:, :d].any()


def test_report_formats_and_memory_bits_by_hand(hand_graph) -> None:
    """Survivors of the mutation run in report.py (percent) and lower.py (memory_bits):
    counted by hand on the hand graph. input → a (3×2, half non-zero: dense, graded
    24-bit buffers) → l → b (2×3, dense, 16-bit spike buffers) → m."""
    from lrfdyn.sim.report import memory_bits, percent

    assert percent(0.5) == "50.00 %" and percent(None) == "n/a" and percent(1.0) == "100.00 %"
    net = lower(hand_graph)
    bits = {s.name: s.memory_bits for s in net.synapses}
    assert bits == {"input->l": 6 * 8 + 3 * 24, "l->m": 6 * 8 + 2 * 16}
    assert memory_bits(net) == (3 * 2 * 24 + 2 * 2 * 24, 120 + 80)
