"""The Loihi 2 resource model, ``deploy --dry-run``, and ``deploy`` without hardware."""

from __future__ import annotations

import json
import math
import multiprocessing
import time

import numpy as np
import pytest
import scipy.sparse as sp

from lrfdyn.cli import main
from lrfdyn.errors import ResourceError, ValidationError
from lrfdyn.loihi import fixed
from lrfdyn.loihi.hardware import loihi2_status
from lrfdyn.loihi.layers import ConvMap
from lrfdyn.loihi.ir import InputSpec, LoweredNetwork, NeuronGroup, RelayParams, SynapseSpec
from lrfdyn.loihi.lower import lower
from lrfdyn.loihi.resources import LOIHI2, Loihi2Limits, map_to_cores, require_fit
from lrfdyn.sim.report import memory_bits
from lrfdyn.sim.simulate import read_graph


def chain(sizes: list[int]) -> LoweredNetwork:
    """input (sizes[0]) → group g1 (sizes[1]) → … with all-zero Dense weights, no delays."""
    params = fixed.LifParams(du=fixed.DECAY_UNITY - 1, dv=0, vth=64)
    groups, synapses, src = {}, [], "input"
    for i, n in enumerate(sizes[1:], start=1):
        name = f"g{i}"
        groups[name] = NeuronGroup(name=name, size=n, params=params, latency=i)
        synapses.append(SynapseSpec(name=f"s{i}", src=src, dst=name, weight_exp=0,
                                    weights=np.zeros((n, sizes[i - 1]), np.int8)))
        src = name
    return LoweredNetwork(input=InputSpec("input", sizes[0], 1, 4), groups=groups,
                          synapses=synapses, output=src, dt=1e-3)


def test_cores_follow_from_neuron_count_and_synaptic_memory() -> None:
    net = chain([4, 10_000, 100])
    m = {layer.name: layer for layer in map_to_cores(net).layers}
    # g1: 10,000 neurons with 4 inputs each: 8,192 neurons per core sets the count.
    assert m["g1"].bits_per_neuron == 2 * 24 + 4 * 8 + 16
    assert (m["g1"].cores_for_neurons, m["g1"].cores, m["g1"].limited_by) == (2, 2, "neurons")
    # g2: 100 neurons with 10,000 inputs each: 80,064 bits per neuron, so a 192 KB core
    # (1,572,864 bits) holds 19 of them and 100 neurons need ⌈100 / 19⌉ = 6 cores.
    assert m["g2"].bits_per_neuron == 2 * 24 + 10_000 * 8 + 16 == 80_064
    assert 192 * 1024 * 8 // 80_064 == 19
    assert (m["g2"].cores_for_memory, m["g2"].cores, m["g2"].limited_by) == (6, 6, "memory")
    result = map_to_cores(net)
    assert result.cores == 8 and result.fits_one_chip and result.chips == 1
    # Smaller cores need more of them: the limits are parameters, not constants.
    half = map_to_cores(net, Loihi2Limits(memory_bits_per_core=96 * 1024 * 8))
    assert {la.name: la.cores for la in half.layers}["g2"] == 100 // 9 + 1


def test_a_network_too_large_for_one_chip_says_so() -> None:
    net = chain([1, 1_100_000])
    result = map_to_cores(net)
    assert result.layers[0].cores == -(-1_100_000 // 8192) == 135
    assert not result.fits_one_chip and result.chips == 2
    assert any("135 cores" in p for p in result.problems)
    assert any("1,100,000 neurons" in p for p in result.problems)
    with pytest.raises(ResourceError, match="does not fit one Loihi 2 chip"):
        require_fit(result)


def test_a_neuron_whose_fan_in_exceeds_a_core_is_reported() -> None:
    result = map_to_cores(chain([200_000, 2]))  # 1.6 Mbit of weights per neuron
    assert not result.fits_one_chip
    assert any("g1: one neuron needs" in p for p in result.problems)


def test_limits_are_validated_and_cite_their_sources() -> None:
    with pytest.raises(ValidationError, match="neurons_per_core must be a positive integer"):
        Loihi2Limits(neurons_per_core=0)
    limits = LOIHI2.to_dict()
    assert limits["cores_per_chip"]["value"] == 128
    assert limits["memory_bits_per_core"]["estimate"] is True
    assert all("Loihi 2" in v["source"] for v in limits.values())


def test_layer_memory_adds_up_to_memory_bits(digits_run) -> None:
    net = lower(read_graph(digits_run / "model.nir"))
    result = map_to_cores(net)
    assert (sum(la.state_bits for la in result.layers),
            sum(la.synaptic_bits for la in result.layers)) == memory_bits(net)


def test_deploy_dry_run_prints_the_mapping(capsys, digits_run) -> None:
    code = main(["deploy", str(digits_run / "model.nir"), "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0 and "cores 3 of 128: fits one Loihi 2 chip" in out
    code = main(["deploy", str(digits_run / "model.nir"), "--dry-run", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["cores"] == 3 and data["fits_one_chip"] is True
    assert [la["neurons"] for la in data["layers"]] == [48, 32, 10]
    assert data["chips"] == 1 and [la["chips"] for la in data["layers"]] == [[0]] * 3
    assert [la["cores"] for la in data["layers"]] == [1, 1, 1]
    assert data["synapses"] == sum(la["synapses"] for la in data["layers"]) > 0
    assert data["smallest_system"] == "Oheo Gulch"
    code = main(["deploy", str(digits_run / "model.nir"), "--dry-run", "--conv-storage",
                 "kernel", "--all-layers"])
    assert code == 0 and "conv kernels stored per core: kernel" in capsys.readouterr().out


@pytest.mark.skipif(loihi2_status()[0], reason="Loihi 2 is present")
def test_deploy_without_hardware_fails_in_one_line_within_a_second(capsys, digits_run) -> None:
    t0 = time.perf_counter()
    code = main(["deploy", str(digits_run / "model.nir"), "--samples", "2"])
    elapsed = time.perf_counter() - t0
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and elapsed < 1.0, elapsed
    assert len(err) == 1 and err[0].startswith("lrfdyn: error: cannot deploy:")
    assert "lava-loihi" in err[0]
    assert multiprocessing.active_children() == []


# ---------------------------------------------------------------- shared kernels, chips


LIF = fixed.LifParams(du=fixed.DECAY_UNITY - 1, dv=0, vth=64)


def conv_net(in_shape: tuple[int, int, int], kernel: np.ndarray, groups: int = 1,
             padding: tuple[int, int] = (0, 0), kind: str = "lif") -> LoweredNetwork:
    """input (C, H, W) → one conv synapse layer → group ``g`` (the conv's output)."""
    conv = ConvMap(kernel, in_shape, padding=padding, groups=groups)
    params = LIF if kind == "lif" else RelayParams()
    g = NeuronGroup(name="g", size=conv.n_out, params=params, latency=1,
                    shape=conv.out_shape, kind=kind, spiking=kind == "lif")
    syn = SynapseSpec(name="s", src="input", dst="g", weights=kernel, weight_exp=0, conv=conv)
    return LoweredNetwork(input=InputSpec("input", conv.n_in, 1, 4), groups={"g": g},
                          synapses=[syn], output="g", dt=1e-3)


def kernel_of(c_out: int, c_in: int, k: int) -> np.ndarray:
    return (np.arange(c_out * c_in * k * k).reshape(c_out, c_in, k, k) % 7 + 1).astype(np.int64)


@pytest.mark.parametrize("k, padding", [(1, (0, 0)), (3, (1, 1))])
def test_a_conv_stores_its_kernel_once_however_many_positions_while_it_fits_a_core(
        k: int, padding: tuple[int, int]) -> None:
    kernel = kernel_of(8, 4, k)
    for side in (2, 4, 8, 16):
        m = map_to_cores(conv_net((4, side, side), kernel, padding=padding))
        (layer,) = m.layers
        assert layer.cores == 1 and layer.neurons == 8 * side * side
        assert layer.weights == layer.synapses == m.synapses == kernel.size
        assert layer.inputs[0].copies == 1.0 and layer.inputs[0].kind == "conv"
        # 24-bit u and v, 8 bits per kernel weight once, a 16-bit buffer per neuron.
        assert layer.core_bits == layer.neurons * (48 + 16) + kernel.size * 8
        # The lowering's count (sim.report) is the same while one core holds the layer.
        assert layer.synaptic_bits == layer.neurons * 16 + kernel.size * 8


def test_a_conv_split_over_cores_stores_the_filters_each_core_uses() -> None:
    kernel = kernel_of(4, 16, 1)  # 1×1, 16 → 4 channels on 64×64: 4,096 neurons a channel
    net = conv_net((16, 64, 64), kernel)
    # 8,192 neurons a core: two cores, each with two whole channels: the kernel once.
    two = map_to_cores(net).layers[0]
    assert (two.cores, two.synapses, two.inputs[0].copies) == (2, kernel.size, 1.0)
    # 6,000 neurons a core: cores hold channels {0,1}, {1,2}, {2,3}: six 16-weight filters.
    limits = Loihi2Limits(neurons_per_core=6000)
    three = map_to_cores(net, limits).layers[0]
    assert three.cores == 3 and three.synapses == 6 * 16 == 96
    assert three.inputs[0].copies == 1.5
    # The conservative rule: a whole kernel on each of the c cores, c copies.
    whole = map_to_cores(net, limits, conv_storage="kernel")
    assert whole.layers[0].cores == 3 and whole.synapses == 3 * kernel.size
    assert whole.layers[0].inputs[0].copies == 3.0 and whole.conv_storage == "kernel"
    assert whole.to_dict()["conv_storage"] == "kernel"
    with pytest.raises(ValidationError, match="conv_storage"):
        map_to_cores(net, conv_storage="per_position")


def test_a_depthwise_kernel_is_stored_per_channel_on_the_cores_holding_it() -> None:
    kernel = kernel_of(8, 1, 3)  # depthwise 3×3 over 8 channels of 32×32: 8,192 neurons
    net = conv_net((8, 32, 32), kernel, groups=8, padding=(1, 1))
    limits = Loihi2Limits(neurons_per_core=2048)  # four cores of two channels each
    layer = map_to_cores(net, limits).layers[0]
    assert layer.cores == 4 and layer.synapses == kernel.size == 72
    layer = map_to_cores(net, limits, conv_storage="kernel").layers[0]
    assert layer.synapses == 4 * 72


def test_memory_sets_a_conv_layers_cores_from_its_fullest_core() -> None:
    # 1×1 conv 512 → 512 on 4×4 (16 positions a channel, 8,192 neurons): a core of m
    # neurons costs 64 bits a neuron (u, v, buffer) and 4,096 bits (512 weights) for each
    # channel it touches. A 64 KB core (524,288 bits) holds m = 1,632 = 102 whole channels
    # (522,240 bits); m = 1,633 would touch 103 channels (526,400 bits).
    kernel = kernel_of(512, 512, 1)
    net = conv_net((512, 4, 4), kernel)
    limits = Loihi2Limits(memory_bits_per_core=64 * 1024 * 8)
    layer = map_to_cores(net, limits).layers[0]
    assert layer.limited_by == "memory" and layer.neurons_per_core == 1632
    assert layer.max_core_bits == 1632 * 64 + 102 * 4096 == 522_240
    assert 1633 * 64 + 103 * 4096 > limits.memory_bits_per_core
    assert layer.cores == layer.cores_for_memory == -(-8192 // 1632) == 6
    assert layer.synapses == kernel.size  # 8,192 = 5 · 1,632 + 32: no channel is cut
    # Whole kernels would not fit a 64 KB core at all: 2 Mbit each.
    assert any("one neuron needs" in p
               for p in map_to_cores(net, limits, conv_storage="kernel").problems)


def test_sparse_layers_are_split_by_target_rows() -> None:
    rows = [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 1]]
    w = sp.csr_matrix(np.array(rows, np.int8))
    g = NeuronGroup(name="g", size=5, params=LIF, latency=1)
    net = LoweredNetwork(input=InputSpec("input", 4, 1, 4), groups={"g": g},
                         synapses=[SynapseSpec(name="s", src="input", dst="g", weights=w,
                                               weight_exp=0)], output="g", dt=1e-3)
    layer = map_to_cores(net, Loihi2Limits(neurons_per_core=2)).layers[0]
    assert layer.cores == 3 and layer.synapses == layer.weights == w.nnz == 11
    # rows {0,1}: 3 non-zeros, {2,3}: 7, {4}: 1.
    assert layer.max_core_bits == 2 * (48 + 16) + 7 * 8


def test_relays_are_neurons_with_one_24_bit_state_value() -> None:
    kernel = kernel_of(2, 2, 1)
    relay = map_to_cores(conv_net((2, 4, 4), kernel, kind="relay")).layers[0]
    lif = map_to_cores(conv_net((2, 4, 4), kernel)).layers[0]
    assert relay.kind == "relay" and relay.cores == 1 and relay.neurons == 32
    assert relay.state_bits == 32 * 24 and lif.state_bits == 32 * 48
    assert relay.bits_per_neuron == 24 + 16 + math.ceil(kernel.size * 8 / 32)
    assert lif.bits_per_neuron == relay.bits_per_neuron + 24


def test_a_network_bigger_than_a_chip_is_partitioned_in_network_order() -> None:
    # 100 neurons a core, 4 cores a chip: g1 3 cores, g2 2, g3 5, g4 1.
    limits = Loihi2Limits(neurons_per_core=100, cores_per_chip=4)
    result = map_to_cores(chain([10, 250, 150, 500, 50]), limits)
    layers = {la.name: la for la in result.layers}
    assert [layers[g].cores for g in ("g1", "g2", "g3", "g4")] == [3, 2, 5, 1]
    assert layers["g1"].chips == [0]
    assert layers["g2"].chips == [1]  # does not fit chip 0's last core: a chip of its own
    assert layers["g3"].chips == [1, 2]  # larger than a chip: chip 1's free cores, then 2
    assert layers["g3"].placement == [{"chip": 1, "cores": 2}, {"chip": 2, "cores": 3}]
    assert layers["g4"].chips == [2]
    assert result.chips == 3 and result.cores == 11 and not result.fits_one_chip
    assert [c["cores"] for c in result.chip_usage] == [3, 4, 4]
    assert any("partitioned onto 3 chips" in p for p in result.problems)
    systems = {s["name"]: s["fits"] for s in result.systems}
    assert systems == {"Oheo Gulch": False, "Kapoho Point": True, "Hala Point": True}
    assert result.smallest_system == "Kapoho Point"
    text = result.summary()
    assert "needs 3 chips" in text and "chip 2: 4 cores" in text
    assert "smallest system: Kapoho Point (8 chips)" in text


def test_the_chip_neuron_limit_splits_a_layer_before_its_cores_run_out() -> None:
    # 8,192-neuron cores: 122 of them hold 999,424 neurons, one chip's million.
    layer = map_to_cores(chain([1, 1_100_000])).layers[0]
    assert layer.chips == [0, 1]
    assert layer.placement == [{"chip": 0, "cores": 122}, {"chip": 1, "cores": 13}]


def test_the_mapping_serialises_with_per_layer_cores_and_chips() -> None:
    net = chain([4, 10_000, 100])
    data = json.loads(json.dumps(map_to_cores(net).to_dict()))
    for key in ("cores", "chips", "neurons", "synapses", "weights", "fits_one_chip",
                "problems", "systems", "smallest_system", "chip_usage", "layers", "limits",
                "conv_storage", "sharing_sources"):
        assert key in data, key
    assert (data["cores"], data["chips"], data["synapses"]) == (8, 1, 4 * 10_000 + 10_000 * 100)
    assert data["smallest_system"] == "Oheo Gulch"
    assert [s["chips"] for s in data["systems"]] == [1, 8, 1152]
    assert all(s["source"] for s in data["systems"])
    for layer in data["layers"]:
        for key in ("name", "kind", "neurons", "weights", "synapses", "cores", "chips",
                    "placement", "inputs", "limited_by", "bits_per_neuron"):
            assert key in layer, key
        assert layer["chips"] == [0]
    assert [la["cores"] for la in data["layers"]] == [2, 6]
    assert data["layers"][1]["inputs"][0] == {"name": "s2", "src": "g1", "kind": "dense",
                                              "weights": 1_000_000, "synapses": 1_000_000,
                                              "copies": 1.0}
    assert any(s["estimate"] for s in data["sharing_sources"])


def test_the_summary_of_many_layers_stays_short() -> None:
    result = map_to_cores(chain([4] + [10] * 64 + [20_000]))
    text = result.summary()
    assert len(text.splitlines()) < 35
    assert "... 45 more layers" in text and "g65" in text  # the biggest layer is listed
    assert "lif: 65 groups" in text
    assert text.splitlines()[-1].startswith("cores 67 of 128")
    assert len(result.summary(max_layers=None).splitlines()) > 65
