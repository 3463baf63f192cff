"""Unit tests of loihi/neurons.py: every NIR neuron's discretization, by hand.

The expected values come from the equations in the module docstring, worked out with
round numbers (dt = 1 ms, τ = 2 ms gives dt/τ = 0.5), not from the code under test.
"""

from __future__ import annotations

import math

import nir
import numpy as np
import pytest

from lrfdyn.errors import UnsupportedNodeError, ValidationError
from lrfdyn.loihi.neurons import (
    CONVENTIONS,
    NEURON_LOWERINGS,
    NIR,
    RESETS,
    Convention,
    Dynamics,
    convention,
    param,
    uniform,
)

DT = 1e-3


def _lower(node, conv=NIR, dt=DT, name="n") -> Dynamics:
    return NEURON_LOWERINGS[type(node)](node, dt, name, conv)


def _lif(n=2, tau=2e-3, r=3.0, v_leak=0.0, v_th=1.5, v_reset=0.0) -> nir.LIF:
    return nir.LIF(tau=np.full(n, tau), r=np.full(n, r), v_leak=np.full(n, v_leak),
                   v_threshold=np.full(n, v_th), v_reset=np.full(n, v_reset))


def _cuba(n=2, tau_syn=2e-3, tau_mem=4e-3, r=3.0, w_in=2.0, v_th=1.0, v_leak=0.0,
          v_reset=0.0) -> nir.CubaLIF:
    return nir.CubaLIF(tau_syn=np.full(n, tau_syn), tau_mem=np.full(n, tau_mem),
                       r=np.full(n, r), v_leak=np.full(n, v_leak), v_threshold=np.full(n, v_th),
                       v_reset=np.full(n, v_reset), w_in=np.full(n, w_in))


def test_convention_defaults_are_nir_euler():
    c = Convention("plain", dt=0.5)
    assert (c.reset, c.tau_per_dt, c.cuba_unscaled, c.if_ignores_dt, c.exp_decay,
            c.spike_ge, c.multi_spike, c.per_neuron, c.ignore_r, c.syn_decays_input) == (
        "zero", False, False, False, False, False, False, False, False, False)
    assert RESETS == ("zero", "subtract_next", "subtract")


FIELDS = ("dt", "reset", "tau_per_dt", "cuba_unscaled", "if_ignores_dt", "exp_decay",
          "spike_ge", "multi_spike", "per_neuron", "ignore_r", "syn_decays_input")

#: The documented conventions (module docstring and comments), field by field.
EXPECTED = {
    "nir": (1e-3, "zero", False, False, False, False, False, False, False, False, False),
    "snntorch": (1e-4, "subtract_next", False, False, False, False, False, False, False,
                 False, False),
    "norse": (1e-3, "zero", True, True, True, False, False, False, False, False, False),
    "spikingjelly": (1e-4, "zero", False, False, False, False, True, False, False, False,
                     False),
    "sinabs": (1.0, "subtract", False, False, True, True, True, True, False, False, False),
    "rockpool": (1e-3, "subtract", False, False, False, True, True, True, False, True, True),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_convention_as_documented(name):
    c = convention(name)
    assert c.name == name
    assert tuple(getattr(c, f) for f in FIELDS) == EXPECTED[name]


def test_conventions_are_exactly_the_documented_ones():
    assert sorted(CONVENTIONS) == sorted(EXPECTED) and NIR is CONVENTIONS["nir"]


def test_unknown_convention_and_reset_are_refused():
    with pytest.raises(ValidationError, match="unknown convention 'lava'"):
        convention("lava")
    with pytest.raises(ValidationError, match="reset 'hold'"):
        Convention("x", dt=1.0, reset="hold")
    for r in RESETS:
        assert Convention("x", dt=1.0, reset=r).reset == r


def test_tau_per_dt_divides_by_dt():
    assert Convention("x", dt=1.0, tau_per_dt=True).tau(2e-6, 1e-3) == pytest.approx(2e-3)
    assert Convention("x", dt=1.0).tau(2e-6, 1e-3) == 2e-6


@pytest.mark.parametrize("decay", [0.0, 1.0, 0.5])
def test_decays_inside_0_1_are_accepted(decay):
    assert Dynamics(gain=1.0, dv=decay, v_th=1.0, du=decay).dv == decay


@pytest.mark.parametrize("field", ["du", "dv"])
@pytest.mark.parametrize("bad", [-0.01, 1.01])
def test_decays_outside_0_1_are_refused(field, bad):
    kw = {"dv": 0.5, "du": 0.5, field: bad}
    with pytest.raises(ValidationError, match=f"decay {field}="):
        Dynamics(gain=1.0, v_th=1.0, **kw)


def test_per_neuron_decay_arrays_are_checked_element_wise():
    Dynamics(gain=1.0, dv=np.array([0.0, 1.0]), v_th=1.0)
    with pytest.raises(ValidationError):
        Dynamics(gain=1.0, dv=np.array([0.5, 1.5]), v_th=1.0)
    with pytest.raises(ValidationError):
        Dynamics(gain=1.0, dv=0.5, du=np.array([0.5, -0.5]), v_th=1.0)


def test_dynamics_defaults_and_reset_check():
    d = Dynamics(gain=2.0, dv=0.25, v_th=1.0)
    assert (d.du, d.reset, d.memoryless, d.tau_steps, d.spike_ge, d.multi_spike) == (
        1.0, "zero", False, 0.0, False, False)
    assert d.bias.tolist() == [0.0]
    assert d.spiking and not d.per_neuron
    assert not Dynamics(gain=2.0, dv=0.25, v_th=None).spiking
    with pytest.raises(ValidationError, match="reset 'x'"):
        Dynamics(gain=1.0, dv=0.5, v_th=1.0, reset="x")


@pytest.mark.parametrize("which", ["gain", "dv", "du", "v_th"])
def test_per_neuron_is_any_array_parameter(which):
    kw = {"gain": 1.0, "dv": 0.5, "du": 0.5, "v_th": 1.0}
    kw[which] = np.array([0.5, 0.25])
    assert Dynamics(**kw).per_neuron


def test_uniform_and_param():
    assert uniform("n", "tau", [2.0, 2.0, 2.0]) == 2.0
    assert uniform("n", "tau", 3.0) == 3.0
    with pytest.raises(UnsupportedNodeError, match="n: per-neuron tau"):
        uniform("n", "tau", [2.0, 2.5])
    per = Convention("p", dt=1.0, per_neuron=True)
    got = param("n", "tau", [[1.0, 2.0]], per)
    assert isinstance(got, np.ndarray) and got.tolist() == [1.0, 2.0]
    assert param("n", "tau", [4.0, 4.0], per) == 4.0 and isinstance(
        param("n", "tau", [4.0, 4.0], per), float)
    assert isinstance(param("n", "tau", [4.0], per), float)
    with pytest.raises(UnsupportedNodeError):
        param("n", "tau", [1.0, 2.0], NIR)


def test_nir_lif_is_forward_euler():
    # dt/τ = 1e-3 / 2e-3 = 0.5; gain = 0.5·r = 1.5; bias = 0.5·v_leak
    d = _lower(_lif(tau=2e-3, r=3.0, v_leak=0.4, v_th=1.5))
    assert d.gain == pytest.approx(1.5) and d.dv == pytest.approx(0.5) and d.du == 1.0
    assert d.v_th == 1.5 and d.reset == "zero" and d.tau_steps == pytest.approx(2.0)
    assert d.bias.tolist() == pytest.approx([0.2, 0.2])
    assert d.spiking and not d.spike_ge and not d.multi_spike and not d.memoryless


def test_lif_tau_equal_to_dt_is_allowed_and_shorter_is_refused():
    d = _lower(_lif(tau=DT, r=1.0))
    assert d.dv == pytest.approx(1.0) and d.gain == pytest.approx(1.0)
    with pytest.raises(ValidationError, match="shorter than one step"):
        _lower(_lif(tau=0.9e-3))


def test_v_reset_must_be_zero():
    with pytest.raises(UnsupportedNodeError, match="v_reset != 0"):
        _lower(_lif(v_reset=0.1))
    with pytest.raises(UnsupportedNodeError, match="v_reset != 0"):
        _lower(_cuba(v_reset=-0.1))
    with pytest.raises(UnsupportedNodeError, match="v_reset != 0"):
        _lower(nir.IF(r=np.ones(2), v_threshold=np.ones(2), v_reset=np.full(2, 0.5)))


def test_snntorch_lif_subtracts_next_and_norse_divides_tau():
    d = _lower(_lif(tau=2e-4, r=1.0), CONVENTIONS["snntorch"], dt=1e-4)
    assert d.reset == "subtract_next" and d.dv == pytest.approx(0.5)
    # Norse: τ written = τ_true·dt = 2e-3·1e-3
    n = _lower(_lif(tau=2e-6, r=1.0), CONVENTIONS["norse"])
    assert n.dv == pytest.approx(0.5) and n.tau_steps == pytest.approx(2.0)


def test_sinabs_lif_is_exact_exponential():
    # dt = 1, τ = 2 steps: leak = 1 − e^{−1/2}; the input gain is r (not leak·r)
    d = _lower(_lif(tau=2.0, r=3.0, v_th=2.0), CONVENTIONS["sinabs"], dt=1.0)
    assert d.dv == pytest.approx(1 - math.exp(-0.5))
    assert d.gain == pytest.approx(3.0)
    assert d.reset == "subtract" and d.spike_ge and d.multi_spike
    # exponential decay accepts τ below one step (no Euler overshoot)
    fast = _lower(_lif(tau=0.5, r=1.0), CONVENTIONS["sinabs"], dt=1.0)
    assert fast.dv == pytest.approx(1 - math.exp(-2.0))


def test_per_neuron_exponential_lif():
    conv = Convention("pn", dt=1.0, exp_decay=True, per_neuron=True)
    node = nir.LIF(tau=np.array([1.0, 2.0]), r=np.array([1.0, 2.0]), v_leak=np.zeros(2),
                   v_threshold=np.array([1.0, 3.0]), v_reset=np.zeros(2))
    d = _lower(node, conv, dt=1.0)
    assert np.allclose(d.dv, [1 - math.exp(-1.0), 1 - math.exp(-0.5)])
    assert np.allclose(d.gain, [1.0, 2.0]) and np.allclose(d.v_th, [1.0, 3.0])
    assert np.allclose(d.tau_steps, [1.0, 2.0]) and d.per_neuron


def test_per_neuron_euler_lif_refuses_any_short_tau():
    conv = Convention("pn", dt=1e-3, per_neuron=True)
    node = nir.LIF(tau=np.array([2e-3, 0.5e-3]), r=np.ones(2), v_leak=np.zeros(2),
                   v_threshold=np.ones(2), v_reset=np.zeros(2))
    with pytest.raises(ValidationError, match="tau=0.0005 s is shorter"):
        _lower(node, conv)


def test_li_is_a_lif_without_threshold():
    d = _lower(nir.LI(tau=np.full(3, 4e-3), r=np.full(3, 2.0), v_leak=np.full(3, 1.0)))
    assert d.v_th is None and not d.spiking
    assert d.dv == pytest.approx(0.25) and d.gain == pytest.approx(0.5)
    assert d.bias.tolist() == pytest.approx([0.25] * 3) and d.tau_steps == pytest.approx(4)
    assert d.reset == "zero" and d.du == 1.0


def test_if_and_i_integrate_dt_r_x_or_r_x():
    node = nir.IF(r=np.full(2, 4.0), v_threshold=np.full(2, 2.0), v_reset=np.zeros(2))
    d = _lower(node)
    assert d.gain == pytest.approx(4e-3) and d.dv == 0.0 and d.v_th == 2.0
    assert _lower(node, CONVENTIONS["norse"]).gain == pytest.approx(4.0)
    sj = _lower(node, CONVENTIONS["spikingjelly"], dt=1e-4)
    assert sj.spike_ge and not sj.multi_spike and sj.gain == pytest.approx(4e-4)
    sn = _lower(node, CONVENTIONS["sinabs"], dt=1.0)
    assert sn.multi_spike and sn.reset == "subtract" and sn.gain == pytest.approx(4.0)
    i = _lower(nir.I(r=np.full(2, 4.0)))
    assert i.gain == pytest.approx(4e-3) and i.dv == 0.0 and i.v_th is None
    assert _lower(nir.I(r=np.full(2, 4.0)), CONVENTIONS["norse"]).gain == pytest.approx(4.0)


def test_nir_cuba_lif():
    # g_syn = 0.5, g_mem = 0.25; i's input gain 0.5·w_in = 1; gain = 0.25·r·1 = 0.75
    d = _lower(_cuba(tau_syn=2e-3, tau_mem=4e-3, r=3.0, w_in=2.0, v_th=1.0))
    assert d.gain == pytest.approx(0.75) and d.du == pytest.approx(0.5)
    assert d.dv == pytest.approx(0.25) and d.v_th == 1.0 and d.tau_steps == pytest.approx(4)
    assert d.reset == "zero" and not d.multi_spike


def test_norse_cuba_adds_input_unscaled():
    d = _lower(_cuba(tau_syn=2e-6, tau_mem=4e-6, r=3.0, w_in=2.0), CONVENTIONS["norse"])
    # into_i = 1 (w_in and dt/τ_syn unused); gain = g_mem·r = 0.25·3
    assert d.gain == pytest.approx(0.75) and d.du == pytest.approx(0.5)


def test_rockpool_cuba_decays_the_input_with_i():
    conv = CONVENTIONS["rockpool"]
    d = _lower(_cuba(tau_syn=2e-3, tau_mem=4e-3, r=7.0, w_in=5.0, v_th=1.0), conv)
    g_syn = 1 - math.exp(-0.5)
    # r ignored (1), exp decay: gain = r·(1 − g_syn) = e^{−1/2}
    assert d.gain == pytest.approx(1 - g_syn)
    assert d.du == pytest.approx(g_syn) and d.dv == pytest.approx(1 - math.exp(-0.25))
    assert d.reset == "subtract" and d.multi_spike and d.spike_ge


def test_exponential_cuba_with_w_in():
    conv = Convention("e", dt=1.0, exp_decay=True)
    d = _lower(_cuba(tau_syn=2.0, tau_mem=4.0, r=3.0, w_in=2.0), conv, dt=1.0)
    assert d.gain == pytest.approx(6.0)  # r·w_in: exp decay takes no leak in the gain


def test_cuba_li_never_spikes_and_resets_zero():
    node = nir.CubaLI(tau_syn=np.full(2, 2e-3), tau_mem=np.full(2, 4e-3), r=np.full(2, 2.0),
                      v_leak=np.zeros(2), w_in=np.ones(2))
    d = _lower(node)
    assert d.v_th is None and d.reset == "zero" and d.gain == pytest.approx(0.25)
    s = _lower(node, CONVENTIONS["rockpool"])
    assert s.reset == "zero" and not s.multi_spike and s.v_th is None
    sub = _lower(_cuba(), CONVENTIONS["rockpool"])
    assert sub.reset == "subtract" and sub.multi_spike


def test_cuba_refuses_v_leak():
    with pytest.raises(UnsupportedNodeError, match="v_leak != 0 in a current-based"):
        _lower(_cuba(v_leak=0.1))
    node = nir.CubaLI(tau_syn=np.full(2, 2e-3), tau_mem=np.full(2, 4e-3), r=np.ones(2),
                      v_leak=np.array([0.0, -0.2]), w_in=np.ones(2))
    with pytest.raises(UnsupportedNodeError):
        _lower(node)


def test_threshold_is_memoryless():
    d = _lower(nir.Threshold(threshold=np.full(3, 0.7)))
    assert (d.gain, d.dv, d.v_th, d.memoryless, d.spike_ge) == (1.0, 1.0, 0.7, True, False)
    assert d.du == 1.0 and d.reset == "zero"
    assert _lower(nir.Threshold(threshold=np.full(3, 0.7)), CONVENTIONS["spikingjelly"]).spike_ge


def test_ignore_r_takes_weight_one():
    conv = Convention("r", dt=1e-3, ignore_r=True)
    assert _lower(_lif(tau=2e-3, r=9.0), conv).gain == pytest.approx(0.5)
    node = nir.IF(r=np.full(2, 9.0), v_threshold=np.ones(2), v_reset=np.zeros(2))
    assert _lower(node, conv).gain == pytest.approx(1e-3)


def test_dynamics_are_identity_objects_usable_as_keys():
    # bias is an array: value equality/hash would be ill-defined, so Dynamics compare by
    # identity (eq=False), and can key a dict or sit in a set
    a = Dynamics(gain=1.0, dv=0.5, v_th=1.0, bias=np.array([0.1, 0.2]))
    b = Dynamics(gain=1.0, dv=0.5, v_th=1.0, bias=np.array([0.1, 0.2]))
    assert a != b and a == a and len({a, b}) == 2 and {a: 1}[a] == 1


def test_uniform_tolerance_is_relative_to_the_first_value():
    # allclose(arr, arr[0]): |x − first| <= 1e-8 + 1e-5·|first|; 10.0001 > 10.00000001
    with pytest.raises(UnsupportedNodeError):
        uniform("n", "v_threshold", [1e6, 1e6 + 10.0001])
    assert uniform("n", "v_threshold", [1e6, 1e6 + 9.99]) == 1e6


def test_a_ternary_node_is_its_true_lif_marked_ternary():
    from lrfdyn.nir_types import ternary_node

    node = ternary_node(np.full(2, 2e-3), np.full(2, 0.5))
    assert np.isnan(node.v_leak).all()  # the carrier is poisoned for readers without the mark
    d = _lower(node)
    # the true LIF: τ = 2 ms, r = 1, v_leak = 0, so dt/τ = 0.5 is the gain and the decay;
    # +θ = 0.5 (−θ is the lower threshold)
    assert d.ternary and d.v_th == 0.5
    assert d.gain == pytest.approx(0.5) and d.dv == pytest.approx(0.5)
    assert d.bias.tolist() == [0.0, 0.0]
    assert not _lower(_lif()).ternary


def test_the_shared_conventions_cannot_be_changed_in_place():
    import dataclasses

    # every lowering reads the same registry entries: one caller's edit would leak
    with pytest.raises(dataclasses.FrozenInstanceError):
        CONVENTIONS["snntorch"].reset = "zero"
    assert CONVENTIONS["snntorch"] == convention("snntorch")
