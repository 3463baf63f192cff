"""Same-shape networks for the memory table, built from models: the lrfdyn/ side of
``lrfdyn profile --memory`` (docs/design.md §6.2).

The table compares attentions at one model's shape. The rows other than the given
LRF-Dyn graph's own come from networks that have to be built: a random-init Spikformer
of the same shape with that attention (SSA, LRF-SSA, STAtten, A²OS²A), and the paper's
Spikformer-8-512 (:data:`PAPER_MODEL`). This module builds those models (``train``),
exports them to NIR (``export``) and hands ``sim`` nothing but the NIR graphs, which
:mod:`lrfdyn.sim.memory_measured` lowers and counts; :func:`memory_report` puts the
report of :mod:`lrfdyn.sim.memory` together. SSA and LRF-SSA are thus counted off their
own lowered networks, so their Q·(Kᵀ·V) is counted as it would really run (the K∧V
neurons, the Kᵀ·V counts and the Q-gated graded neurons of
:mod:`lrfdyn.export.transformer`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from lrfdyn.loihi import fixed
from lrfdyn.sim.bits import Memory
from lrfdyn.sim.budget import format_bytes, max_memory
from lrfdyn.sim.memory_closed_form import PAPER_SCALE, VARIANT_ROWS, a2os2a_neurons

#: Peak memory of lowering, per neuron of the lowered network (measured: A²OS²A on
#: MNIST-5k, 1,152,490 neurons in 645 MiB).
LOWER_BYTES_PER_NEURON = 600
#: Spikformer-8-512 on ImageNet (``examples/spikformer_8_512_imagenet.json``, LRF-Dyn,
#: token v), the model :func:`paper_network` lowers.
PAPER_MODEL = dict(img_size=224, in_channels=3, num_classes=1000, dim=512, depth=8, heads=8,
                   timesteps=4, mlp_ratio=4.0, stem_strides=[1, 2, 2, 2, 2], k_dendrites=8,
                   lrf_dilations=[3, 5], attention="lrf_dyn", token="v", gate="none")


def trained_like(model: Any, seed: int) -> None:
    """Give a randomly initialised model what training gives it and the counts depend on:
    BN statistics (hence a bias at every BN) and non-zero dendrite couplings β and Γ
    (hence the stream's coupling synapses), drawn as the test fixtures draw them."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                mod.running_mean.copy_(torch.rand(mod.running_mean.shape, generator=gen) * 0.4
                                       - 0.2)
                mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=gen) * 1.5
                                      + 0.5)
            if hasattr(mod, "beta_raw") and hasattr(mod, "gamma"):
                mod.beta_raw.copy_(torch.rand(mod.beta_raw.shape, generator=gen) * 4 - 2)
                mod.gamma.copy_(torch.rand(mod.gamma.shape, generator=gen) + 0.5)


def paper_network(model_cfg: dict[str, Any] | None = None, *, seed: int = 0,
                  progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Build, export and lower a randomly initialised Spikformer LRF-Dyn (default
    :data:`PAPER_MODEL`, Spikformer-8-512) and its stream blocks.

    Returns ``graph``, ``net``, ``blocks`` (None if the streams do not lower),
    ``streams`` (how they were lowered) and ``stats`` (seconds per stage, the process's
    peak resident memory, group, neuron and stored-weight counts).
    """
    import torch

    from lrfdyn.export.to_nir import model_to_nir
    from lrfdyn.sim.memory_measured import lower_with_stats
    from lrfdyn.train.models import build_model

    cfg = dict(PAPER_MODEL if model_cfg is None else model_cfg)
    say = progress or (lambda msg: None)
    t0 = time.perf_counter()
    attention = cfg.get("attention", "lrf_dyn")
    option = f", token {cfg.get('token', 'v')}" if attention == "lrf_dyn" else ""
    say(f"memory: building a random-init Spikformer-{cfg['depth']}-{cfg['dim']} {attention} "
        f"({cfg['img_size']}×{cfg['img_size']}{option}) ...")
    torch.manual_seed(seed)
    model = build_model("spikformer", cfg).eval()
    trained_like(model, seed)
    graph = model_to_nir(model, (cfg["in_channels"], cfg["img_size"], cfg["img_size"]),
                         cfg["timesteps"])
    del model
    stats: dict[str, Any] = {"export_s": round(time.perf_counter() - t0, 2)}
    say(f"memory: exported to NIR in {stats['export_s']:.1f} s; lowering it ...")
    streams = attention == "lrf_dyn"
    net, blocks, note, lowering = lower_with_stats(graph, streams=streams, progress=say)
    if not streams:
        note = f"none ({attention} has no token streams)"
    stats.update(lowering)
    return {"graph": graph, "net": net, "blocks": blocks, "streams": note, "stats": stats,
            "config": cfg}


def _unlowerable(row: str, cfg: dict[str, Any]) -> str | None:
    """Why ``row`` cannot lower at ``cfg``'s shape, known before lowering anything: the
    gate's offset (the largest count M) is an 8-bit weight of an exact graded node."""
    tokens = (int(cfg["img_size"]) // math.prod(int(s) for s in cfg["stem_strides"])) ** 2
    if row == "a2os2a":
        neurons = a2os2a_neurons(int(cfg["dim"]), tokens, int(cfg["heads"]),
                                 int(cfg.get("depth", 1)))
        need = neurons * LOWER_BYTES_PER_NEURON
        if need > max_memory():
            return (f"A²OS²A's attention alone is {neurons:,} neurons (d·N² per product node), "
                    f"about {format_bytes(need)} to lower, over the memory budget of "
                    f"{format_bytes(max_memory())}; counted in closed form")
        return None
    if row != "statten":
        return None
    cap = int(cfg.get("statten_block", 2)) * tokens
    if cap > fixed.WEIGHT_MAX:
        return (f"STAtten's gate offset is blocks x tokens = {cap}, beyond the {fixed.WEIGHT_MAX} "
                "an exact 8-bit weight holds; counted in closed form")
    return None



def measured_variants(cfg: dict[str, Any], *, seed: int = 0,
                      progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Attention memory of SSA and LRF-SSA at the shape of Spikformer config ``cfg``, each
    counted off its own lowered network (:func:`paper_network` with that attention).

    Returns ``memory`` (row -> :class:`Memory`) and ``stats`` (row -> the lowering's
    figures, plus the attention's neurons and groups).
    """
    from lrfdyn.sim.memory_measured import attention_totals

    base = {k: v for k, v in cfg.items() if k not in ("token", "gate", "k_dendrites")}
    memory: dict[str, Memory] = {}
    stats: dict[str, Any] = {}
    for row in VARIANT_ROWS:
        unfit = _unlowerable(row, base)
        if unfit:
            stats[row] = {"not_lowered": unfit}
            continue
        built = paper_network({**base, "attention": row}, seed=seed, progress=progress)
        memory[row], inside = attention_totals(built["net"])
        stats[row] = {**built["stats"], **inside}
        del built
    return {"memory": memory, "stats": stats}


def memory_report(graph: Any, *, paper: bool = True, paper_model: dict[str, Any] | None = None,
                  progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The comparison at the graph's scale and at the paper's (Spikformer-8-512).

    The LRF-Dyn rows are counted off lowered networks at both scales (at the paper's,
    a random-init model built by :func:`paper_network`; ``paper=False`` skips it and
    leaves the closed form alone there); the other attentions off same-shape networks
    (:func:`measured_variants`), where they lower.
    """
    from lrfdyn.export.transformer import spikformer_config
    from lrfdyn.loihi.dendritic import dendrite_nodes
    from lrfdyn.sim.memory import (assemble, closed_form_section, scale_section,
                                   whole_network_section)
    from lrfdyn.sim.memory_closed_form import graph_scale
    from lrfdyn.sim.memory_measured import lower_for_memory, measured_lowered

    dendrite_nodes(graph)  # refuse a graph without LRF-Dyn before lowering anything
    net, blocks, note = lower_for_memory(graph)
    variants = measured_variants(spikformer_config(graph), progress=progress)
    small = scale_section({**variants["memory"], **measured_lowered(net, blocks)},
                          graph_scale(graph, net))
    small["streams"] = note
    small["variants"] = variants["stats"]
    if blocks is not None:  # whole networks, beside each other: parallel and the one network
        small["whole_network"] = whole_network_section(net, blocks)
    if not paper:
        return assemble(small, closed_form_section(PAPER_SCALE))
    model = paper_model if paper_model is not None else PAPER_MODEL
    built = paper_network(model, progress=progress)
    big_scale = graph_scale(built["graph"], built["net"])
    lowered = measured_lowered(built["net"], built["blocks"])
    del built["graph"], built["net"]
    variants = measured_variants(model, progress=progress)
    big = scale_section({**variants["memory"], **lowered}, big_scale)
    big["variants"] = variants["stats"]
    big["lowering"] = {**built["stats"], "streams": built["streams"],
                       "model": built["config"], "init": "random-init (seed 0; BN statistics "
                       "and dendrite β, Γ drawn as after training)"}
    if built["blocks"] is None:  # the dendritic row falls back to the closed form
        big["closed_form_rows"] = ["lrf_dyn_dendritic"]
    return assemble(small, big)
