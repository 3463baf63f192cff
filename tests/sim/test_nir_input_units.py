"""Unit tests of sim/nir_input.py beyond test_interop's: the integer input check, dt from
Rockpool's r far from the default step, and time-constant warnings of nodes with more
than one time constant. Expected values by hand; no Lava."""

from __future__ import annotations

import math

import nir
import numpy as np
import pytest

from lrfdyn.errors import ValidationError
from lrfdyn.loihi.neurons import NIR
from lrfdyn.sim.nir_input import (dt_from_r, integer_input, io_types_fixed,
                                  time_constant_warnings)

DT = 1e-3


@pytest.mark.parametrize("x", [[[0.0, 256.0]], [[-1.0, 3.0]], [[0.5, 2.0]]])
def test_input_outside_0_255_or_not_whole_is_refused_with_its_range(x):
    x = np.array(x)
    with pytest.raises(ValidationError) as err:
        integer_input(x)
    assert f"this input has values {x.min():g}..{x.max():g}" in str(err.value)
    assert str(err.value).startswith("--fixed needs integer input in 0..255")


def test_integer_input_and_its_levels():
    xi, levels = integer_input(np.array([[0.0, 3.0], [255.0, 7.0]]))
    assert xi.dtype == np.int64 and xi.tolist() == [[0, 3], [255, 7]] and levels == 255
    assert integer_input(np.array([[0.0, 1.0]]))[1] == 1  # spikes
    assert integer_input(np.zeros((2, 2)))[1] == 1  # silence: still one level


def _rockpool(tau: float, dt: float, n: int = 2) -> nir.NIRGraph:
    """A Rockpool-style CubaLIF whose r = τ·e^{−dt/τ}/dt encodes the producer's dt."""
    r = tau * math.exp(-dt / tau) / dt
    cuba = nir.CubaLIF(tau_syn=np.full(n, tau / 4), tau_mem=np.full(n, tau), r=np.full(n, r),
                       v_leak=np.zeros(n), v_threshold=np.ones(n), w_in=np.ones(n))
    return nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([n])}),
                               "lin": nir.Linear(weight=np.eye(n)), "lif": cuba,
                               "output": nir.Output(output_type={"output": np.array([n])})},
                        edges=[("input", "lin"), ("lin", "lif"), ("lif", "output")],
                        type_check=False)


@pytest.mark.parametrize("steps_per_tau", [0.01, 1.0, 10.0, 40.0])
def test_dt_is_recovered_from_r_from_a_hundredth_of_tau_to_forty_taus(steps_per_tau):
    tau = 0.02
    dt = steps_per_tau * tau  # up to 0.8 s: r = e^{−40}/40 ≈ 1e−19
    assert dt_from_r(_rockpool(tau, dt)) == pytest.approx(dt, rel=1e-5)


def test_no_dt_from_an_r_that_no_step_gives():
    tau = 0.02
    g = _rockpool(tau, 1e-3)
    g.nodes["lif"] = nir.CubaLIF(tau_syn=np.full(2, 0.005), tau_mem=np.full(2, tau),
                                 r=np.full(2, 1e10), v_leak=np.zeros(2),
                                 v_threshold=np.ones(2), w_in=np.ones(2))
    assert dt_from_r(g) is None  # r = τ·e^{−dt/τ}/dt < 1e9 for every dt ≥ 1e−9·τ


def test_every_time_constant_of_a_node_is_checked_not_only_tau():
    # CubaLIF has tau_syn and tau_mem but no tau: its slow tau_mem is still named
    cuba = nir.CubaLIF(tau_syn=np.full(2, 5e-3), tau_mem=np.full(2, 100.0), r=np.ones(2),
                       v_leak=np.zeros(2), v_threshold=np.ones(2), w_in=np.ones(2))
    g = _rockpool(0.02, DT)
    g.nodes["lif"] = cuba
    assert time_constant_warnings(g, NIR, DT) == [
        "lif: tau_mem/dt = 1e+05 (dt 0.001 s under convention nir), so the neuron barely "
        "leaks in a run; check --convention and --dt"]
    fast = nir.CubaLIF(tau_syn=np.full(2, 1e-4), tau_mem=np.full(2, 100.0), r=np.ones(2),
                       v_leak=np.zeros(2), v_threshold=np.ones(2), w_in=np.ones(2))
    g.nodes["lif"] = fast
    ws = time_constant_warnings(g, NIR, DT)
    assert [w.split(" = ")[0] for w in ws] == ["lif: tau_syn/dt", "lif: tau_mem/dt"]
    assert "forgets within one step" in ws[0] and "barely leaks" in ws[1]


def test_dt_from_the_r_of_a_single_neuron():
    assert dt_from_r(_rockpool(0.02, 2e-3, n=1)) == pytest.approx(2e-3, rel=1e-5)


def test_an_io_type_whose_last_axes_are_not_the_neighbours_is_left_alone():
    # (1, 5) before a Linear that reads 4: not a batch axis in front of 4, so no fix
    g = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([1, 5])}),
                            "lin": nir.Linear(weight=np.ones((2, 4))),
                            "lif": nir.LIF(tau=np.full(2, 0.01), r=np.ones(2),
                                           v_leak=np.zeros(2), v_threshold=np.ones(2),
                                           v_reset=np.zeros(2)),
                            "output": nir.Output(output_type={"output": np.array([2])})},
                     edges=[("input", "lin"), ("lin", "lif"), ("lif", "output")],
                     type_check=False)
    same, notes = io_types_fixed(g)
    assert notes == [] and same is g
    # (1, 4) is a batch axis in front of the 4 the Linear reads: read as (4,)
    g.nodes["input"] = nir.Input(input_type={"input": np.array([1, 4])})
    fixed_g, notes = io_types_fixed(g)
    assert list(fixed_g.nodes["input"].input_type["input"]) == [4] and len(notes) == 1
