"""Attention locality analysis: exact cases of the measures, the effective token matrices
against the modules they summarize, and the `lrfdyn analyze` command on tiny models."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from lrfdyn.cli import main
from lrfdyn.train.analysis import (
    LocalityStats,
    analyze_model,
    attention_weights,
    dyn_token_matrix,
    entropy,
    grid_manhattan,
    lrf_token_matrix,
    mean_distance,
    row_normalize,
)
from lrfdyn.train.checkpoint import save_checkpoint
from lrfdyn.train.models import build_model
from lrfdyn.train.models.attention import AttentionConfig, build_attention

GRID = (3, 4)
N = GRID[0] * GRID[1]


def test_grid_manhattan_raster_order() -> None:
    d = grid_manhattan(GRID)
    assert d.shape == (N, N)
    assert torch.equal(d, d.T) and bool((d.diagonal() == 0).all())
    assert d[0, 1] == 1 and d[0, GRID[1]] == 1  # right and down neighbours
    assert d[0, N - 1] == (GRID[0] - 1) + (GRID[1] - 1)  # opposite corners
    assert d[GRID[1] - 1, GRID[1]] == GRID[1]  # raster neighbours across a row end


def test_uniform_and_delta_exact() -> None:
    dist = grid_manhattan(GRID)
    uniform, _ = row_normalize(torch.ones(N, N))
    assert torch.allclose(entropy(uniform), torch.full((N,), math.log(N), dtype=torch.float64))
    assert torch.allclose(mean_distance(uniform, dist), dist.mean(1))
    delta, _ = row_normalize(torch.eye(N) * 3.0)
    assert bool((entropy(delta) == 0).all())
    assert bool((mean_distance(delta, dist) == 0).all())


def test_row_normalize_uses_magnitude_and_flags_empty_rows() -> None:
    w = torch.tensor([[1.0, -3.0, 0.0], [0.0, 0.0, 0.0]])
    p, valid = row_normalize(w)
    assert valid.tolist() == [True, False]
    assert torch.allclose(p[0], torch.tensor([0.25, 0.75, 0.0], dtype=torch.float64))
    assert bool((p[1] == 0).all())


def test_locality_stats_skip_empty_rows() -> None:
    dist = grid_manhattan(GRID)
    w = torch.eye(N)
    w[0] = 0.0  # a silent query: no mass, not counted
    w[1] = 1.0  # a uniform query
    st = LocalityStats()
    st.add(w, dist, probe=1)
    res = st.result()
    assert res["rows"] == N - 1
    assert res["entropy"] == pytest.approx(math.log(N) / (N - 1))
    assert res["distance"] == pytest.approx(float(dist[1].mean()) / (N - 1))
    assert torch.allclose(st.probe(), torch.full((N,), 1.0 / N, dtype=torch.float64))


def _ssa_state(q: torch.Tensor, k: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"q": q[None, None], "k": k[None, None], "v": torch.ones_like(q)[None, None]}


def test_ssa_weights_delta_and_uniform() -> None:
    attn = build_attention("ssa", AttentionConfig(dim=N, heads=1))
    dist = grid_manhattan(GRID)
    # One-hot Q = K per token: Q·Kᵀ = I, each query attends only to itself.
    w, over_time = attention_weights(attn, _ssa_state(torch.eye(N), torch.eye(N)), GRID)
    assert not over_time and w.shape == (1, 1, 1, N, N)
    st = LocalityStats()
    st.add(w, dist, probe=0)
    assert st.result() == {"entropy": 0.0, "distance": 0.0, "rows": N}
    # All-ones Q and K: every query weighs every key alike.
    ones = torch.ones(N, N)
    w, _ = attention_weights(attn, _ssa_state(ones, ones), GRID)
    st = LocalityStats()
    st.add(w, dist, probe=0)
    assert st.result()["entropy"] == pytest.approx(math.log(N))
    assert st.result()["distance"] == pytest.approx(float(dist.mean()))


def test_lrf_token_matrix_reproduces_convolution() -> None:
    torch.manual_seed(0)
    d = 6
    attn = build_attention("lrf_ssa", AttentionConfig(dim=d, heads=2, lrf_dilations=[1, 2]))
    m = lrf_token_matrix(attn.lrf, GRID, d)  # (d, N, N)
    v = torch.rand(5, N, d)
    with torch.no_grad():
        expected = attn.lrf(v, GRID) - attn.lrf(torch.zeros(1, N, d), GRID)
    got = torch.einsum("cij,bjc->bic", m, v)
    assert torch.allclose(got, expected, atol=1e-5)
    # A 3×3 kernel at dilation ≤ 2 cannot reach tokens more than 2 rows or columns away.
    far = grid_manhattan(GRID) > 4
    assert bool((m[:, far] == 0).all())


def test_dyn_token_matrix_is_the_module_chain() -> None:
    torch.manual_seed(1)
    d = 4
    attn = build_attention("lrf_dyn", AttentionConfig(dim=d, heads=2, k_dendrites=3))
    e = dyn_token_matrix(attn, GRID)
    u = (torch.rand(3, N, d) > 0.5).float()  # checked against the FFT path the model trains
    with torch.no_grad():
        y = attn.dendrites(u)
        expected = y + attn.lrf(y, GRID) - attn.lrf(torch.zeros(1, N, d), GRID)
    assert torch.allclose(torch.einsum("cij,bjc->bic", e, u), expected, atol=1e-5)
    # Without the LRF convolutions only the causal token kernel is left: E_c[i, j] = K_{i−j}.
    with torch.no_grad():
        for conv in attn.lrf.convs:
            conv.weight.zero_()
    e = dyn_token_matrix(attn, GRID)
    kern = attn.kernel(N).detach()
    i, j = torch.tril_indices(N, N)
    assert torch.allclose(e[:, i, j], kern[i - j].T, atol=1e-6)
    assert bool((torch.triu(e, diagonal=1) == 0).all())  # exactly causal in raster order


@pytest.mark.parametrize("attention", ["ssa", "lrf_ssa", "lrf_dyn", "statten", "a2os2a"])
def test_analyze_model_tiny_untrained(attention: str) -> None:
    torch.manual_seed(0)
    model = build_model("spikformer", {"img_size": 8, "in_channels": 1, "dim": 16, "depth": 2,
                                       "heads": 2, "timesteps": 2, "stem_strides": [1, 2],
                                       "attention": attention, "lrf_dilations": [1]})
    layers = analyze_model(model, torch.rand(4, 1, 8, 8))
    assert [layer.layer for layer in layers] == ["blocks.0.attn", "blocks.1.attn"]
    for layer in layers:
        assert layer.uniform_entropy == pytest.approx(
            math.log(16 * (2 if attention == "statten" else 1)))
        if layer.rows:  # untrained Q/K may stay silent: then there is nothing to measure
            assert 0.0 <= layer.entropy <= layer.uniform_entropy + 1e-9
            assert 0.0 <= layer.distance <= 6.0  # the 4×4 grid's largest distance
            assert sum(layer.probe_distribution) == pytest.approx(1.0)
        else:
            assert math.isnan(layer.entropy)
    if attention in ("lrf_ssa", "lrf_dyn"):  # the LRF weights give every query some mass
        assert all(layer.rows > 0 for layer in layers)


def _tiny_checkpoint(path: Path, arch: str = "spikformer") -> Path:
    torch.manual_seed(0)
    cfg = ({"img_size": 8, "in_channels": 1, "dim": 16, "depth": 1, "heads": 2, "timesteps": 2,
            "stem_strides": [1, 2], "attention": "lrf_dyn", "lrf_dilations": [1]}
           if arch == "spikformer" else {"hidden": [8]})
    return save_checkpoint(path, build_model(arch, cfg), arch, data="digits", seed=0)


def test_cli_analyze_writes_json_and_png(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = _tiny_checkpoint(tmp_path / "checkpoint.pt")
    out = tmp_path / "an"
    assert main(["analyze", str(ckpt), "--out", str(out), "--samples", "6", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    written = json.loads((out / "attention_locality.json").read_text())
    assert printed == written
    assert written["samples"] == 6 and written["grid"] == [4, 4]
    assert len(written["layers"]) == 1
    assert (out / "attention_locality.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_analyze_rejects_mlp(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = _tiny_checkpoint(tmp_path / "checkpoint.pt", arch="mlp")
    assert main(["analyze", str(ckpt)]) == 2
    assert "no attention layers" in capsys.readouterr().err
