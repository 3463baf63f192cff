"""Figures a person would rather look at than read: rasters, rates, SynOps, memory.

Every function takes plain data (names, numbers, boolean spike arrays), draws
one figure with the Agg backend, writes it atomically as PNG and returns the
path; none of them knows about reports, so other commands can reuse them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from lrfdyn.errors import ValidationError  # noqa: E402
from lrfdyn.io import write_with  # noqa: E402

#: Resolution of every PNG.
DPI = 130
_COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]


def save_png(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` to ``path`` as PNG atomically, then close it."""
    try:
        return write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI,
                                                        bbox_inches="tight"))
    finally:
        plt.close(fig)


def spike_raster(spikes: dict[str, np.ndarray], path: str | os.PathLike[str], *,
                 title: str, xlabel: str = "time step", highlight: int | None = None) -> Path:
    """One panel per layer (output on top), one mark per spike.

    Panel heights grow with the layer's size but stay readable for small layers.

    Args:
        spikes: boolean spikes of one sample per layer, shape (steps, neurons), in
            network order (input side first).
        path: where to write the PNG.
        title: the figure title (say which sample and model).
        xlabel: the x-axis label.
        highlight: a neuron of the last (output) layer to mark, e.g. the true class.
    """
    if not spikes:
        raise ValidationError("spike_raster: no layers to draw")
    items = [(name, np.asarray(s, bool)) for name, s in spikes.items()][::-1]
    steps = max(s.shape[0] for _, s in items)
    ratios = [float(np.clip(s.shape[1], 45, 160)) for _, s in items]
    fig, axes = plt.subplots(len(items), 1, sharex=True, squeeze=False,
                             figsize=(7.5, 1.4 + 0.028 * sum(ratios) + 0.3 * len(items)),
                             gridspec_kw={"height_ratios": ratios, "hspace": 0.12})
    for i, (ax, (name, s)) in enumerate(zip(axes[:, 0], items, strict=True)):
        t, n = np.nonzero(s)
        # About 0.8 of the vertical space of one neuron row, in points.
        mark = float(np.clip(0.8 * 72 * 0.028 * ratios[i] / max(s.shape[1], 1), 2.0, 8.0))
        ax.scatter(t, n, s=mark ** 2, marker="s", linewidths=0,
                   color=_COLORS[(len(items) - 1 - i) % len(_COLORS)])
        if i == 0 and highlight is not None and 0 <= highlight < s.shape[1]:
            ax.axhspan(highlight - 0.5, highlight + 0.5, color="gold", alpha=0.35, lw=0)
        ax.set_ylim(-0.5, s.shape[1] - 0.5)
        if s.shape[1] <= 16:
            ax.set_yticks(range(s.shape[1]))
            ax.tick_params(axis="y", labelsize=6)
        rate = s.mean() if s.size else 0.0
        ax.set_ylabel(f"{name}\n{s.shape[1]} neurons", fontsize=8)
        note = (f"\n(gold: neuron {highlight},\nthe true class)"
                if i == 0 and highlight is not None else "")
        ax.text(1.01, 0.5, f"{int(s.sum())} spikes\n{rate:.3f} per\nneuron·step{note}",
                transform=ax.transAxes, fontsize=7, va="center")
        ax.grid(axis="x", color="0.9")
        ax.set_axisbelow(True)
    last = axes[-1, 0]
    last.set_xlim(-0.5, steps - 0.5)
    last.set_xticks(range(steps) if steps <= 32 else np.linspace(0, steps - 1, 9).round())
    last.set_xlabel(xlabel)
    fig.supylabel("neuron index", fontsize=9)
    axes[0, 0].set_title(title, fontsize=10)
    return save_png(fig, path)


def bar_per_layer(names: Sequence[str], values: Sequence[float], path: str | os.PathLike[str],
                  *, title: str, ylabel: str, fmt: str = "{:,.0f}",
                  log: bool = False) -> Path:
    """One bar per layer with its value written above it."""
    if len(names) != len(values) or not names:
        raise ValidationError(f"bar_per_layer: {len(names)} names for {len(values)} values")
    fig, ax = plt.subplots(figsize=(max(4.5, 1.1 * len(names) + 2.0), 3.6))
    vals = np.asarray(values, np.float64)
    bars = ax.bar(list(names), vals, color=_COLORS[: len(names)] * (len(names) // 10 + 1))
    ax.bar_label(bars, [fmt.format(v) for v in vals], fontsize=8, padding=2)
    if log and np.all(vals > 0):
        ax.set_yscale("log")
    else:
        ax.set_ylim(0, max(float(vals.max()), 1e-12) * 1.18)
    if not log and float(vals.max()) >= 1000:
        ax.yaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.0f}"))
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", color="0.92")
    ax.set_axisbelow(True)
    _slant_long_labels(ax, names)
    return save_png(fig, path)


def _slant_long_labels(ax: plt.Axes, names: Sequence[str]) -> None:
    """Transformer layer names ("blocks.0.attn.attn_lif") overlap when set upright."""
    if max(len(n) for n in names) > 9:
        plt.setp(ax.get_xticklabels(), rotation=35, ha="right", rotation_mode="anchor")


def memory_comparison(groups: Sequence[str], series: dict[str, Sequence[float]],
                      path: str | os.PathLike[str], *, title: str,
                      unit: str = "KiB", scale: float = 8 * 1024, xlabel: str = "layer") -> Path:
    """Grouped bars: several memory series (e.g. state vs synaptic, or float vs Loihi) per group.

    Args:
        groups: the x-axis categories (layers, or models).
        series: name → one value in **bits** per group.
        path: where to write the PNG.
        title: the figure title.
        unit: the unit shown on the y axis; ``scale`` bits make one unit.
        scale: bits per unit (default 8192: KiB).
    """
    if not series or any(len(v) != len(groups) for v in series.values()):
        raise ValidationError("memory_comparison: every series needs one value per group")
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(groups) + 2.5), 3.8))
    x = np.arange(len(groups))
    width = 0.8 / len(series)
    for i, (name, vals) in enumerate(series.items()):
        v = np.asarray(vals, np.float64) / scale
        bars = ax.bar(x + (i - (len(series) - 1) / 2) * width, v, width, label=name,
                      color=_COLORS[i % len(_COLORS)])
        ax.bar_label(bars, [f"{b:,.1f}" for b in v], fontsize=7, padding=2)
    ax.set_xticks(x, list(groups))
    _slant_long_labels(ax, groups)
    ax.set_ylabel(f"memory ({unit})")
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    top = max(float(np.max(np.asarray(v, np.float64))) for v in series.values()) / scale
    ax.set_ylim(0, max(top, 1e-12) * 1.2)
    ax.legend(frameon=False, fontsize=8)
    ax.grid(axis="y", color="0.92")
    ax.set_axisbelow(True)
    return save_png(fig, path)
