"""Attention locality, measured: entropy and grid distance of each layer's token mixing.

The paper's Theorems 1–2 contrast SSA, whose token mixing is spread over the whole grid,
with LRF-Dyn, whose mass concentrates on nearby tokens. This module measures both
quantities on a trained checkpoint, for every attention layer:

* **entropy** ``H_i = −Σ_j p_ij log p_ij`` (nats) of query i's attention distribution,
  at most ``log N`` (uniform) and 0 for a delta;
* **distance** ``D_i = Σ_j p_ij ‖g(i) − g(j)‖₁``: the mean Manhattan distance, on the
  ``(H, W)`` token grid, of the mass query i takes from token j (0 for a delta on itself).

Both are averaged over queries (rows with no mass are skipped), heads, time steps and
samples.

**Effective token-to-token weights.** Every variant computes, per channel c, an output
``α_c = Σ_j W_c[i, j] · u_c[j]`` that is linear in its token input u (V, or K ∧ V) once
the spikes are fixed, plus an input-independent bias. ``W_c`` is:

* SSA: ``s·Q_h K_hᵀ`` (the same for every channel c of head h); it depends on the sample;
* LRF-SSA: ``(1−λ)·s·Q_h K_hᵀ + λ·M_c``, with ``M_c`` the depthwise LRF convolutions'
  token matrix (all dilations summed);
* LRF-Dyn: ``(I + M_c)·T_c``, ``T_c[i, j] = K_{i−j, c}`` for ``i ≥ j`` (the causal token
  kernel in raster order), input-independent; BN only rescales a channel, so it drops out
  of the normalized distribution, and the optional Q gate masks outputs without moving
  mass between tokens, so it is left out too;
* STAtten: ``s·Q̂_h K̂_hᵀ`` over the ``b·N`` tokens of a time block (distance is spatial:
  the token's grid position, whatever its step);
* A²OS²A: the ReLU neuron's output ``R(Q_h K_hᵀ)``.

The distribution of query i in head h is ``p_i ∝ mean_{c ∈ h} |W_c[i, :]|``: the absolute
value because LRF weights can be negative and a negative weight moves as much signal as a
positive one; the channel mean so that every variant is summarized per head (LRF-Dyn's
channels are grouped into the same ``heads`` groups as the product variants').
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lrfdyn.errors import ValidationError
from lrfdyn.io import write_json, write_with
from lrfdyn.train.models.attention import (
    A2OS2A,
    LRFSSA,
    SSA,
    LocalReceptiveField,
    LRFDyn,
    SpikingAttention,
    STAtten,
    split_heads,
)


def grid_manhattan(grid: tuple[int, int]) -> torch.Tensor:
    """Manhattan distance between raster-order tokens of an ``(H, W)`` grid, ``(N, N)``."""
    h, w = grid
    rows = torch.arange(h * w) // w
    cols = torch.arange(h * w) % w
    return ((rows[:, None] - rows[None, :]).abs() + (cols[:, None] - cols[None, :]).abs()).to(
        torch.float64
    )


def row_normalize(weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``|weights|`` normalized over the last axis.

    Returns:
        The distributions (rows without mass are all zero) and a boolean mask of the rows
        that had mass.
    """
    mass = weights.abs().to(torch.float64)
    total = mass.sum(-1, keepdim=True)
    valid = total.squeeze(-1) > 0
    return torch.where(total > 0, mass / total.clamp_min(1e-300), torch.zeros_like(mass)), valid


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of distributions over the last axis, with ``0·log 0 = 0``."""
    logs = torch.where(p > 0, p.log(), torch.zeros_like(p))
    return -(p * logs).sum(-1)


def mean_distance(p: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """Expected distance ``Σ_j p_ij · dist[i, j]`` of distributions ``p (..., N_q, N_k)``."""
    return (p * dist).sum(-1)


@dataclass
class LocalityStats:
    """Running sums over valid query rows, and the mean distribution of one probe query."""

    entropy_sum: float = 0.0
    distance_sum: float = 0.0
    rows: int = 0
    probe_sum: torch.Tensor | None = None
    probe_count: int = 0

    def add(self, weights: torch.Tensor, dist: torch.Tensor, probe: int) -> None:
        """Accumulate rows of ``weights (..., N_q, N_k)``; ``probe`` is a query index."""
        p, valid = row_normalize(weights)
        self.entropy_sum += float(entropy(p)[valid].sum())
        self.distance_sum += float(mean_distance(p, dist)[valid].sum())
        self.rows += int(valid.sum())
        rows = p[..., probe, :].reshape(-1, p.shape[-1])[valid[..., probe].reshape(-1)]
        if len(rows):
            s = rows.sum(0)
            self.probe_sum = s if self.probe_sum is None else self.probe_sum + s
            self.probe_count += len(rows)

    def result(self) -> dict[str, float]:
        if self.rows == 0:
            return {"entropy": float("nan"), "distance": float("nan"), "rows": 0}
        return {"entropy": self.entropy_sum / self.rows,
                "distance": self.distance_sum / self.rows, "rows": self.rows}

    def probe(self) -> torch.Tensor | None:
        """Mean distribution of the probe query over everything added (None if none)."""
        return None if self.probe_sum is None else self.probe_sum / self.probe_count


def linear_token_matrix(fn: Any, n: int, d: int) -> torch.Tensor:
    """Token matrix ``M (d, N, N)`` of a per-channel linear map ``fn: (B, N, d) → (B, N, d)``.

    Feeds one-hot tokens and subtracts ``fn(0)`` (the bias), so ``M[c, i, j]`` is the weight
    from token j to token i in channel c.
    """
    with torch.no_grad():
        basis = torch.eye(n).unsqueeze(-1).expand(n, n, d)  # basis[j, j, :] = 1
        out = fn(basis) - fn(torch.zeros(1, n, d))  # out[j, i, c] = M_c[i, j]
    return out.permute(2, 1, 0).contiguous()


def lrf_token_matrix(lrf: LocalReceptiveField, grid: tuple[int, int], d: int) -> torch.Tensor:
    """``M_c`` of the summed depthwise LRF convolutions, ``(d, N, N)`` (biases excluded)."""
    return linear_token_matrix(lambda z: lrf(z, grid), grid[0] * grid[1], d)


def causal_toeplitz(kernel: torch.Tensor) -> torch.Tensor:
    """``T (d, N, N)``: ``T_c[i, j] = K_{i−j, c}`` for ``i ≥ j``, 0 above the diagonal."""
    n = kernel.shape[0]
    lag = torch.arange(n)[:, None] - torch.arange(n)[None, :]
    t = kernel[lag.clamp_min(0)].permute(2, 0, 1)  # (d, N, N)
    return t * (lag >= 0)


def dyn_token_matrix(attn: LRFDyn, grid: tuple[int, int]) -> torch.Tensor:
    """LRF-Dyn's ``(I + M_c)·T_c`` from token input u to the pre-BN current, ``(d, N, N)``.

    ``T_c`` is built from the kernel directly rather than by probing the FFT path, so the
    matrix is exactly causal (the FFT leaves ~1e-8 round-off above the diagonal).
    """
    n = grid[0] * grid[1]
    with torch.no_grad():
        t = causal_toeplitz(attn.kernel(n))
        return t + lrf_token_matrix(attn.lrf, grid, attn.cfg.dim) @ t


def head_mean_abs(w: torch.Tensor, heads: int) -> torch.Tensor:
    """``(..., d, N, N)`` → ``(..., h, N, N)``: mean of ``|w|`` over each head's channels."""
    *lead, d, n, m = w.shape
    return w.abs().reshape(*lead, heads, d // heads, n, m).mean(-3)


def attention_weights(
    attn: SpikingAttention, state: dict[str, torch.Tensor], grid: tuple[int, int]
) -> tuple[torch.Tensor, bool]:
    """Effective token-to-token weights of one layer (module docstring), per head.

    Args:
        attn: The attention module.
        state: Its recorded spikes (``q``, ``k``, ``v``, ``weights``) for one batch.
        grid: The token grid.

    Returns:
        ``(..., h, N_q, N_k)`` weights and whether keys span ``b`` time steps (STAtten),
        in which case ``N_q = N_k = b·N`` and tokens repeat every N.
    """
    cfg = attn.cfg
    h = cfg.heads
    if isinstance(attn, A2OS2A):
        return state["weights"], False
    if isinstance(attn, LRFDyn):
        m = dyn_token_matrix(attn, grid)
        return head_mean_abs(m, h), False
    if isinstance(attn, STAtten):
        q, k = state["q"], state["k"]
        t, b, n, d = q.shape
        blocks = []
        for t0 in range(0, t, cfg.statten_block):
            sl = slice(t0, t0 + cfg.statten_block)
            qb, kb = (z[sl].transpose(0, 1).reshape(b, -1, d) for z in (q, k))
            blocks.append(split_heads(qb, h) @ split_heads(kb, h).transpose(-2, -1))
        # A shorter trailing block (T not a multiple of b) has other shapes; it is left out
        # unless it is the only block.
        return torch.stack([x for x in blocks if x.shape == blocks[0].shape]) * cfg.scale, True
    if isinstance(attn, (SSA, LRFSSA)):
        scores = (split_heads(state["q"], h) @ split_heads(state["k"], h).transpose(-2, -1))
        scores = scores * cfg.scale  # (T, B, h, N, N)
        if isinstance(attn, LRFSSA):
            lam = float(attn.lam)
            m = lrf_token_matrix(attn.lrf, grid, cfg.dim)  # (d, N, N)
            mh = m.reshape(h, cfg.dim // h, *m.shape[1:])  # (h, d/h, N, N)
            fused = (1.0 - lam) * scores.unsqueeze(-3) + lam * mh  # (T, B, h, d/h, N, N)
            return fused.abs().mean(-3), False
        return scores, False
    raise ValidationError(f"no locality analysis for attention {type(attn).__name__}")


@dataclass
class LayerLocality:
    """Locality of one attention layer, with the uniform distribution's values for scale."""

    layer: str
    attention: str
    entropy: float
    distance: float
    uniform_entropy: float
    uniform_distance: float
    rows: int
    probe_query: int
    probe_distribution: list[float] = field(repr=False)


def _uniform_reference(dist: torch.Tensor) -> tuple[float, float]:
    """Entropy and mean distance of the uniform distribution over all keys."""
    return math.log(dist.shape[-1]), float(dist.mean())


def analyze_model(
    model: torch.nn.Module, images: torch.Tensor, batch_size: int = 16
) -> list[LayerLocality]:
    """Locality of every attention layer of a Spikformer on ``images (B, C, H, W)`` in [0, 1].

    Raises:
        ValidationError: If the model has no attention layers.
    """
    blocks = getattr(model, "blocks", None)
    if blocks is None or not len(blocks):
        raise ValidationError(
            f"{type(model).__name__} has no attention layers to analyze; "
            "pass a spikformer checkpoint"
        )
    cfg = model.cfg
    grid = cfg.grid
    n = grid[0] * grid[1]
    probe = (grid[0] // 2) * grid[1] + grid[1] // 2  # the centre token
    base = grid_manhattan(grid)
    stats = [LocalityStats() for _ in blocks]
    dists: dict[int, torch.Tensor] = {}
    model.eval()
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            _, record = model(images[i : i + batch_size])
            for li, block in enumerate(blocks):
                state = {k.rsplit(".", 1)[1]: v for k, v in record.items()
                         if k.startswith(f"blocks.{li}.attn.")}
                w, over_time = attention_weights(block.attn, state, grid)
                reps = w.shape[-1] // n if over_time else 1  # STAtten: keys of b steps
                dists[li] = base.repeat(reps, reps)
                # LRF-Dyn's weights do not depend on the sample; adding them once per batch
                # leaves the means unchanged and keeps one code path.
                stats[li].add(w, dists[li], probe)
    out = []
    for li, (block, st) in enumerate(zip(blocks, stats)):
        res = st.result()
        u_ent, u_dist = _uniform_reference(dists[li])
        pr = st.probe()
        out.append(LayerLocality(
            layer=f"blocks.{li}.attn", attention=cfg.attention, entropy=res["entropy"],
            distance=res["distance"], uniform_entropy=u_ent, uniform_distance=u_dist,
            rows=int(res["rows"]), probe_query=probe,
            probe_distribution=[] if pr is None else pr.tolist(),
        ))
    return out


def _probe_grid(layer: LayerLocality, grid: tuple[int, int]) -> np.ndarray:
    """Probe distribution folded onto the grid (time blocks of STAtten summed)."""
    n = grid[0] * grid[1]
    p = np.asarray(layer.probe_distribution, dtype=np.float64)
    if p.size == 0:
        return np.zeros(grid)
    return p.reshape(-1, n).sum(0).reshape(grid)


def plot_locality(layers: list[LayerLocality], grid: tuple[int, int], title: str,
                  path: str | Path) -> Path:
    """One heat map per layer: where the centre query's attention mass lies on the grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(layers), figsize=(3.2 * len(layers), 3.6), squeeze=False)
    for ax, layer in zip(axes[0], layers):
        img = ax.imshow(_probe_grid(layer, grid), cmap="viridis")
        r, c = divmod(layer.probe_query, grid[1])
        ax.plot(c, r, "r+", markersize=10)
        ax.set_title(f"{layer.layer}\nH={layer.entropy:.2f} (unif {layer.uniform_entropy:.2f})\n"
                     f"D={layer.distance:.2f} (unif {layer.uniform_distance:.2f})", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(img, ax=ax, fraction=0.046)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    try:
        return write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    finally:
        plt.close(fig)


def analyze_checkpoint(
    checkpoint: str | Path, out_dir: str | Path | None = None, samples: int = 64,
    data_dir: str | None = None,
) -> dict[str, Any]:
    """Measure every attention layer of a checkpoint on test samples; write JSON and PNG.

    Args:
        checkpoint: A spikformer ``checkpoint.pt``.
        out_dir: Output folder (default: ``<checkpoint folder>/analysis``).
        samples: Test images to run (the first ones of the checkpoint's data set split).
        data_dir: Folder of the data set's files, for data sets not bundled.

    Returns:
        The JSON summary (also written to ``out_dir/attention_locality.json``), with the
        paths of both files.
    """
    from lrfdyn.train.checkpoint import load_checkpoint
    from lrfdyn.train.data import load_dataset
    from lrfdyn.train.trainer import images_to_float

    if samples < 1:
        raise ValidationError(f"samples must be positive; got {samples}")
    ckpt = load_checkpoint(checkpoint)
    if ckpt.arch != "spikformer":
        raise ValidationError(
            f"{checkpoint}: architecture {ckpt.arch!r} has no attention layers; "
            "pass a spikformer checkpoint"
        )
    data_name = ckpt.extra.get("data")
    if not data_name:
        raise ValidationError(f"{checkpoint}: the checkpoint does not name its data set")
    data = load_dataset(data_name, data_dir, seed=int(ckpt.extra.get("seed", 0)))
    model = ckpt.build()
    images = images_to_float(data.x_test[:samples])
    layers = analyze_model(model, images)
    out = Path(out_dir) if out_dir else Path(checkpoint).parent / "analysis"
    cfg = model.cfg
    label = cfg.attention + (f"[{cfg.token},{cfg.gate}]" if cfg.attention == "lrf_dyn" else "")
    png = plot_locality(layers, cfg.grid, f"{label}: centre query's attention mass "
                        f"({len(images)} {data_name} test samples)", out / "attention_locality.png")
    summary = {
        "checkpoint": str(checkpoint), "attention": label, "data": data_name,
        "samples": len(images), "grid": list(cfg.grid),
        "layers": [asdict(layer) for layer in layers],
        "mean_entropy": float(np.mean([layer.entropy for layer in layers])),
        "mean_distance": float(np.mean([layer.distance for layer in layers])),
        "png": str(png),
        "json": str(out / "attention_locality.json"),
    }
    write_json(summary["json"], summary)
    return summary
