"""The LRF-Dyn Spikformer through NIR to Lava: exact re-import, spike-exact lowering, refusals."""

from __future__ import annotations

import multiprocessing

import nir
import numpy as np
import pytest
import torch

from lrfdyn.sim.simulate import read_graph
from lrfdyn.cli import main
from lrfdyn.export.from_nir import run_float
from lrfdyn.export.transformer import token_kernel_2d
from lrfdyn.loihi.layers import conv2d_matrix
from lrfdyn.loihi.lower import lower
from lrfdyn.pipeline import checkpoint_to_nir
from lrfdyn.sim.simulate import simulate
from lrfdyn.train.checkpoint import load_checkpoint, save_checkpoint
from lrfdyn.train.data import load_dataset
from lrfdyn.train.models import build_model

SMALL = dict(img_size=8, in_channels=1, num_classes=10, dim=32, depth=1, heads=2,
             timesteps=3, token="kv", gate="q", stem_strides=[1, 2])


@pytest.fixture(scope="module")
def lrf_dyn_run(tmp_path_factory):
    """A tiny LRF-Dyn Spikformer trained 2 epochs on digits (so that its layers spike)."""
    from lrfdyn.train.trainer import TrainConfig, train

    out = tmp_path_factory.mktemp("lrf_dyn")
    model = {k: v for k, v in SMALL.items() if k not in ("img_size", "in_channels",
                                                          "num_classes")}
    train(TrainConfig(data="digits", arch="spikformer", epochs=2, out=str(out),
                      model={**model, "attention": "lrf_dyn"}), progress=False)
    graph = checkpoint_to_nir(out / "checkpoint.pt")
    nir.write(out / "model.nir", graph)
    return out


def test_token_kernel_2d_is_the_raster_causal_convolution() -> None:
    rng = np.random.default_rng(0)
    h, w, d = 3, 4, 2
    n = h * w
    kernel = rng.normal(size=(n, d))
    u = rng.normal(size=(d, h, w))
    conv = torch.nn.functional.conv2d(
        torch.as_tensor(u)[None], torch.as_tensor(token_kernel_2d(kernel, (h, w))),
        padding=(h - 1, w - 1), groups=d)[0].numpy()
    flat = u.reshape(d, n)
    want = np.stack([[sum(kernel[m, c] * flat[c, i - m] for m in range(i + 1)) for i in range(n)]
                     for c in range(d)])
    assert np.allclose(conv.reshape(d, n), want, atol=1e-12)


@pytest.mark.parametrize("stride,padding,dilation,groups", [
    (1, 1, 1, 1), (2, 1, 1, 1), (1, 3, 3, 4), (1, 0, 1, 2), (2, 2, 2, 4)])
def test_conv2d_matrix_equals_torch(stride, padding, dilation, groups) -> None:
    rng = np.random.default_rng(1)
    c_in, c_out, h, w = 4, 8, 7, 6
    weight = rng.normal(size=(c_out, c_in // groups, 3, 3))
    x = rng.normal(size=(c_in, h, w))
    mat, out_shape = conv2d_matrix(weight, (c_in, h, w), (stride,) * 2, (padding,) * 2,
                                   (dilation,) * 2, groups)
    want = torch.nn.functional.conv2d(torch.as_tensor(x)[None], torch.as_tensor(weight),
                                      stride=stride, padding=padding, dilation=dilation,
                                      groups=groups)[0].numpy()
    assert out_shape == want.shape
    assert np.allclose(mat @ x.ravel(), want.ravel(), atol=1e-12)


def test_export_carries_the_dendrite_and_reimports_exactly(lrf_dyn_run) -> None:
    graph = read_graph(lrf_dyn_run / "model.nir")
    dendrite = graph.nodes["blocks.0.attn.dendrite"]
    assert dendrite.metadata["lrfdyn"] == "dendrite" and dendrite.metadata["k"] == 8
    assert dendrite.metadata["A"].shape == (32, 8, 8)
    model = load_checkpoint(lrf_dyn_run / "checkpoint.pt").build()
    images = load_dataset("digits").x_test[:48]
    with torch.no_grad():
        out, _ = model(torch.as_tensor(images, dtype=torch.float32) / 255)
    original = out.permute(1, 0, 2).numpy()
    assert np.abs(run_float(graph, images) - original).max() <= 1e-5


def test_full_block_is_spike_exact_on_lava(lrf_dyn_run) -> None:
    net = lower(read_graph(lrf_dyn_run / "model.nir"))
    # Shortcut currents reach the block neurons over paths of different lengths.
    assert any(s.delay > 0 for s in net.synapses)
    assert "blocks.0.attn.u" in net.groups and "blocks.0.attn.gate" in net.groups
    ds = load_dataset("digits")
    # Enough samples that the rare K∧V token fires and the dendrite carries values.
    report = simulate(net, ds.x_test[:12].reshape(12, -1), ds.y_test[:12])
    assert report.mismatches == 0, report.first_mismatch
    assert report.predictions_equal
    silent = [layer.name for layer in report.layers if layer.spikes == 0]
    assert len(silent) <= 1, f"too many silent layers for a meaningful check: {silent}"
    kinds = {s.kind for s in net.synapses}
    assert "conv" in kinds, "the block's per-token layers are shared-kernel convs"
    assert multiprocessing.active_children() == []


@pytest.mark.slow  # the whole dendritic network on Lava: ~4 min on 2 cores
def test_dendritic_mode_cli_kv_and_gate(lrf_dyn_run, tmp_path, capsys) -> None:
    """token=kv, gate=q through `simulate --mode dendritic`: streams bit-exact on Lava."""
    import json

    report = tmp_path / "dendritic.json"
    code = main(["simulate", str(lrf_dyn_run / "model.nir"), "--mode", "dendritic",
                 "--samples", "2", "--report", str(report)])
    assert code == 0, capsys.readouterr()
    data = json.loads(report.read_text())
    (block,) = data["blocks"]
    assert data["mismatches"] == 0 and block["mismatches"] == 0
    assert block["compartments_counted"] == block["k"] * block["d"] == 8 * 32
    assert block["neurons"]["compartments"] == 256
    assert "dendritic (integer)" in capsys.readouterr().out
    assert multiprocessing.active_children() == []


def test_a_block_without_a_lowering_is_refused_in_one_line(capsys, tmp_path,
                                                          monkeypatch) -> None:
    """Every variant exports today; a variant listed in PRODUCT_BLOCKS (its lowering
    withdrawn or not yet built) is refused by name and reason, and nothing is written."""
    from lrfdyn.export import transformer

    monkeypatch.setitem(transformer.PRODUCT_BLOCKS, "statten", "a reason to refuse it")
    monkeypatch.delitem(transformer.ATTENTION_EXPORTS, "statten")
    model = build_model("spikformer", {**SMALL, "attention": "statten"})
    ckpt = save_checkpoint(tmp_path / "checkpoint.pt", model, "spikformer", data="digits")
    dest = tmp_path / "model.nir"
    code = main(["export", str(ckpt), "-o", str(dest)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "blocks.0.attn (statten): a reason to refuse it" in err[0]
    assert "exports a2os2a, lrf_dyn" in err[0] and "statten" not in err[0].split("exports")[1]
    assert not dest.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
