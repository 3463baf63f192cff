"""Several samples through one compiled Lava network: independent copies side by side.

Lava runs one OS process per process model, and every time step costs each of them a
round of messages whatever the group sizes; on a small or medium network that overhead,
not the arithmetic, sets the speed. :func:`copy_network` turns a
:class:`~lrfdyn.loihi.ir.LoweredNetwork` into one whose every group holds ``k``
copies of the original neurons, wired so that copies cannot interact:

* every group's flat layout becomes copy-major, ``(k, *shape)``: neuron ``j`` of copy
  ``c`` is ``c·size + j``; LIF parameters that vary per neuron are tiled;
* a Dense/Sparse layer becomes block-diagonal (one block per copy; the zeros outside the
  blocks change neither Lava's sign mode nor its LSB truncation, which look only at the
  non-zero weights, nor any sum);
* a Conv layer on ``(C, H, W)`` becomes one on ``(k·C, H, W)`` with ``k·groups`` groups and
  the kernel stacked ``k`` times along its output channels: group ``c·groups + j`` is
  group ``j`` of copy ``c``, so the kernel is still stored once per copy, never per position;
* the clock sources (the always-on bias, a block sum's phases) stay single (every copy
  gets the same spike at the same step), their layers' rows are tiled.

Delays, latencies and the drain are the original network's, so a block of ``k`` samples
takes the Lava steps of one and each copy's spikes equal a run of its sample alone
(``tests/loihi/test_copies.py`` feeds silence to one copy while its neighbours spike).

:func:`copy_block` does the same for a dendritic stream network
(:class:`~lrfdyn.loihi.dendritic.DendriticBlock`): the token source is copied, the masks
and the bias, identical for every stream, stay shared.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import scipy.sparse as sp

from lrfdyn.errors import ValidationError
from lrfdyn.loihi.ir import LoweredNetwork, NeuronGroup, SynapseSpec, clock_offset

#: Neurons (all copies together) that one Lava network is sized to. On the MNIST-5k LRF-Dyn
#: model (116k neurons, ~110 Lava processes) a step costs about the same for 1 copy as for
#: several: 8.1 s per sample alone, 20.8 s per block of 8 and 29.5 s per block of 16 on the
#: shared 2-core machine (benchmarks/bench_throughput.py); ~2 M neurons keeps a network's
#: arrays to tens of MB per process.
NEURON_BUDGET = 2_000_000
#: Copies are capped regardless of size (recording files and the input schedule grow with k).
MAX_COPIES = 32
#: A block-diagonal Dense layer larger than this many stored weights becomes Sparse.
DENSE_LIMIT = 1 << 22


def copies_for(neurons: int, samples: int | None = None, *, budget: int = NEURON_BUDGET,
               limit: int = MAX_COPIES) -> int:
    """The one copy-count rule: as many copies of a network of ``neurons`` as fit
    ``budget`` neurons, at most ``limit`` and at most ``samples``, at least 1."""
    k = max(1, min(limit, budget // max(neurons, 1)))
    return k if samples is None else min(k, max(1, samples))


def choose_copies(net: LoweredNetwork, samples: int | None = None, *,
                  budget: int = NEURON_BUDGET, limit: int = MAX_COPIES) -> int:
    """Copies per Lava network for ``net`` (:func:`copies_for` of its neurons and input)."""
    neurons = sum(g.size for g in net.groups.values()) + net.input.size
    return copies_for(neurons, samples, budget=budget, limit=limit)


def choose_stream_copies(blocks, samples: int | None = None, *,
                         budget: int = NEURON_BUDGET, limit: int = MAX_COPIES) -> int:
    """Copies per stream network for dendritic ``blocks``, by the largest block's size."""
    neurons = max((sum(b.sizes().values()) for b in blocks), default=1)
    return copies_for(neurons, samples, budget=budget, limit=limit)


def _tile_param(value, size: int, copies: int):
    """A per-neuron parameter (an array of ``size``) tiled over copies; scalars unchanged."""
    arr = np.asarray(value)
    if arr.ndim and arr.size == size:
        return np.tile(arr.reshape(size), copies)
    return value


def _copy_group(g: NeuronGroup, copies: int) -> NeuronGroup:
    params = g.params
    if dataclasses.is_dataclass(params):
        changes = {f.name: _tile_param(getattr(params, f.name), g.size, copies)
                   for f in dataclasses.fields(params)}
        params = dataclasses.replace(params, **changes)
    shape = (copies, *g.shape) if g.shape else (copies, g.size)
    return dataclasses.replace(g, size=g.size * copies, params=params, shape=shape)


def _block_diagonal(w: np.ndarray | sp.spmatrix, copies: int) -> np.ndarray | sp.csr_matrix:
    if sp.issparse(w):
        return sp.block_diag([w] * copies, format="csr", dtype=w.dtype)
    w = np.asarray(w)
    if w.size * copies * copies > DENSE_LIMIT:
        return sp.block_diag([sp.csr_matrix(w)] * copies, format="csr", dtype=w.dtype)
    out = np.zeros((w.shape[0] * copies, w.shape[1] * copies), w.dtype)
    for c in range(copies):
        out[c * w.shape[0]:(c + 1) * w.shape[0], c * w.shape[1]:(c + 1) * w.shape[1]] = w
    return out


def _tiled_rows(w: np.ndarray | sp.spmatrix, copies: int) -> np.ndarray | sp.csr_matrix:
    """Rows repeated per copy: a single source (a bias) feeding every copy alike."""
    if sp.issparse(w):
        return sp.vstack([w] * copies, format="csr", dtype=w.dtype)
    return np.tile(np.asarray(w), (copies, 1))


def _copy_synapse(s: SynapseSpec, copies: int, shared_src: bool) -> SynapseSpec:
    if s.conv is not None:
        if shared_src:
            raise ValidationError(f"synapse {s.name}: a conv from a shared source cannot be "
                                  "copied")
        c = s.conv
        weight = np.tile(np.asarray(c.weight), (copies, 1, 1, 1))
        conv = dataclasses.replace(c, weight=weight,
                                   in_shape=(c.in_shape[0] * copies, *c.in_shape[1:]),
                                   groups=c.groups * copies)
        return dataclasses.replace(s, weights=np.tile(np.asarray(s.weights), (copies, 1, 1, 1)),
                                   conv=conv)
    w = _tiled_rows(s.weights, copies) if shared_src else _block_diagonal(s.weights, copies)
    return dataclasses.replace(s, weights=w)


def copy_network(net: LoweredNetwork, copies: int) -> LoweredNetwork:
    """``net`` with every group, synapse layer and the input repeated ``copies`` times,
    copy-major and without connections between copies (see the module docstring)."""
    if copies < 1:
        raise ValidationError(f"copies must be at least 1, got {copies}")
    if copies == 1:
        return net
    groups = {name: _copy_group(g, copies) for name, g in net.groups.items()}
    synapses = [_copy_synapse(s, copies, clock_offset(s.src) is not None) for s in net.synapses]
    inp = dataclasses.replace(net.input, size=net.input.size * copies)
    return dataclasses.replace(net, input=inp, groups=groups, synapses=synapses,
                               copies=net.copies * copies)


def stack_samples(x: np.ndarray, copies: int) -> np.ndarray:
    """Samples ``(N, ...size)`` as ``ceil(N/k)`` blocks of ``k`` copies, copy-major on the
    last axis; missing samples of the last block are silent (zeros).

    ``(N, n)`` → ``(B, k·n)``; ``(N, T, n)`` → ``(B, T, k·n)``.
    """
    x = np.asarray(x)
    n = len(x)
    blocks = math.ceil(n / copies)
    padded = np.zeros((blocks * copies, *x.shape[1:]), x.dtype)
    padded[:n] = x
    per = padded.reshape(blocks, copies, *x.shape[1:])
    # Move the copy axis next to the feature axis: (B, [T,] k, n) → (B, [T,] k·n).
    per = np.moveaxis(per, 1, -2)
    return per.reshape(blocks, *x.shape[1:-1], copies * x.shape[-1])


def split_copies(values: np.ndarray, copies: int, n: int) -> np.ndarray:
    """Recorded ``(B, steps, k·size)`` → per sample ``(n, steps, size)`` (first ``n`` kept)."""
    b, steps, width = values.shape
    size = width // copies
    per = values.reshape(b, steps, copies, size).transpose(0, 2, 1, 3)
    return per.reshape(b * copies, steps, size)[:n]


# ---------------------------------------------------------------- dendritic streams


def copy_block(block, copies: int, shared_sources: tuple[str, ...] = ()):
    """A :class:`~lrfdyn.loihi.dendritic.DendriticBlock` whose every process holds
    ``copies`` independent streams side by side (``d`` → ``copies·d``).

    Layers from ``shared_sources`` (the masks and the bias, the same for every stream)
    get their rows tiled; every other layer becomes block-diagonal.
    """
    if copies == 1:
        return block
    layers = [dataclasses.replace(
        la, weights=(_tiled_rows(la.weights, copies) if la.src in shared_sources
                     else _block_diagonal(la.weights, copies)))
        for la in block.layers]
    return dataclasses.replace(block, d=block.d * copies,
                               dv=np.tile(np.asarray(block.dv), copies), layers=layers)


def stack_streams(data: dict[str, np.ndarray], copies: int, streams_per_sample: int,
                  shared_sources: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Source data ``name -> (S, L, size)`` (S = samples · streams_per_sample, sample-major)
    as ``(B·streams_per_sample, L, k·size)``: copy ``c`` of block ``b`` runs sample
    ``b·k + c``'s streams; shared sources keep the first copy's data."""
    out = {}
    for name, v in data.items():
        s, length, size = v.shape
        samples = s // streams_per_sample
        per = v.reshape(samples, streams_per_sample, length, size)
        stacked = stack_samples(per.reshape(samples, -1), copies)  # (B, k·T·L·size)
        b = len(stacked)
        stacked = stacked.reshape(b, copies, streams_per_sample, length, size)
        if name in shared_sources:
            out[name] = stacked[:, 0].reshape(b * streams_per_sample, length, size)
        else:
            out[name] = stacked.transpose(0, 2, 3, 1, 4).reshape(
                b * streams_per_sample, length, copies * size)
    return out


def split_streams(values: np.ndarray, copies: int, streams_per_sample: int,
                  samples: int) -> np.ndarray:
    """Recorded ``(B·T, L, k·size)`` → ``(samples·T, L, size)``, sample-major."""
    bt, length, width = values.shape
    size = width // copies
    b = bt // streams_per_sample
    per = values.reshape(b, streams_per_sample, length, copies, size).transpose(0, 3, 1, 2, 4)
    return per.reshape(b * copies * streams_per_sample, length, size)[
        :samples * streams_per_sample]


def fits_copies(net: LoweredNetwork) -> bool:
    """Whether every layer can be copied (a conv fed by a shared source cannot)."""
    return all(not (s.conv is not None and clock_offset(s.src) is not None)
               for s in net.synapses)


__all__ = ["NEURON_BUDGET", "MAX_COPIES", "choose_copies", "choose_stream_copies", "copy_network", "stack_samples",
           "split_copies", "copy_block", "stack_streams", "split_streams", "fits_copies"]
