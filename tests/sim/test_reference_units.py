"""Unit tests of sim/reference.py against an independent, plain-Python Loihi executor.

``_loihi_step`` restates Lava's ``AbstractPyLifModelFixed`` (lava/proc/lif/models.py:
u decays by du + 1 and rounds toward zero, adds ``a_in << 6`` and wraps at 2^23; v decays
by dv, adds u and the bias, saturates at ±(2^23 − 1); a spike is v > vth << 6 and resets
v to 0), one Python integer at a time, and ``_independent`` steps whole networks in
logical time with it. The networks are built by hand (no lowering), with decays that hit
both the reference's shift kernel (τ = 2: dv = 2048) and its generic multiply.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from lrfdyn.errors import ValidationError
from lrfdyn.loihi import fixed
from lrfdyn.loihi.layers import ConvMap
from lrfdyn.loihi.ir import (BIAS_SOURCE, PHASE_SOURCE, ClockSource, bias_offset, InputSpec, LoweredNetwork, NeuronGroup,
                             RelayParams, SynapseSpec)
from lrfdyn.sim.reference import SynapseLayer, _payload_bounds, check_samples, int_type, \
    readout, run_reference, synapse_layers

UV = 1 << 23


def _trunc_decay(x: int, d: int) -> int:
    mag = (abs(x) * (4096 - d)) >> 12
    return mag if x >= 0 else -mag


def _loihi_step(u: int, v: int, a_in: int, du: int, dv: int, vth: int, spiking: bool,
                bias: int = 0):
    u = _trunc_decay(u, du + 1) + (a_in << 6)
    if u > UV:
        u -= 2 * UV
    elif u <= -UV:
        u += 2 * UV
    v = max(-UV + 1, min(UV - 1, _trunc_decay(v, dv) + u + bias))
    s = spiking and v > (vth << 6)
    return s, u, (0 if s else v)


def _lava_weights(w) -> np.ndarray:
    """Lava's Dense weights: mixed-sign matrices lose their LSB (8-bit, sign mode)."""
    w = np.asarray(w.toarray() if sp.issparse(w) else w, np.int64)
    if w.min() < 0 < w.max():
        return (w >> 1) << 1
    return w


def _independent(net: LoweredNetwork, x: np.ndarray, steps: int) -> dict[str, np.ndarray]:
    """Logical-time run: each group at step t sees its sources at t − lag − recurrent."""
    n = len(x)
    vals: dict[str, list[np.ndarray]] = {g: [] for g in net.groups}
    state = {g: (np.zeros((n, grp.size), np.int64), np.zeros((n, grp.size), np.int64))
             for g, grp in net.groups.items()}

    def value(src, when):
        if when < 0:
            return None
        if bias_offset(src) is not None:
            return np.ones((n, 1), np.int64)
        if src == net.input.name:
            if when >= net.input.timesteps:
                return np.zeros((n, net.input.size), np.int64)
            return x[:, when] if x.ndim == 3 else x
        return vals[src][when].astype(np.int64)

    for t in range(steps):
        for g, grp in net.groups.items():
            a = np.zeros((n, grp.size), np.int64)
            for s in net.incoming(g):
                src = value(s.src, t - s.lag - int(s.recurrent))
                if src is None:
                    continue
                if s.conv is not None:
                    c = s.conv
                    y = torch.nn.functional.conv2d(
                        torch.as_tensor(src, dtype=torch.float64).reshape(n, *c.in_shape),
                        torch.as_tensor(np.asarray(s.weights), dtype=torch.float64),
                        stride=c.stride, padding=c.padding, dilation=c.dilation,
                        groups=c.groups).reshape(n, -1).numpy().astype(np.int64)
                    y = (y + UV) % (2 * UV) - UV  # Lava's Conv wraps its 24-bit sum
                else:
                    y = src @ _lava_weights(s.weights).T
                    y = y << s.weight_exp if s.weight_exp > 0 else y >> -s.weight_exp
                a += y
            if grp.graded:
                y = a >> grp.params.exp
                vals[g].append(np.maximum(y, 0) if grp.params.rectify else y)
                continue
            p = grp.params
            u, v = state[g]
            out = np.zeros((n, grp.size), np.int64)
            for i in range(n):
                for j in range(grp.size):
                    s_, u[i, j], v[i, j] = _loihi_step(int(u[i, j]), int(v[i, j]),
                                                      int(a[i, j]), p.du, p.dv, p.vth,
                                                      grp.spiking)
                    out[i, j] = s_ if grp.spiking else v[i, j]
            vals[g].append(out.astype(bool) if grp.spiking else out)
    return {g: np.stack(v, axis=1) for g, v in vals.items()}


def _lif(name, size, du, dv, vth, latency, spiking=True):
    return NeuronGroup(name, size, fixed.LifParams(du=du, dv=dv, vth=vth), latency=latency,
                       spiking=spiking)


def _net(T=5) -> LoweredNetwork:
    """input(4, graded 15) -> a (Dense, exp -1) -> r (relay >> 1) -> b (Sparse) -> o (LI);
    a feeds itself (recurrent), the input reaches b two steps late (a NIR-Delay lag), a
    bias drives a."""
    rng = np.random.default_rng(3)
    groups = {
        "a": _lif("a", 3, du=4095, dv=2048, vth=20, latency=1),
        "r": NeuronGroup("r", 3, RelayParams(1), latency=2, spiking=False, kind="relay"),
        "b": _lif("b", 2, du=1000, dv=300, vth=8, latency=3),
        "o": _lif("o", 2, du=2047, dv=1024, vth=1, latency=4, spiking=False),
    }
    syn = [
        SynapseSpec("in->a", "input", "a", rng.integers(-40, 90, (3, 4)), -1,
                    num_message_bits=24),
        SynapseSpec("a->a", "a", "a", np.array([[0, -30, 0], [12, 0, 0], [0, 0, -50]]), 0,
                    recurrent=True),
        SynapseSpec("a.bias", BIAS_SOURCE, "a", np.array([[6], [0], [-4]]), 2),
        SynapseSpec("a->r", "a", "r", np.array([[200, 0, 0], [0, 100, 0], [0, 0, 254]]), 0),
        SynapseSpec("r->b", "r", "b", sp.csr_matrix(np.array([[3, 0, 5], [0, -8, 2]])), 0,
                    num_message_bits=24),
        SynapseSpec("in->b@2", "input", "b", np.array([[1, 0, 0, 2], [0, 3, 0, 0]]), 0,
                    lag=2, num_message_bits=24),
        SynapseSpec("b->o", "b", "o", np.array([[100, 50], [-80, 120]]), 1),
    ]
    return LoweredNetwork(InputSpec("input", 4, 15, T), groups, syn, "o", 1e-3)


def test_a_hand_stepped_lif():
    # du = 4095: u forgets, carries a_in << 6; dv = 0: v integrates 64·a_in per step;
    # vth = 1: spike when v > 64. Input 1 every step: v = 64, 128 (spike, 0), 64, 128 ...
    net = LoweredNetwork(InputSpec("i", 1, 1, 6), {"l": _lif("l", 1, 4095, 0, 1, 1)},
                         [SynapseSpec("i->l", "i", "l", np.array([[1]]), 0)], "l", 1e-3)
    got = run_reference(net, np.ones((1, 1), np.int64))
    assert got["l"][0, :, 0].tolist() == [False, True, False, True, False, True]


def test_reference_equals_the_independent_executor():
    net = _net(T=5)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 16, (3, 4))
    want = _independent(net, x, 9)
    got = run_reference(net, x, 9)
    assert set(got) == set(net.groups)
    for g in net.groups:
        assert got[g].dtype == want[g].dtype, g
        np.testing.assert_array_equal(got[g], want[g], err_msg=g)
    assert got["a"].any() and got["b"].any() and got["r"].any()  # the test exercises them
    assert (got["o"] != 0).any()


def test_a_different_input_per_step():
    net = _net(T=4)
    rng = np.random.default_rng(1)
    x = rng.integers(0, 16, (2, 4, 4))
    want = _independent(net, x, 7)
    got = run_reference(net, x, 7)
    for g in net.groups:
        np.testing.assert_array_equal(got[g], want[g], err_msg=g)


def test_batches_and_record():
    net = _net(T=3)
    x = np.random.default_rng(2).integers(0, 16, (5, 4))
    whole = run_reference(net, x, 6, batch_size=None)
    parts = run_reference(net, x, 6, batch_size=2, record=["b", "r"])
    exact = run_reference(net, x, 6, batch_size=5)  # one batch of exactly batch_size
    for g in whole:
        np.testing.assert_array_equal(exact[g], whole[g])
    assert sorted(parts) == ["b", "r"]
    for g in parts:
        np.testing.assert_array_equal(parts[g], whole[g])
    assert whole["a"].shape == (5, 6, 3) and whole["o"].dtype == np.int64
    assert run_reference(net, x)["a"].shape == (5, 3, 3)  # default: T steps
    with pytest.raises(ValidationError, match=r"unknown groups \['zz'\]"):
        run_reference(net, x, record=["zz", "a"])


def test_lava_window_zeroes_the_steps_lava_does_not_record():
    net = _net(T=5)
    x = np.random.default_rng(4).integers(0, 16, (2, 4))
    full = run_reference(net, x, 8)
    win = run_reference(net, x, 8, lava_window=True)
    for g, grp in net.groups.items():
        keep = 8 - grp.latency
        np.testing.assert_array_equal(win[g][:, :keep], full[g][:, :keep], err_msg=g)
        assert not win[g][:, keep:].any(), g


def test_inputs_callback_feeds_a_group():
    net = _net(T=4)
    seen = []

    def feed(visible):
        seen.append(sorted(map(str, visible)))
        return np.full((2, 2), 3, np.int64) * visible["input"][:, :2]

    x = np.array([[1, 2, 0, 0], [0, 1, 1, 1]])
    got = run_reference(net, x, 4, inputs={"b": feed})
    # b: du = 1000, dv = 300, vth = 8, a_in = 3·x
    for i in range(2):
        for j in range(2):
            u = v = 0
            for t in range(4):
                s, u, v = _loihi_step(u, v, 3 * int(x[i, j]), 1000, 300, 8, True)
                assert got["b"][i, t, j] == s
    assert seen[0] == ["a", "bias", "input", "r"]  # the bias source under its label


def _conv_net(weights, payload_levels, x_max):
    c = ConvMap(np.asarray(weights, np.float64), (1, 3, 3))
    k = np.asarray(weights, np.int64)
    groups = {"r": NeuronGroup("r", 4, RelayParams(0), latency=1, spiking=False, kind="relay")}
    syn = [SynapseSpec("in->r", "input", "r", k, 0, num_message_bits=24,
                       conv=c.with_weight(k))]
    return LoweredNetwork(InputSpec("input", 9, payload_levels, 2), groups, syn, "r", 1e-3)


def test_conv_layer_equals_a_hand_correlation_and_wraps_at_24_bits():
    net = _conv_net([[[[1, -2], [3, 4]]]], 255, 255)
    x = np.stack([np.arange(9), np.zeros(9, np.int64)])  # two samples, the second silent
    # 2x2 cross-correlation of [[0,1,2],[3,4,5],[6,7,8]] with [[1,-2],[3,4]]
    want = [0 - 2 + 9 + 16, 1 - 4 + 12 + 20, 3 - 8 + 18 + 28, 4 - 10 + 21 + 32]
    got = run_reference(net, x)["r"]
    assert got[0, 0].tolist() == want and got[1, 0].tolist() == [0] * 4
    big = _conv_net([[[[254, 254], [254, 254]]]], 1 << 23, 1 << 23)
    xb = np.full((1, 9), 1 << 20)
    s = 4 * 254 * (1 << 20)  # 2^30 + ..: wraps to 24 bits
    wrapped = (s + UV) % (2 * UV) - UV
    assert run_reference(big, xb)["r"][0, 0].tolist() == [wrapped] * 4


def test_synapse_layer_bounds():
    cpu = torch.device("cpu")
    # mixed signs: Lava drops the LSB, 3 -> 2; peak 4, fan-in 2, payload 5, exp 1
    s = SynapseSpec("d", "x", "y", np.array([[3, -4], [2, 0]]), 1)
    layer = SynapseLayer(s, 5.0, cpu)
    assert layer.reach == 4 * 5 * 2 * 2
    assert layer.dtype == torch.float32 and layer.out_dtype == torch.int32
    assert not layer.wraps and layer.diagonal is None and layer.geometry is None
    y = layer(torch.tensor([[1, 1], [3, 0]]))
    assert y.tolist() == [[(2 - 4) * 2, 2 * 2], [2 * 3 * 2, 2 * 3 * 2]]
    neg = SynapseLayer(SynapseSpec("n", "x", "y", np.array([[-3, 0]]), -1), 1.0, cpu)
    assert neg(torch.tensor([[1, 0]])).tolist() == [[-2]]  # -3 >> 1 floors to -2
    # sparse: fan-in is the most non-zeros in a row (2), not the number of columns (4)
    ssp = SynapseSpec("s", "x", "y", sp.csr_matrix(np.array([[5, 0, 0, 7], [0, 1, 0, 0]])), 0)
    sl = SynapseLayer(ssp, 3.0, cpu)
    assert sl.reach == 7 * 3 * 2
    assert sl(torch.tensor([[1, 2, 3, 4]])).tolist() == [[5 + 28, 2]]
    empty = SynapseLayer(SynapseSpec("e", "x", "y", sp.csr_matrix((2, 3), dtype=np.int64), 0),
                         3.0, cpu)
    assert empty.reach == 0 and empty(torch.ones((1, 3), dtype=torch.int64)).tolist() == [[0, 0]]
    zeros = SynapseLayer(SynapseSpec("z", "x", "y", np.zeros((2, 3), np.int64), 0), 3.0, cpu)
    assert zeros.reach == 0  # an all-zero dense layer delivers nothing either


def test_synapse_layer_number_types_at_their_boundaries():
    cpu = torch.device("cpu")
    w = np.array([[128]])

    def layer(payload, exp=0):
        return SynapseLayer(SynapseSpec("b", "x", "y", w, exp), payload, cpu)

    at24 = layer(float(1 << 17))  # 128 · 2^17 = 2^24 exactly: float32 no longer exact
    assert at24.reach == 1 << 24 and at24.dtype == torch.float64 and at24.wraps
    below = layer(float((1 << 17) - 1))
    assert below.dtype == torch.float32
    at23 = layer(float(1 << 16))  # reach 2^23: wraps; 2^23 - 128: not
    assert at23.wraps and not layer(float((1 << 16) - 1)).wraps
    at31 = layer(float(1 << 24), exp=0)  # 128 · 2^24 = 2^31: one past int32
    assert at31.out_dtype == torch.int64 and layer(float((1 << 24) - 1)).out_dtype == \
        torch.int32
    # a Dense sum is an integer before its shift: 2^31 >> 3 still needs int64 on the way
    assert layer(float(1 << 24), exp=-3).out_dtype == torch.int64
    assert layer(float(1 << 21), exp=3).out_dtype == torch.int64  # 2^28 << 3 = 2^31
    assert layer(float((1 << 21) - 1), exp=3).out_dtype == torch.int32
    # the exponent scales reach (not wraps/dtype, which see the pre-shift sum)
    shifted = layer(float(1 << 16), exp=-3)
    assert shifted.reach == (1 << 23) / 8 and shifted.wraps
    up = layer(4.0, exp=3)
    assert up.reach == 128 * 4 * 8
    with pytest.raises(ValidationError, match="exceed 2\\^53"):
        layer(float(1 << 46))


def test_diagonal_conv_is_a_broadcast():
    cpu = torch.device("cpu")
    k = np.array([2, -3]).reshape(2, 1, 1, 1)
    c = ConvMap(k.astype(np.float64), (2, 1, 2), groups=2)
    layer = SynapseLayer(SynapseSpec("d", "x", "y", k, 0, conv=c.with_weight(k)), 100.0, cpu)
    assert layer.diagonal is not None and layer.reach == 3 * 100
    assert layer(torch.tensor([[1, 2, 3, 4]])).tolist() == [[2, 4, -9, -12]]


def test_payload_bounds():
    net = _net()
    late = ClockSource("bias", 64)
    net.synapses.append(SynapseSpec("o.bias", late, "b", np.array([[1], [1]]), 0))
    assert _payload_bounds(net) == {"input": 15.0, BIAS_SOURCE: 1.0, late: 1.0, "a": 1.0,
                                    "r": float(1 << 23), "b": 1.0, "o": float(1 << 23)}
    net.input.levels = 0
    assert _payload_bounds(net)["input"] == 1.0


def test_check_samples():
    net = _net(T=5)
    assert check_samples(net, np.ones((2, 4))).dtype == np.int64
    assert check_samples(net, np.ones((2, 5, 4))).shape == (2, 5, 4)
    for bad in (np.ones((2, 3)), np.ones((2, 4, 4)), np.ones(4), np.ones((2, 5, 3))):
        with pytest.raises(ValidationError, match="the network's input has 4 values"):
            check_samples(net, bad)


def test_readout_counts_the_first_t_steps_and_ties_go_low():
    s = np.zeros((2, 4, 3), bool)
    s[0, :2, 2] = True  # sample 0: neuron 2 twice
    s[0, 3, 1] = s[0, 2, 1] = s[0, 1, 1] = True  # neuron 1: once within T = 2
    s[1, 0, 1] = s[1, 1, 2] = True  # tie between 1 and 2 -> 1
    assert readout(s, 2).tolist() == [2, 1]
    assert readout(s, 4).tolist() == [1, 1]


def test_conv_reach_counts_every_input_channel():
    cpu = torch.device("cpu")
    k = np.full((1, 2, 2, 2), -3, np.int64)  # c_in 2, 2x2: fan-in 8
    c = ConvMap(k.astype(np.float64), (2, 3, 3))
    layer = SynapseLayer(SynapseSpec("c", "x", "y", k, 0, conv=c.with_weight(k)), 10.0, cpu)
    assert layer.reach == 3 * 10 * 8 and layer.geometry is not None and layer.diagonal is None


def test_large_relay_values_stay_exact_downstream():
    # r sums 100 inputs of up to 255 with weight 254 (< 2^23); l reads r with weight 254:
    # 254·6.5e6 ≈ 1.6e9 > 2^24, so l's layer must not use float32; the reference tightens
    # r's bound to its inputs' reach, which still says so.
    groups = {"r": NeuronGroup("r", 1, RelayParams(0), latency=1, spiking=False, kind="relay"),
              # a second relay: its raw sum is recorded (a LIF would saturate and hide it)
              "l": NeuronGroup("l", 1, RelayParams(0), latency=2, spiking=False, kind="relay")}
    syn = [SynapseSpec("in->r", "input", "r", np.full((1, 100), 254), 0, num_message_bits=24),
           SynapseSpec("r->l", "r", "l", np.array([[253]]), 0, num_message_bits=24)]
    net = LoweredNetwork(InputSpec("input", 100, 255, 2), groups, syn, "l", 1e-3)
    x = np.full((1, 100), 255)
    x[0, 0] = 254
    x[0, 1] = 3
    want = _independent(net, x, 2)
    got = run_reference(net, x, 2)
    assert want["r"][0, 0, 0] == 254 * (255 * 98 + 254 + 3)
    np.testing.assert_array_equal(got["r"], want["r"])
    np.testing.assert_array_equal(got["l"], want["l"])
    assert want["l"][0, 0, 0] == 253 * 254 * (255 * 98 + 254 + 3)  # not a float32 value


def test_the_shape_error_names_the_sample_shape():
    net = _net(T=5)
    with pytest.raises(ValidationError, match=r"samples have shape \(3,\), but the network's "
                                              r"input has 4 values"):
        check_samples(net, np.ones((2, 3)))
    with pytest.raises(ValidationError, match=r"samples have shape \(6, 4\)"):
        check_samples(net, np.ones((2, 6, 4)))


def test_a_rectifying_relay_sends_max_of_its_sum_and_zero():
    net = _net(T=5)
    net.groups["r"].params = RelayParams(1, rectify=True)
    net.synapses[3].weights = np.array([[200, 0, 0], [0, -100, 0], [0, 0, 254]])
    x = np.random.default_rng(5).integers(0, 16, (3, 4))
    want = _independent(net, x, 8)
    got = run_reference(net, x, 8)
    for g in net.groups:
        np.testing.assert_array_equal(got[g], want[g], err_msg=g)
    assert (got["r"] >= 0).all() and got["r"][:, :, 0].any()
    net.groups["r"].params = RelayParams(1)
    assert (run_reference(net, x, 8)["r"] < 0).any()  # the rectifier had work to do


def test_a_group_summing_past_2_31_accumulates_in_int64():
    # two relay layers of up to 253·254·25,247 ≈ 1.62e9 each (each fits int32) sum to
    # ≈ 3.2e9 > 2^31 at relay l: the sum needs int64
    groups = {"r": NeuronGroup("r", 1, RelayParams(0), latency=1, spiking=False, kind="relay"),
              "l": NeuronGroup("l", 1, RelayParams(0), latency=2, spiking=False, kind="relay")}
    syn = [SynapseSpec("in->r", "input", "r", np.full((1, 100), 254), 0, num_message_bits=24),
           SynapseSpec("r->l", "r", "l", np.array([[253]]), 0, num_message_bits=24),
           SynapseSpec("r->l#2", "r", "l", np.array([[252]]), 0, num_message_bits=24)]
    net = LoweredNetwork(InputSpec("input", 100, 255, 2), groups, syn, "l", 1e-3)
    x = np.full((1, 100), 255)
    x[0, 0], x[0, 1] = 254, 3
    r = 254 * (255 * 98 + 254 + 3)
    got = run_reference(net, x, 2)
    assert got["l"][0, 0, 0] == (253 + 252) * r and got["l"][0, 0, 0] > 1 << 31
    np.testing.assert_array_equal(got["l"], _independent(net, x, 2)["l"])


def test_int_type_holds_its_bound_and_no_more():
    assert int_type(0) == int_type((1 << 31) - 1) == torch.int32  # int32's largest value
    assert int_type(1 << 31) == int_type(float(1 << 40)) == torch.int64


def test_a_dense_sum_past_int32_before_a_right_shift_stays_exact():
    # 254 · 2 · (2^23 − 1) ≈ 4.3e9 overflows int32 before the >> 3 brings it to 5.3e8;
    # the reference once converted the sum to int32 first and returned −268,435,456.
    layer = SynapseLayer(SynapseSpec("d", "x", "y", np.array([[254, 254]]), -3),
                         float(1 << 23), torch.device("cpu"))
    v = (1 << 23) - 1
    assert layer(torch.tensor([[v, v]])).tolist() == [[(254 * 2 * v) >> 3]]


def test_a_relay_bound_is_its_inputs_reach_after_its_shift():
    net = _net(T=5)
    net.groups["r"].params = RelayParams(3)
    incoming, bound = synapse_layers(net, torch.device("cpu"))
    # r reads a (spikes, 1) through a dense 3×3: peak 254 · fan-in 3 = 762, >> 3, and 1 for
    # the rounding offset
    assert [layer.spec.name for layer in incoming["r"]] == ["a->r"]
    assert bound["r"] == 762 / 8 + 1
    # b reads r with that bound through a sparse matrix: peak 8, at most 2 per row
    assert incoming["b"][0].spec.name == "r->b" and incoming["b"][0].reach == 8 * 96.25 * 2
    # spiking and LI groups keep their bounds; a relay fed by a callback keeps 2^23
    assert bound["a"] == bound["b"] == 1.0 and bound["o"] == float(1 << 23)
    assert synapse_layers(net, torch.device("cpu"), fed={"r"})[1]["r"] == float(1 << 23)


def test_record_may_be_a_generator_when_batched():
    net = _net(T=3)
    x = np.random.default_rng(6).integers(0, 16, (5, 4))
    whole = run_reference(net, x, 5, batch_size=None)
    parts = run_reference(net, x, 5, batch_size=2, record=(g for g in ("b", "o")))
    assert sorted(parts) == ["b", "o"]
    for g in parts:
        np.testing.assert_array_equal(parts[g], whole[g])


def test_a_lead_runs_its_reader_a_pass_behind_and_sees_the_next_step():
    # a = 3·x(t) (a relay of the per-step input); b reads a with lag −1, so b(t) = a(t + 1),
    # 0 at the last step (a has no step T); c integrates b and feeds itself (recurrent:
    # no offset from that edge). b and c run one pass behind a.
    groups = {
        "a": NeuronGroup("a", 2, RelayParams(0), latency=1, spiking=False, kind="relay"),
        "b": NeuronGroup("b", 2, RelayParams(0), latency=2, spiking=False, kind="relay"),
        "c": _lif("c", 2, du=4095, dv=0, vth=1000, latency=3, spiking=False),
    }
    syn = [SynapseSpec("in->a", "input", "a", 3 * np.eye(2, dtype=np.int64), 0,
                       num_message_bits=24),
           SynapseSpec("a->b@-1", "a", "b", np.eye(2, dtype=np.int64), 0, lag=-1,
                       num_message_bits=24),
           SynapseSpec("b->c", "b", "c", np.eye(2, dtype=np.int64), 0, num_message_bits=24),
           SynapseSpec("c->c", "c", "c", np.array([[0, 1], [0, 0]]), 0, recurrent=True)]
    net = LoweredNetwork(InputSpec("input", 2, 15, 4), groups, syn, "c", 1e-3)
    x = np.array([[[1, 2], [3, 4], [5, 6], [7, 0]]])  # (1, T = 4, 2)
    got = run_reference(net, x, 4)
    assert got["a"][0].tolist() == [[3, 6], [9, 12], [15, 18], [21, 0]]
    assert got["b"][0].tolist() == [[9, 12], [15, 18], [21, 0], [0, 0]]
    # c: du = 4095 (u = 64·a_in), dv = 0 (v adds u), and c_0 also reads c_1's last v
    v = [0, 0]
    for t, (b0, b1) in enumerate(got["b"][0].tolist()):
        v = [v[0] + 64 * (b0 + (v[1] if t else 0)), v[1] + 64 * b1]
        assert got["c"][0, t].tolist() == v, t


def test_a_ternary_group_sends_at_most_one():
    net = _net()
    net.groups["a"].ternary, net.groups["a"].spiking = True, False
    assert _payload_bounds(net)["a"] == 1.0  # −1, 0 or +1, not the 24-bit range


def test_a_diagonal_conv_wraps_its_products_at_24_bits():
    cpu = torch.device("cpu")
    k = np.array([3, -1]).reshape(2, 1, 1, 1)
    c = ConvMap(k.astype(np.float64), (2, 1, 1), groups=2)
    layer = SynapseLayer(SynapseSpec("d", "x", "y", k, 0, conv=c.with_weight(k)),
                         float(1 << 23), cpu)
    assert layer.diagonal is not None and layer.wraps
    big = (1 << 22) + 5  # 3·big = 3·2^22 + 15 passes 2^23: Lava's Conv wraps it
    got = layer(torch.tensor([[big, big]])).tolist()
    assert got == [[3 * big - (1 << 24), -big]]


def test_a_product_neuron_multiplies_its_two_inputs():
    # p = (a_in1 · a_in2) >> 1 with a_in1 = 5·x and a_in2 = 3 (a weight of 3 on the bias)
    groups = {"p": NeuronGroup("p", 1, RelayParams(1, shifter=True), latency=1,
                               spiking=False, kind="relay")}
    syn = [SynapseSpec("in->p", "input", "p", np.array([[5]]), 0, num_message_bits=24),
           SynapseSpec("p.unit", BIAS_SOURCE, "p", sp.csr_matrix(np.array([[3]])), 0,
                       port="a_in2")]
    net = LoweredNetwork(InputSpec("input", 1, 15, 2), groups, syn, "p", 1e-3)
    got = run_reference(net, np.array([[7], [0]]), 2)["p"]
    assert got[:, :, 0].tolist() == [[(5 * 7 * 3) >> 1] * 2, [0, 0]]


def test_a_phase_gates_a_product_neuron_step_by_step():
    # p = a_in1 · a_in2: a_in1 = 2·x, a_in2 the phase row of the step (weights [1, 0]: p
    # reads phase 0 only), so p sends 2·x at steps 0 and 2 and nothing at steps 1 and 3
    groups = {"p": NeuronGroup("p", 1, RelayParams(0, shifter=True), latency=1,
                               spiking=False, kind="relay")}
    syn = [SynapseSpec("in->p", "input", "p", np.array([[2]]), 0, num_message_bits=24),
           SynapseSpec("p.gate", PHASE_SOURCE, "p", sp.csr_matrix(np.array([[1, 0]])), 0,
                       port="a_in2")]
    net = LoweredNetwork(InputSpec("input", 1, 15, 4), groups, syn, "p", 1e-3)
    net.phases = np.array([[1, 0], [0, 1], [1, 0], [0, 1]])
    got = run_reference(net, np.array([[5], [3]]), 4)["p"][:, :, 0]
    assert got.tolist() == [[10, 0, 10, 0], [6, 0, 6, 0]]
