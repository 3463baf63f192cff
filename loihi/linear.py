"""Linear NIR nodes as sparse matrices, and their composition into one synapse layer.

Every linear NIR node (Affine, Linear, Scale, Conv1d, Conv2d, Flatten, SumPool2d,
AvgPool2d) is, for a given input shape, a matrix on the C-order flattened input
plus a bias. Lowering composes chains and sums of such nodes between two
neuron groups into a single matrix per (source, target) pair (DESIGN.md §4:
"Linear maps compose"), so no relay neuron is ever needed between them.

Dispatch is by table: :data:`MATRIX_BUILDERS` maps a node type to a function
``(node, input_shape) -> LinearMap``.

A NIR ``Delay`` is linear too, but it shifts time rather than mixing values, so
an expression keys its terms by :class:`Tap` (source, lag in steps): paths from
one source that reach a target with different lags become different synapses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import nir
import numpy as np
import scipy.sparse as sp

from lrfdyn.errors import UnsupportedNodeError, ValidationError
from lrfdyn.registry import registrar


@dataclass(eq=False)
class LinearMap:
    """``y = matrix @ x + bias`` on flattened arrays; ``out_shape`` is y's unflattened shape."""

    matrix: sp.csr_matrix
    bias: np.ndarray | None
    out_shape: tuple[int, ...]


class Tap(NamedTuple):
    """A source's output ``lag`` steps ago (``lag`` > 0 only behind a NIR Delay)."""

    source: str
    lag: int = 0


@dataclass(eq=False)
class Expression:
    """An affine function of delayed sources: ``Σ_tap M_tap @ s_tap.source[t − tap.lag] + bias``."""

    terms: dict[Tap, sp.csr_matrix]
    bias: np.ndarray
    shape: tuple[int, ...]

    @classmethod
    def source(cls, name: str, shape: tuple[int, ...]) -> Expression:
        n = int(np.prod(shape))
        return cls({Tap(name): sp.identity(n, format="csr", dtype=np.float64)}, np.zeros(n),
                   shape)

    def delayed(self, lags: np.ndarray) -> Expression:
        """This expression seen through per-element delays of ``lags`` steps (NIR Delay).

        Each distinct lag selects its rows and shifts every tap by it; a constant bias
        is the same at every step, so it passes unchanged.
        """
        lags = np.broadcast_to(np.asarray(lags, np.int64).ravel(), self.bias.shape)
        terms: dict[Tap, sp.csr_matrix] = {}
        for lag in np.unique(lags):
            rows = sp.diags((lags == lag).astype(np.float64), format="csr")
            for tap, mat in self.terms.items():
                key = Tap(tap.source, tap.lag + int(lag))
                part = (rows @ mat).tocsr()
                terms[key] = (terms[key] + part).tocsr() if key in terms else part
        return Expression(terms, self.bias, self.shape)

    def then(self, m: LinearMap) -> Expression:
        """Apply a linear node after this expression."""
        if m.matrix.shape[1] != self.bias.size:
            raise ValidationError(
                f"a linear node expects {m.matrix.shape[1]} inputs but receives {self.bias.size}"
            )
        terms = {tap: (m.matrix @ mat).tocsr() for tap, mat in self.terms.items()}
        bias = m.matrix @ self.bias + (0.0 if m.bias is None else m.bias)
        return Expression(terms, np.asarray(bias, np.float64), m.out_shape)

    def plus(self, other: Expression) -> Expression:
        """Sum of two expressions (NIR sums the edges entering a node)."""
        if other.bias.size != self.bias.size:
            raise ValidationError(
                f"edges entering one node carry {self.bias.size} and {other.bias.size} values"
            )
        terms = dict(self.terms)
        for tap, mat in other.terms.items():
            terms[tap] = (terms[tap] + mat).tocsr() if tap in terms else mat
        return Expression(terms, self.bias + other.bias, self.shape)


MatrixBuilder = Callable[[nir.NIRNode, tuple[int, ...]], LinearMap]
MATRIX_BUILDERS: dict[type, MatrixBuilder] = {}


register = registrar(MATRIX_BUILDERS)


def linear_map(node: nir.NIRNode, in_shape: tuple[int, ...], name: str) -> LinearMap:
    try:
        builder = MATRIX_BUILDERS[type(node)]
    except KeyError:
        raise UnsupportedNodeError(f"{name}: {type(node).__name__} is not a linear node") from None
    return builder(node, tuple(int(v) for v in in_shape))


def _flat_weight(weight: np.ndarray, in_shape: tuple[int, ...], name: str) -> np.ndarray:
    w = np.asarray(weight, np.float64)
    if w.ndim != 2 or w.shape[1] != int(np.prod(in_shape)):
        raise ValidationError(
            f"{name} weight {w.shape} does not fit an input of {int(np.prod(in_shape))} values"
        )
    return w


@register(nir.Affine)
def _affine(node: nir.Affine, in_shape: tuple[int, ...]) -> LinearMap:
    w = _flat_weight(node.weight, in_shape, "Affine")
    return LinearMap(sp.csr_matrix(w), np.asarray(node.bias, np.float64).ravel(), (w.shape[0],))


@register(nir.Linear)
def _linear(node: nir.Linear, in_shape: tuple[int, ...]) -> LinearMap:
    w = _flat_weight(node.weight, in_shape, "Linear")
    return LinearMap(sp.csr_matrix(w), None, (w.shape[0],))


@register(nir.Scale)
def _scale(node: nir.Scale, in_shape: tuple[int, ...]) -> LinearMap:
    n = int(np.prod(in_shape))
    scale = np.asarray(node.scale, np.float64)
    if scale.size == n:
        diag = scale.ravel()
    else:  # one scale per channel (leading axis)
        diag = np.repeat(scale.ravel(), n // max(scale.size, 1))
    if diag.size != n:
        raise ValidationError(f"Scale of {scale.size} values does not fit {in_shape}")
    return LinearMap(sp.diags(diag, format="csr"), None, in_shape)


@register(nir.Flatten)
def _flatten(node: nir.Flatten, in_shape: tuple[int, ...]) -> LinearMap:
    n = int(np.prod(in_shape))
    return LinearMap(sp.identity(n, format="csr"), None, (n,))


def _pair(v: object) -> tuple[int, int]:
    arr = np.atleast_1d(np.asarray(v)).astype(int)
    return (int(arr[0]), int(arr[-1]))


def conv2d_matrix(
    weight: np.ndarray, in_shape: tuple[int, int, int], stride: tuple[int, int],
    padding: tuple[int, int], dilation: tuple[int, int], groups: int,
) -> tuple[sp.csr_matrix, tuple[int, int, int]]:
    """PyTorch-convention (cross-correlation) Conv2d as a sparse matrix on (C, H, W) inputs."""
    c_in, h, w = in_shape
    c_out, c_g, kh, kw = weight.shape
    if c_g * groups != c_in or c_out % groups:
        raise ValidationError(
            f"Conv2d weight {weight.shape} with groups={groups} does not fit {c_in} channels"
        )
    ho = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    per_group = c_out // groups
    co, ci, p, q = np.meshgrid(np.arange(c_out), np.arange(c_g), np.arange(kh), np.arange(kw),
                               indexing="ij")
    vals = weight[co, ci, p, q].ravel()
    keep = vals != 0
    co, ci, p, q, vals = co.ravel()[keep], ci.ravel()[keep], p.ravel()[keep], q.ravel()[keep], \
        vals[keep]
    cin = (co // per_group) * c_g + ci
    oy, ox = np.meshgrid(np.arange(ho), np.arange(wo), indexing="ij")
    oy, ox = oy.ravel(), ox.ravel()
    iy = oy[None, :] * stride[0] - padding[0] + (p * dilation[0])[:, None]
    ix = ox[None, :] * stride[1] - padding[1] + (q * dilation[1])[:, None]
    valid = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
    rows = (co[:, None] * ho * wo + oy[None, :] * wo + ox[None, :])[valid]
    cols = (cin[:, None] * h * w + iy * w + ix)[valid]
    data = np.broadcast_to(vals[:, None], valid.shape)[valid]
    mat = sp.csr_matrix((data, (rows, cols)), shape=(c_out * ho * wo, c_in * h * w))
    mat.sum_duplicates()
    return mat, (c_out, ho, wo)


@register(nir.Conv2d)
def _conv2d(node: nir.Conv2d, in_shape: tuple[int, ...]) -> LinearMap:
    if len(in_shape) != 3:
        raise ValidationError(f"Conv2d needs a (C, H, W) input, got {in_shape}")
    if isinstance(node.padding, str):
        raise UnsupportedNodeError("Conv2d with string padding is not supported; use integers")
    mat, out_shape = conv2d_matrix(
        np.asarray(node.weight, np.float64), in_shape, _pair(node.stride), _pair(node.padding),
        _pair(node.dilation), int(node.groups),
    )
    bias = np.repeat(np.asarray(node.bias, np.float64).ravel(), out_shape[1] * out_shape[2])
    return LinearMap(mat, bias if np.any(bias) else None, out_shape)


@register(nir.Conv1d)
def _conv1d(node: nir.Conv1d, in_shape: tuple[int, ...]) -> LinearMap:
    if len(in_shape) != 2:
        raise ValidationError(f"Conv1d needs a (C, L) input, got {in_shape}")
    weight = np.asarray(node.weight, np.float64)[:, :, None, :]
    if isinstance(node.padding, str):
        raise UnsupportedNodeError("Conv1d with string padding is not supported; use integers")
    pad = int(np.atleast_1d(node.padding)[0])
    mat, (c, _, length) = conv2d_matrix(
        weight, (in_shape[0], 1, in_shape[1]), (1, int(np.atleast_1d(node.stride)[0])),
        (0, pad), (1, int(np.atleast_1d(node.dilation)[0])), int(node.groups),
    )
    bias = np.repeat(np.asarray(node.bias, np.float64).ravel(), length)
    return LinearMap(mat, bias if np.any(bias) else None, (c, length))


def _pool(node: nir.NIRNode, in_shape: tuple[int, ...], average: bool) -> LinearMap:
    if len(in_shape) != 3:
        raise ValidationError(f"{type(node).__name__} needs a (C, H, W) input, got {in_shape}")
    c, h, w = in_shape
    kh, kw = _pair(node.kernel_size)
    weight = np.zeros((c, 1, kh, kw))
    weight[:] = 1.0 / (kh * kw) if average else 1.0
    mat, out_shape = conv2d_matrix(weight, in_shape, _pair(node.stride), _pair(node.padding),
                                   (1, 1), c)
    return LinearMap(mat, None, out_shape)


@register(nir.SumPool2d)
def _sumpool(node: nir.SumPool2d, in_shape: tuple[int, ...]) -> LinearMap:
    return _pool(node, in_shape, average=False)


@register(nir.AvgPool2d)
def _avgpool(node: nir.AvgPool2d, in_shape: tuple[int, ...]) -> LinearMap:
    return _pool(node, in_shape, average=True)
