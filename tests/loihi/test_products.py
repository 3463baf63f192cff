"""SSA and LRF-SSA: products of spikes as Loihi integers, through NIR, spike-exact on Lava."""

from __future__ import annotations

import multiprocessing

import nir
import numpy as np
import pytest
import torch

from lrfdyn.errors import LoihiRangeError, NIRFileError
from lrfdyn.export.from_nir import run_float
from lrfdyn.export.to_nir import model_to_nir, write_nir
from lrfdyn.loihi.lower import lower
from lrfdyn.nir_types import EXTENSION_KEY, EXTENSIONS_USED, GRADED
from lrfdyn.sim.reference import run_reference
from lrfdyn.memory_models import trained_like
from lrfdyn.sim.report import first_mismatches
from lrfdyn.sim.simulate import read_graph
from lrfdyn.train.models import build_model

TINY = dict(img_size=14, in_channels=1, num_classes=4, dim=4, depth=1, heads=2, timesteps=2,
            stem_strides=[1, 2], lrf_dilations=[3, 5])
BLOCK = "blocks.0.attn"
#: A seed whose random tiny models have varied tokens and an active gate (checked below).
SEED = 3


def _tiny(attention: str, seed: int = 0):
    """An untrained tiny model whose Q, K, V and gate all fire (loud stem and BNs), with
    tokens that differ from each other."""
    torch.manual_seed(seed)
    model = build_model("spikformer", {**TINY, "attention": attention}).eval()
    trained_like(model, seed)  # BN statistics as after training
    with torch.no_grad():
        for bn in model.modules():
            if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm):
                bn.weight.mul_(5.0)
        for kind in ("q", "k", "v"):
            getattr(model.blocks[0].attn, kind).bn.bias.add_(1.0)
    return model


@pytest.fixture(scope="module", params=["ssa", "lrf_ssa"])
def exported(request, tmp_path_factory):
    model = _tiny(request.param, SEED)
    path = tmp_path_factory.mktemp(request.param) / "model.nir"
    write_nir(model_to_nir(model, (1, 14, 14), TINY["timesteps"]), path)
    x = np.random.default_rng(1).integers(0, 256, size=(3, 196))
    return request.param, model, read_graph(path), x


def test_the_file_marks_its_extension_and_poisons_readers_that_ignore_it(exported) -> None:
    _, _, graph, _ = exported
    assert graph.metadata[EXTENSIONS_USED] == f"{GRADED}/1"
    marked = {n: node for n, node in graph.nodes.items()
              if (node.metadata or {}).get(EXTENSION_KEY) == GRADED}
    assert set(marked) == {f"{BLOCK}.kv_count", f"{BLOCK}.qm"}
    assert bool(marked[f"{BLOCK}.qm"].metadata["rectify"])
    assert not bool(marked[f"{BLOCK}.kv_count"].metadata["rectify"])
    # A reader that runs the carrier as the Scale it is computes NaN, never a plausible sum.
    for node in marked.values():
        assert isinstance(node, nir.Scale) and np.isnan(node.scale).all()


def test_an_unknown_extension_is_refused_in_one_line(exported, tmp_path) -> None:
    _, _, graph, _ = exported
    graph.nodes[f"{BLOCK}.qm"].metadata[EXTENSION_KEY] = "product"
    path = tmp_path / "future.nir"
    write_nir(graph, path)
    with pytest.raises(NIRFileError, match="extension 'product'.*knows 'graded'") as err:
        read_graph(path)
    assert "\n" not in str(err.value)
    graph.nodes[f"{BLOCK}.qm"].metadata[EXTENSION_KEY] = GRADED


def test_the_float_reimport_equals_the_trained_model(exported) -> None:
    """The NIR file alone reproduces the PyTorch model's output spikes exactly."""
    _, model, graph, x = exported
    images = x.reshape(-1, 1, 14, 14).astype(np.float32)
    with torch.no_grad():
        out, _ = model(torch.as_tensor(images) / 255.0)
    got = run_float(graph, images)  # (N, T, classes)
    assert np.array_equal(got, out.permute(1, 0, 2).numpy())


def test_the_gate_is_q_times_the_count_in_integers(exported) -> None:
    """``qm[n, (h, i, j)] = Q[n, h·dh+i] · Σ_m K[m, h·dh+i]·V[m, h·dh+j]``, recomputed here
    from the reference's own Q, K and V spikes (the network's products are never used)."""
    _, _, graph, x = exported
    net = lower(graph)
    ref = run_reference(net, x)
    heads, d = TINY["heads"], TINY["dim"]
    dh, n_tok = d // heads, 49
    q, k, v = (ref[f"{BLOCK}.{kind}_lif"].reshape(len(x), -1, d, n_tok)
               for kind in ("q", "k", "v"))
    want = np.zeros((len(x), q.shape[1], heads, dh, dh, n_tok), np.int64)
    for h in range(heads):
        for i in range(dh):
            for j in range(dh):
                count = (k[:, :, h * dh + i] & v[:, :, h * dh + j]).sum(axis=-1)
                want[:, :, h, i, j] = q[:, :, h * dh + i] * count[..., None]
    got = ref[f"{BLOCK}.qm"].reshape(want.shape)
    assert len(np.unique(want)) > 3, "the fixture's gate barely opens: a weak check"
    assert np.array_equal(got, want)
    assert net.groups[f"{BLOCK}.qm"].params.rectify
    assert not net.groups[f"{BLOCK}.kv_count"].params.rectify


def test_a_gate_weight_beyond_8_bits_is_refused_not_rounded() -> None:
    """The gate's weight is the token count; beyond 254 it cannot stay exact."""
    model = build_model("spikformer", {**TINY, "img_size": 32, "stem_strides": [1, 1],
                                       "attention": "ssa"})
    graph = model_to_nir(model, (1, 32, 32), TINY["timesteps"])  # 1,024 tokens
    with pytest.raises(LoihiRangeError, match="qm.*beyond Loihi's 8 bits"):
        lower(graph)


def test_lava_equals_the_reference_at_every_neuron_and_step(exported) -> None:
    from lrfdyn.sim.lava_run import run_lava

    _, _, graph, x = exported
    net = lower(graph)
    ref = run_reference(net, x, net.steps_per_sample(), lava_window=True)
    counts, first = first_mismatches(run_lava(net, x).spikes, ref, net)
    assert sum(counts.values()) == 0, first
    for g in (f"{BLOCK}.kv", f"{BLOCK}.kv_count", f"{BLOCK}.qm", f"{BLOCK}.attn_lif"):
        assert np.count_nonzero(ref[g]), f"{g} is silent: the check would compare zeros"
    assert multiprocessing.active_children() == []


@pytest.mark.slow
def test_a_gate_one_step_late_on_lava_is_caught_at_the_gate() -> None:
    """Q reaches the gate one step late on Lava only (its delay relay holds it a step
    longer): the check names that relay and the gate, and nothing upstream of them."""
    from lrfdyn.sim.lava_run import run_lava

    model = _tiny("ssa", SEED)
    net = lower(model_to_nir(model, (1, 14, 14), TINY["timesteps"]))
    x = np.random.default_rng(1).integers(0, 256, size=(2, 196))
    ref = run_reference(net, x, net.steps_per_sample(), lava_window=True)
    # The conv into the gate has no delay of its own; Q's delay relay carries it.
    (into_gate,) = [s for s in net.synapses if s.dst == f"{BLOCK}.qm" and s.port == "a_in"
                    and s.src.startswith(f"{BLOCK}.q_lif")]
    assert into_gate.conv is not None and into_gate.delay == 0
    (late,) = [s for s in net.synapses if s.dst == into_gate.src]
    late.delay += 1
    counts, first = first_mismatches(run_lava(net, x).spikes, ref, net)
    # The first disagreement is Q's late copy, then the gate it feeds; nothing before.
    assert first is not None and first.layer == into_gate.src, first
    assert counts[f"{BLOCK}.qm"] > 0
    upstream = [g for g in net.groups if net.groups[g].latency < net.groups[into_gate.src].latency]
    assert f"{BLOCK}.q_lif" in upstream and not any(counts[g] for g in upstream)
    assert multiprocessing.active_children() == []


def test_a_relay_shifting_by_one_keeps_its_rounding_offset() -> None:
    """A shifter with exp = 1 adds half a unit before its floor: the one-unit bias must
    survive quantization (rounded to even, it used to become 0)."""
    from lrfdyn.loihi.ir import RelayParams

    ones = np.ones((1, 2, 2))
    nodes = {"input": nir.Input(input_type={"input": np.array([1, 3, 3])}),
             "c": nir.Conv2d(input_shape=(3, 3), weight=np.ones((1, 1, 2, 2)), stride=1,
                             padding=0, dilation=1, groups=1, bias=np.zeros(1)),
             "l1": nir.LIF(tau=2e-3 * ones, r=ones, v_leak=0 * ones, v_threshold=ones,
                           v_reset=0 * ones),
             "output": nir.Output(output_type={"output": np.array([1, 2, 2])})}
    graph = nir.NIRGraph(nodes=nodes, edges=[("input", "c"), ("c", "l1"), ("l1", "output")],
                         metadata={"dt": 1e-3, "timesteps": 4, "input_levels": 255})
    net = lower(graph)
    assert net.groups["l1.in"].params == RelayParams(1, True)
    (bias,) = [s for s in net.synapses if s.name == "l1.in.bias"]
    assert np.asarray(bias.effective()).ravel().tolist() == [1] * 4
