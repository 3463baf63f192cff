"""The NIR file written by lrfdyn: readable, typed, and equal to the model when re-imported."""

from __future__ import annotations

import nir
import numpy as np
import pytest
import torch
from torch import nn

from lrfdyn.sim.simulate import read_graph
from lrfdyn.errors import UnsupportedNodeError
from lrfdyn.export.from_nir import run_float
from lrfdyn.export.to_nir import export_module, GraphBuilder, write_nir
from lrfdyn.train.checkpoint import load_checkpoint
from lrfdyn.train.data import load_dataset


def test_nir_file_reads_back_with_types_and_metadata(digits_run) -> None:
    graph = read_graph(digits_run / "model.nir")
    kinds = [type(n).__name__ for n in graph.nodes.values()]
    assert kinds.count("Affine") == 3 and kinds.count("LIF") == 3
    assert graph.metadata["timesteps"] == 8 and graph.metadata["input_levels"] == 255
    assert graph.metadata["dataset"] == "digits"
    lif = graph.nodes["layers.1"]
    # Spikformer LIF, tau = 2 steps at dt = 1 ms, hard reset to 0.
    assert np.all(lif.tau / graph.metadata["dt"] == 2.0) and np.all(lif.v_reset == 0)
    graph.check_types()


def test_nirtorch_reimport_reproduces_every_output_spike(digits_run) -> None:
    model = load_checkpoint(digits_run / "checkpoint.pt").build()
    graph = read_graph(digits_run / "model.nir")
    images = load_dataset("digits").x_test[:64]
    with torch.no_grad():
        out, _ = model(torch.as_tensor(images, dtype=torch.float32) / 255)
    original = out.permute(1, 0, 2).numpy()
    reimported = run_float(graph, images)
    assert original.sum() > 0
    assert np.abs(reimported - original).max() <= 1e-5


def test_unsupported_module_is_named() -> None:
    g = GraphBuilder()
    src = g.add("input", nir.Input(input_type={"input": np.array([4])}))
    with pytest.raises(UnsupportedNodeError, match=r"head: GRU has no NIR export"):
        export_module(g, nn.GRU(4, 4), "head", src)


def test_failed_write_leaves_no_file(tmp_path) -> None:
    class Broken:  # not a NIR node: nir.write fails half-way
        pass

    dest = tmp_path / "model.nir"
    with pytest.raises(Exception):
        write_nir(Broken(), dest)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
