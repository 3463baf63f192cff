"""Dendritic mode: token streams through k·d compartments, against the float model and Lava."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lrfdyn.errors import LoihiRangeError, UnsupportedNodeError
from lrfdyn.loihi import fixed
from lrfdyn.loihi.dendritic import PROD, Z, lower_dendritic
from lrfdyn.loihi.lower import lower
from lrfdyn.sim.reference import SynapseLayer, run_reference
from lrfdyn.sim.streams import lower_both, run_hybrid_reference, run_streams


@pytest.fixture(scope="module")
def tiny(tiny_lrf_dyn):
    model, graph = tiny_lrf_dyn
    net, blocks = lower_both(graph)
    return model, graph, net, blocks[0]


def _streams(block, n: int, seed: int = 0, density: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((n, block.tokens, block.d)) < density).astype(np.int64)


def test_stream_structure(tiny) -> None:
    _, _, net, block = tiny
    assert (block.d, block.k, block.grid) == (6, 3, (7, 7))
    assert block.compartments == 18
    assert block.relays, "a 7×7 grid with dilation 5 needs relays"
    assert all(0 <= la.delay <= fixed.MAX_DELAY for la in block.layers)
    assert block.u_group == "blocks.0.attn.v_lif" and block.out_group == "blocks.0.attn.attn_lif"


def test_z_follows_the_float_model(tiny) -> None:
    """z/scale equals BN(y + LRF(y)) of the PyTorch block, to quantization error."""
    model, _, _, block = tiny
    u = _streams(block, 4)
    z = run_streams(block, u, chained=False, record=lambda n: n == Z).z_tokens(block)
    attn = model.blocks[0].attn
    with torch.no_grad():
        ut = torch.as_tensor(u, dtype=torch.float64)
        y = attn.double().dendrites(ut)
        zf = y + attn.lrf(y, block.grid)
        zf = attn.bn(zf.reshape(-1, block.d)).reshape(zf.shape).numpy()
        attn.float()
    got = z / block.scales["z"]
    err = np.abs(got - zf).max() / np.abs(zf).max()
    assert err < 0.02, err
    # A stream is not a flat sequence: the taps must respect the grid's row ends.
    assert np.corrcoef(got.ravel(), zf.ravel())[0, 1] > 0.999


def test_chained_and_batched_streams_agree_on_every_token(tiny) -> None:
    _, _, _, block = tiny
    u = _streams(block, 5, seed=1)
    chained = run_streams(block, u, chained=True).z_tokens(block)
    batched = run_streams(block, u, chained=False).z_tokens(block)
    assert np.array_equal(chained, batched)


def test_reference_input_hook_reproduces_the_synapses(tiny) -> None:
    from lrfdyn.loihi.ir import bias_offset

    """Feeding a group through ``inputs`` with its own synapses changes nothing."""
    _, _, net, block = tiny
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (3, net.input.size))
    syns = [SynapseLayer(s, float(1 << 23), torch.device("cpu")) for s in net.incoming(block.out_group)]
    bias = np.ones((3, 1), np.int64)

    def same(current):
        return sum(layer(torch.as_tensor(bias if bias_offset(layer.spec.src) is not None
                                         else current[layer.spec.src])).numpy() for layer in syns)

    plain = run_reference(net, x)
    hooked = run_reference(net, x, inputs={block.out_group: same})
    assert all(np.array_equal(plain[g], hooked[g]) for g in net.groups)


def test_hybrid_run_records_the_streams(tiny) -> None:
    _, _, net, block = tiny
    x = np.random.default_rng(3).integers(0, 256, (2, net.input.size))
    run = run_hybrid_reference(net, [block], x)
    assert run.streams[block.name].shape == (2 * net.input.timesteps, block.tokens, block.d)
    assert set(run.spikes) == set(net.groups)


def test_lava_streams_are_bit_exact(tiny) -> None:
    """Every process, every neuron, every step; and the compartments are exactly k·d."""
    from lrfdyn.sim.lava_run import run_streams_lava

    _, _, _, block = tiny
    u = _streams(block, 3, seed=4)
    want = run_streams(block, u, chained=True).values
    run = run_streams_lava(block, u, streams_per_sample=3)
    for name, values in want.items():
        diff = np.argwhere(run.spikes[name] != values)
        assert len(diff) == 0, f"{name}: first mismatch (stream, step, neuron) {diff[0]}"
    assert any(np.abs(v).max() > 0 for v in want.values())
    compartments = [size for kind, size in run.processes.values()
                    if kind == "DendriteCompartments"]
    assert compartments == [block.k * block.d]
    # The check can fail: a reference whose row masks are off disagrees, at a product neuron.
    wrong = block.masks.copy()
    block.masks = {c: np.roll(m, 1) for c, m in wrong.items()}
    try:
        moved = run_streams(block, u, chained=True).values
    finally:
        block.masks = wrong
    bad = [n for n in moved if not np.array_equal(run.spikes[n], moved[n])]
    assert bad and all(n.startswith(PROD) or n.startswith("relay") or n == Z for n in bad)


def test_graph_without_dendrite_is_refused(hand_graph) -> None:
    with pytest.raises(UnsupportedNodeError, match="no LRF-Dyn dendrite"):
        lower_dendritic(hand_graph, lower(hand_graph))


def test_graded_overflow_is_caught_before_lava(tiny) -> None:
    _, _, _, block = tiny
    readout = next(la for la in block.layers if la.name == "readout")
    saved = readout.weight_exp
    readout.weight_exp = saved + 8  # 256× too large a soma value
    try:
        with pytest.raises(LoihiRangeError, match="exceeds 24 bits"):
            run_streams(block, np.ones((1, block.tokens, block.d), np.int64))
    finally:
        readout.weight_exp = saved


@pytest.mark.slow
def test_paper_grid_needs_two_relay_levels_and_stays_exact() -> None:
    """14×14 tokens (the paper's N = 196): taps up to ±75 tokens, relays of relays."""
    from lrfdyn.export.to_nir import model_to_nir
    from lrfdyn.sim.lava_run import run_streams_lava
    from lrfdyn.train.models import build_model

    torch.manual_seed(1)
    model = build_model("spikformer", dict(
        img_size=28, in_channels=1, num_classes=4, dim=4, depth=1, heads=2, timesteps=1,
        k_dendrites=2, stem_strides=[1, 2], attention="lrf_dyn", lrf_dilations=[3, 5])).eval()
    _, (block,) = lower_both(model_to_nir(model, (1, 28, 28), 1))
    assert block.grid == (14, 14) and any(r.startswith("relay.relay.") for r in block.relays)
    u = _streams(block, 2)
    want = run_streams(block, u, chained=True).values
    run = run_streams_lava(block, u, streams_per_sample=2)
    assert all(np.array_equal(run.spikes[n], v) for n, v in want.items())


def test_cli_refuses_a_graph_without_dendrite_in_one_line(hand_graph, tmp_path, capsys) -> None:
    import nir

    from lrfdyn.cli import main

    path = tmp_path / "mlp.nir"
    nir.write(path, hand_graph)
    for argv in (["simulate", str(path), "--mode", "dendritic"],
                 ["profile", str(path), "--memory", "--out", str(tmp_path / "m")]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "no LRF-Dyn dendrite" in err[0]
    assert not (tmp_path / "m").exists()
