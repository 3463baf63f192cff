"""Shared fixtures: a small trained MLP on digits, built once per test session."""

from __future__ import annotations

from pathlib import Path

import nir
import numpy as np
import pytest

T = 6


def _lif(n: int, tau_steps: float = 2.0, v_th: float = 1.0) -> nir.LIF:
    return nir.LIF(tau=np.full(n, tau_steps * 1e-3), r=np.ones(n), v_leak=np.zeros(n),
                   v_threshold=np.full(n, v_th), v_reset=np.zeros(n))


def _shortcut_graph(seed: int = 0) -> nir.NIRGraph:
    """input → A1 → L1 → A2 → L2 with a shortcut input → A3 → L2, and non-zero biases.

    L2 is reached after 1 synapse (shortcut) and after 2 (main path), so lowering must
    delay the shortcut by one step; the biases must arrive with the first input.
    """
    rng = np.random.default_rng(seed)
    n_in, n1, n2 = 12, 10, 6
    nodes = {
        "input": nir.Input(input_type={"input": np.array([n_in])}),
        "a1": nir.Affine(weight=rng.normal(0, 1.2, (n1, n_in)), bias=rng.normal(0.3, 0.3, n1)),
        "l1": _lif(n1),
        "a2": nir.Affine(weight=rng.normal(0.2, 1.0, (n2, n1)), bias=rng.normal(0, 0.4, n2)),
        "a3": nir.Linear(weight=rng.normal(0, 0.8, (n2, n_in))),
        "l2": _lif(n2, tau_steps=4.0),
        "output": nir.Output(output_type={"output": np.array([n2])}),
    }
    edges = [("input", "a1"), ("a1", "l1"), ("l1", "a2"), ("a2", "l2"), ("input", "a3"),
             ("a3", "l2"), ("l2", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={
        "dt": 1e-3, "timesteps": T, "input_levels": 255})


@pytest.fixture()
def lif_node():
    """Factory of NIR LIF nodes (tau in steps at dt = 1 ms)."""
    return _lif


@pytest.fixture()
def make_shortcut_graph():
    """Factory of the shortcut-and-bias test graph, by seed."""
    return _shortcut_graph


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train the demo MLP briefly (3 epochs, ~2 s) and export it; returns the run folder."""
    from lrfdyn.export.to_nir import write_nir
    from lrfdyn.pipeline import checkpoint_to_nir
    from lrfdyn.train.trainer import TrainConfig, train

    out = tmp_path_factory.mktemp("digits_run")
    cfg = TrainConfig(data="digits", epochs=3, out=str(out), model={"hidden": [48, 32]})
    train(cfg, progress=False)
    write_nir(checkpoint_to_nir(out / "checkpoint.pt"), out / "model.nir")
    return out
