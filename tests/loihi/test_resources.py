"""The Loihi 2 resource model, ``deploy --dry-run``, and ``deploy`` without hardware."""

from __future__ import annotations

import json
import multiprocessing
import time

import numpy as np
import pytest

from lrfdyn.cli import main
from lrfdyn.errors import ResourceError, ValidationError
from lrfdyn.loihi import fixed
from lrfdyn.loihi.hardware import loihi2_status
from lrfdyn.loihi.lower import InputSpec, LoweredNetwork, NeuronGroup, SynapseSpec, lower
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
