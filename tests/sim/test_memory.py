"""Attention memory: the closed-form model against counts read off the Lava processes."""

from __future__ import annotations

import json

import pytest

from lrfdyn.cli import main
from lrfdyn.sim.memory import (PAPER_SCALE, ROWS, analytic, graph_scale, mechanism_state,
                               measured, table)


@pytest.fixture(scope="module")
def counted(tiny_lrf_dyn):
    _, graph = tiny_lrf_dyn
    return graph_scale(graph), measured(graph)


def test_scale_is_read_from_the_graph(counted) -> None:
    scale, _ = counted
    assert scale == dict(d=6, grid=(7, 7), heads=2, k=3, dilations=(3, 5), blocks=1,
                         token="v", gate="none", token_latency=scale["token_latency"])
    assert scale["token_latency"] >= 1


@pytest.mark.parametrize("row", ["lrf_dyn_parallel", "lrf_dyn_dendritic"])
def test_model_equals_lava_counts(counted, row) -> None:
    """State and buffers exactly; weights at most the model's (quantization drops zeros)."""
    scale, meas = counted
    model = analytic(row, **scale)
    assert meas[row].state == model.state
    assert meas[row].buffers == model.buffers
    assert 0.9 * model.weights <= meas[row].weights <= model.weights


def test_dendritic_state_is_k_d_compartments_plus_relays(counted) -> None:
    scale, meas = counted
    d, k = scale["d"], scale["k"]
    stream = meas["lrf_dyn_dendritic"].state - analytic("lrf_dyn_dendritic", **{
        **scale, "k": 1}).state  # the per-token neurons do not depend on k
    assert stream == (k - 1) * d * (24 + 24 + 12)
    assert mechanism_state("lrf_dyn_dendritic", **scale) == k * d * 60


def test_paper_scale_table() -> None:
    rows = table(PAPER_SCALE)
    assert list(rows) == list(ROWS)
    assert rows["ssa"]["total_pct_of_ssa"] == 100.0
    # O(d²/h) against O(k·d): 32768 against 4096 values of attention state per block.
    assert rows["ssa"]["mechanism_state_per_block"] == 8 * 64 * 64 * 24
    assert rows["lrf_dyn_dendritic"]["mechanism_state_per_block"] == 8 * 512 * 60
    shared = table(PAPER_SCALE, shared_linear=True)
    # With shared Linear weights the parallel mode's dendrite synapses outweigh SSA's.
    assert shared["lrf_dyn_parallel"]["weights"] > shared["ssa"]["weights"]
    assert shared["lrf_dyn_dendritic"]["total"] < shared["ssa"]["total"]


def test_profile_memory_cli(tiny_lrf_dyn, tmp_path, capsys) -> None:
    import nir

    _, graph = tiny_lrf_dyn
    path = tmp_path / "tiny.nir"
    nir.write(path, graph)
    assert main(["profile", str(path), "--memory", "--out", str(tmp_path / "mem")]) == 0
    assert "lrf_dyn_dendritic" in capsys.readouterr().out
    report = json.loads((tmp_path / "mem" / "memory.json").read_text())
    assert set(report["small"]["measured"]) == {"lrf_dyn_parallel", "lrf_dyn_dendritic"}
    for name in ("memory.md", "memory_small.png", "memory_paper.png"):
        assert (tmp_path / "mem" / name).stat().st_size > 0
