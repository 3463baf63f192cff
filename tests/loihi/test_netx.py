"""Cross-check of the lowering against Intel's own loader, lava-dl netx.

A small chain (64 → 32 → 16 → 10 LIF, T = 6) is lowered from a hand-built NIR
graph, written by :func:`lrfdyn.loihi.netx.write_netx`, loaded with
``lava.lib.dl.netx.hdf5.Network`` and run in Lava ``fixed_pt``. Its spikes must
equal lrfdyn's own Lava run (:func:`lrfdyn.sim.lava_run.run_lava`) and the
integer reference (:func:`lrfdyn.sim.reference.run_reference`) at every step.

Alignment found (netx adds no delay of its own): with ``R = steps_per_sample``
steps per sample run back to back, netx layer ``k`` (0-based) at within-sample
step ``s`` equals lrfdyn's Lava group ``k`` at step ``s`` and the reference at
step ``s − (k + 1)``, for ``k + 1 ≤ s < R`` — exactly lrfdyn's latency. In the
first ``k + 1`` steps of a block, lrfdyn's host reset leaves zeros, while netx
(reset by its own ``reset_interval``) still shows the previous sample's tail;
those steps carry no input of the sample and are checked to be empty on the
lrfdyn side only.

Biases: netx's neuron bias acts from step 1; loaded with netx's own periodic
reset (:func:`lrfdyn.loihi.netx.loader_kwargs`) it equals lrfdyn's delayed bias
synapse exactly, and a control run without that reset differs. Graded 8-bit
pixels (weight_exp = -8) have no netx synapse; the file then starts at the first
group's neuron and the pixel and bias synapses run as plain Lava Dense outside it.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import nir
import numpy as np
import pytest

import lrfdyn.loihi.compat  # noqa: F401  (must precede every lava import)
from lrfdyn.errors import UnsupportedNodeError
from lrfdyn.loihi.netx import input_synapses, loader_kwargs, write_netx
from lrfdyn.loihi.build import input_schedule
from lrfdyn.loihi.ir import BIAS_SOURCE, LoweredNetwork
from lrfdyn.loihi.lower import lower
from lrfdyn.sim.lava_run import run_lava
from lrfdyn.sim.reference import run_reference

from lava.magma.core.run_conditions import RunSteps  # noqa: E402
from lava.magma.core.run_configs import Loihi2SimCfg  # noqa: E402
from lava.proc.dense.process import Dense  # noqa: E402
from lava.proc.io.sink import RingBuffer as Sink  # noqa: E402
from lava.proc.io.source import RingBuffer as Source  # noqa: E402

SIZES = [64, 32, 16, 10]
T = 6
N_SAMPLES = 4


def _graph(bias_scale: float = 0.0, levels: int = 1, skip: bool = False) -> nir.NIRGraph:
    """A random-but-fixed chain of Affine + LIF nodes (tau = 2 steps), no training."""
    rng = np.random.default_rng(0)
    nodes: dict[str, nir.NIRNode] = {"input": nir.Input(input_type={"input": np.array([SIZES[0]])})}
    edges = []
    prev = "input"
    for i, (a, b) in enumerate(zip(SIZES[:-1], SIZES[1:])):
        nodes[f"fc{i}"] = nir.Affine(
            weight=rng.normal(0.0, 4.0 / np.sqrt(a), (b, a)),
            bias=rng.normal(0.0, bias_scale, b) if bias_scale else np.zeros(b),
        )
        nodes[f"lif{i}"] = nir.LIF(
            tau=np.full(b, 2e-3), r=np.ones(b), v_leak=np.zeros(b),
            v_threshold=np.ones(b), v_reset=np.zeros(b),
        )
        edges += [(prev, f"fc{i}"), (f"fc{i}", f"lif{i}")]
        prev = f"lif{i}"
    if skip:  # a shortcut input -> last layer: lowering delays it, netx cannot express it
        nodes["fc_skip"] = nir.Affine(
            weight=rng.normal(0.0, 1.0 / 8, (SIZES[-1], SIZES[0])), bias=np.zeros(SIZES[-1])
        )
        edges += [("input", "fc_skip"), ("fc_skip", prev)]
    nodes["output"] = nir.Output(output_type={"output": np.array([SIZES[-1]])})
    edges.append((prev, "output"))
    return nir.NIRGraph(
        nodes=nodes, edges=edges,
        metadata={"dt": 1e-3, "timesteps": T, "input_levels": levels},
    )


def _inputs(levels: int = 1) -> np.ndarray:
    rng = np.random.default_rng(1)
    if levels == 1:
        return (rng.random((N_SAMPLES, SIZES[0])) < 0.3).astype(np.int64)
    return rng.integers(0, levels + 1, (N_SAMPLES, SIZES[0]))


def _run_netx(path: Path, net: LoweredNetwork, x: np.ndarray, **kwargs) -> list[np.ndarray]:
    """Load ``path`` with netx, feed every sample back to back, return (N, R, size) per layer.

    In graded mode the file's input is the first layer's current: the synapses
    :func:`input_synapses` names run as plain Lava Dense processes into ``inp``.
    """
    from lava.lib.dl.netx.hdf5 import Network

    steps = net.steps_per_sample()
    netx = Network(net_config=str(path), **{**loader_kwargs(net), **kwargs})
    assert len(netx.layers) == len(net.groups), str(netx)
    source = Source(data=input_schedule(net, x))
    external = input_synapses(net)
    if external:
        sources = {net.input.name: source,
                   BIAS_SOURCE: Source(data=np.ones((1, len(x) * steps), np.int32))}
        for syn in external:
            dense = Dense(weights=syn.weights.astype(np.int32), weight_exp=syn.weight_exp,
                          num_message_bits=syn.num_message_bits)
            sources[syn.src].s_out.connect(dense.s_in)
            # netx's Input block leaves its own inp port unconnected ("input must be
            # handled through neuron's bias"), so the current goes to its neuron.
            dense.a_out.connect(netx.layers[0].neuron.a_in)
    else:
        source.s_out.connect(netx.inp)
    sinks = []
    for layer in netx.layers:
        sink = Sink(shape=layer.out.shape, buffer=len(x) * steps)
        layer.out.connect(sink.a_in)
        sinks.append(sink)
    try:
        netx.run(condition=RunSteps(num_steps=len(x) * steps),
                 run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        return [s.data.get().T.reshape(len(x), steps, -1) != 0 for s in sinks]
    finally:
        netx.stop()


def _mismatches(name: str, got: np.ndarray, want: np.ndarray, first_step: int) -> list[str]:
    """Describe every differing (sample, step, neuron); steps are Lava within-sample steps."""
    bad = np.argwhere(got != want)
    return [
        f"layer {name}: sample {i}, Lava step {t + first_step}, neuron {j}: "
        f"netx {bool(got[i, t, j])} vs lrfdyn {bool(want[i, t, j])}"
        for i, t, j in bad[:10]
    ] + ([f"... {len(bad)} mismatches in all"] if len(bad) > 10 else [])


def _check_against_lrfdyn(
    net: LoweredNetwork, x: np.ndarray, netx: list[np.ndarray], lava: dict | None
) -> dict[str, int]:
    steps = net.steps_per_sample()
    ref = run_reference(net, x, steps=steps)
    errors: list[str] = []
    counts = {}
    for k, (name, group) in enumerate(net.groups.items()):
        lat = group.latency
        assert lat == k + 1, f"{name}: latency {lat}, chain position {k}"
        window = netx[k][:, lat:]
        errors += _mismatches(name, window, ref[name][:, : steps - lat], lat)
        if lava is not None:
            errors += _mismatches(name, window, lava[name][:, lat:], lat)
            assert not lava[name][:, :lat].any(), f"{name}: lrfdyn spiked before its input"
        counts[name] = int(window.sum())
    assert not errors, "netx differs from lrfdyn:\n" + "\n".join(errors)
    # Not vacuous: every layer spikes in every sample, and no layer is saturated.
    for k, (name, group) in enumerate(net.groups.items()):
        per_sample = netx[k][:, group.latency:].sum(axis=(1, 2))
        assert per_sample.min() >= 1, f"{name} is silent in some sample: {per_sample}"
        assert counts[name] < 0.8 * netx[k][:, group.latency:].size, f"{name} saturates"
    return counts


@pytest.fixture(scope="module")
def chain() -> LoweredNetwork:
    return lower(_graph())


def test_netx_file_layout(chain: LoweredNetwork, tmp_path: Path) -> None:
    path = write_netx(chain, tmp_path / "net.h5")
    with h5py.File(path) as f:
        assert "netx" in f.attrs["format"]
        assert f.attrs["steps_per_sample"] == chain.steps_per_sample()
        layers = f["layer"]
        assert [layers[str(i)]["type"][0].decode() for i in range(len(layers))] == [
            "input", "dense", "dense", "dense"
        ]
        for i, (name, group) in enumerate(chain.groups.items(), start=1):
            neuron = layers[str(i)]["neuron"]
            assert neuron["iDecay"][()] == group.params.du + 1
            assert neuron["vDecay"][()] == group.params.dv
            assert neuron["vThMant"][()] == group.params.vth
            np.testing.assert_array_equal(layers[str(i)]["weight"][()],
                                          chain.incoming(name)[0].weights)
    assert not list(tmp_path.glob(".*.tmp")), "atomic write left a temporary file"


def test_netx_matches_lrfdyn_without_bias(chain: LoweredNetwork, tmp_path: Path) -> None:
    assert not chain.has_bias
    x = _inputs()
    netx = _run_netx(write_netx(chain, tmp_path / "net.h5"), chain, x)
    counts = _check_against_lrfdyn(chain, x, netx, run_lava(chain, x).spikes)
    assert counts["lif2"] >= 20, counts


def test_netx_matches_lrfdyn_with_bias(tmp_path: Path) -> None:
    """netx's neuron bias acts from step 1; its periodic reset makes it equal the delayed bias."""
    net = lower(_graph(bias_scale=1.0))
    assert net.has_bias
    x = _inputs()
    path = write_netx(net, tmp_path / "net.h5")
    with h5py.File(path) as f:
        assert all("bias" in f["layer"][str(i)] for i in (1, 2, 3))
    netx = _run_netx(path, net, x)
    _check_against_lrfdyn(net, x, netx, run_lava(net, x).spikes)

    # Control: without netx's reset, the bias integrates during the pipeline's fill
    # and the spikes differ. This is why lrfdyn lowers biases as delayed synapses.
    plain = _run_netx(path, net, x[:1], reset_interval=None, reset_offset=0)
    ref = run_reference(net, x[:1], steps=net.steps_per_sample())
    diff = sum(int((plain[k][:, g.latency:] != ref[n][:, : net.steps_per_sample() - g.latency])
                   .sum()) for k, (n, g) in enumerate(net.groups.items()))
    assert diff > 0


def test_netx_graded_input(tmp_path: Path) -> None:
    """Graded payloads reach netx's first Dense as lrfdyn's (weight_exp 0, 2 message bits)."""
    net = lower(_graph())
    net.input.levels = 3  # a graded source whose synapse keeps weight_exp = 0
    first = net.incoming(next(iter(net.groups)))[0]
    first.num_message_bits = net.input.num_message_bits
    assert first.num_message_bits == 2 and first.weight_exp == 0
    x = _inputs(levels=3)
    netx = _run_netx(write_netx(net, tmp_path / "net.h5"), net, x)
    _check_against_lrfdyn(net, x, netx, lava=None)


def test_netx_graded_pixels_with_bias(tmp_path: Path) -> None:
    """lrfdyn's real MLP input: 8-bit pixels, weight_exp = -8, biases on every group.

    netx cannot hold that first synapse, so the file's input layer is the first
    group's neuron and the pixel and bias synapses feed it from outside.
    """
    net = lower(_graph(bias_scale=1.0, levels=255))
    external = input_synapses(net)
    assert [s.weight_exp for s in external if s.src == net.input.name] == [-8]
    assert {s.src for s in external} == {net.input.name, BIAS_SOURCE}
    path = write_netx(net, tmp_path / "net.h5")
    with h5py.File(path) as f:
        assert f.attrs["input_mode"] == "graded"
        assert f["layer/0/type"][0].decode() == "input" and "neuron" in f["layer/0"]
        assert set(f["lrfdyn/input_synapses"]) == {s.name for s in external}
    x = _inputs(levels=255)
    netx = _run_netx(path, net, x)
    _check_against_lrfdyn(net, x, netx, run_lava(net, x).spikes)


def test_write_netx_refuses_inner_weight_exponent(tmp_path: Path) -> None:
    net = lower(_graph())
    net.synapses[1].weight_exp = 1  # a hidden synapse: netx has no weight exponent
    with pytest.raises(UnsupportedNodeError, match="weight_exp=1.*netx reads no weight exponent"):
        write_netx(net, tmp_path / "net.h5")
    assert not list(tmp_path.iterdir()), "a refused export must leave no file"


def test_write_netx_refuses_shortcuts(tmp_path: Path) -> None:
    net = lower(_graph(skip=True))
    with pytest.raises(UnsupportedNodeError, match="chain"):
        write_netx(net, tmp_path / "net.h5")
