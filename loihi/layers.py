"""Typed synapse layers: the representation between NIR and Lava (docs/design.md §2.2).

A linear NIR node, or a chain of them between two neuron groups, is one of two
kinds of linear map on C-order flattened arrays:

* :class:`ConvMap`, a 2-D convolution whose kernel is stored once however many
  positions it serves: per-token Linear (1×1), the stem, depthwise LRF convs,
  the dendritic token kernel, pooling, per-channel Scale. It becomes Lava's
  ``Conv`` process.
* :class:`MatrixMap`, an explicit matrix, only where nothing is shared (the head's
  Affine after Flatten, peers' MLPs). It becomes ``Dense`` or ``Sparse``.

:func:`compose` joins ``b ∘ a`` only where the result keeps sharing: a conv after
a conv is a conv when ``b`` reads no zero padding of ``a``'s output (``b`` valid, or
``a`` pointwise); a matrix absorbs its neighbour while the product stays small.
Otherwise it returns ``None`` and lowering keeps ``a``'s output as a relay (a graded
neuron group), so each kernel is still stored once.

Every map applies itself to a batch in torch (:meth:`apply`) without building a
per-position matrix; :meth:`matrix` exists for small maps and for tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import nir
import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from lrfdyn.errors import UnsupportedNodeError, ValidationError
from lrfdyn.registry import registrar

Pair = tuple[int, int]

#: A composed explicit matrix may hold this many non-zeros even when it holds more than
#: its two factors together: small heads stay one Dense layer, as before.
SMALL_MATRIX = 1 << 16


def _pair(v: object) -> Pair:
    arr = np.atleast_1d(np.asarray(v)).astype(int)
    return (int(arr[0]), int(arr[-1]))


def conv_out_hw(hw: Pair, kernel: Pair, stride: Pair, padding: Pair, dilation: Pair) -> Pair:
    return tuple(  # type: ignore[return-value]
        (hw[i] + 2 * padding[i] - dilation[i] * (kernel[i] - 1) - 1) // stride[i] + 1
        for i in range(2))


@dataclass(eq=False)
class ConvMap:
    """PyTorch-convention Conv2d (cross-correlation) on a ``(C, H, W)`` input.

    ``weight`` is ``(c_out, c_in // groups, kh, kw)``: float while wiring, integer
    mantissas once quantized.
    """

    weight: np.ndarray
    in_shape: tuple[int, int, int]
    stride: Pair = (1, 1)
    padding: Pair = (0, 0)
    dilation: Pair = (1, 1)
    groups: int = 1

    def __post_init__(self) -> None:
        c_out, c_g, kh, kw = self.weight.shape
        c_in = self.in_shape[0]
        if c_g * self.groups != c_in or c_out % self.groups:
            raise ValidationError(
                f"Conv2d weight {self.weight.shape} with groups={self.groups} does not fit "
                f"{c_in} input channels"
            )
        h, w = conv_out_hw(self.in_shape[1:], (kh, kw), self.stride, self.padding, self.dilation)
        if h < 1 or w < 1:
            raise ValidationError(f"Conv2d kernel {kh}x{kw} does not fit input {self.in_shape}")

    @property
    def kernel(self) -> Pair:
        return (int(self.weight.shape[2]), int(self.weight.shape[3]))

    @property
    def out_shape(self) -> tuple[int, int, int]:
        h, w = conv_out_hw(self.in_shape[1:], self.kernel, self.stride, self.padding,
                           self.dilation)
        return (int(self.weight.shape[0]), h, w)

    @property
    def n_in(self) -> int:
        return math.prod(self.in_shape)

    @property
    def n_out(self) -> int:
        return math.prod(self.out_shape)

    @property
    def stored(self) -> int:
        """Weights the layer stores: its kernel, once."""
        return int(self.weight.size)

    @property
    def pointwise(self) -> bool:
        """1×1, stride 1, no padding: a per-position channel map."""
        return (self.kernel == (1, 1) and self.stride == (1, 1) and self.padding == (0, 0))

    @property
    def depthwise(self) -> bool:
        return self.groups == self.in_shape[0] == self.weight.shape[0]

    def with_weight(self, weight: np.ndarray) -> ConvMap:
        return replace(self, weight=weight)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, n_in)`` → ``(B, n_out)``, in x's dtype and device."""
        w = torch.as_tensor(self.weight, dtype=x.dtype, device=x.device)
        y = F.conv2d(x.reshape(-1, *self.in_shape), w, stride=self.stride,
                     padding=self.padding, dilation=self.dilation, groups=self.groups)
        return y.reshape(x.shape[0], -1)

    def matrix(self) -> sp.csr_matrix:
        return conv2d_matrix(np.asarray(self.weight, np.float64), self.in_shape, self.stride,
                             self.padding, self.dilation, self.groups)[0]

    def fan_out(self) -> np.ndarray:
        """Non-zero synapses leaving each input neuron (what one of its spikes costs)."""
        mask = torch.as_tensor(np.asarray(self.weight) != 0, dtype=torch.float64)
        ones = torch.ones((1, *self.out_shape), dtype=torch.float64)
        # The adjoint of the conv counts, for every input, the outputs whose window holds it.
        back = torch.nn.grad.conv2d_input((1, *self.in_shape), mask, ones, stride=self.stride,
                                          padding=self.padding, dilation=self.dilation,
                                          groups=self.groups)
        return np.rint(back.numpy().ravel()).astype(np.int64)

    def dense_weight(self) -> np.ndarray:
        """The ungrouped ``(c_out, c_in, kh, kw)`` weight (zeros between groups)."""
        c_out, c_g, kh, kw = self.weight.shape
        full = np.zeros((c_out, c_g * self.groups, kh, kw), self.weight.dtype)
        per = c_out // self.groups
        for g in range(self.groups):
            full[g * per:(g + 1) * per, g * c_g:(g + 1) * c_g] = self.weight[g * per:(g + 1) * per]
        return full


@dataclass(eq=False)
class MatrixMap:
    """An explicit ``(n_out, n_in)`` matrix; ``out_shape`` is its output's unflattened shape."""

    matrix_: sp.csr_matrix
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]

    @property
    def n_in(self) -> int:
        return int(self.matrix_.shape[1])

    @property
    def n_out(self) -> int:
        return int(self.matrix_.shape[0])

    @property
    def stored(self) -> int:
        return int(self.matrix_.nnz)

    def matrix(self) -> sp.csr_matrix:
        return self.matrix_

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        m = self.matrix_.tocoo()
        idx = torch.as_tensor(np.vstack([m.row, m.col]), dtype=torch.int64, device=x.device)
        t = torch.sparse_coo_tensor(idx, torch.as_tensor(m.data, dtype=x.dtype, device=x.device),
                                    m.shape)
        return torch.sparse.mm(t, x.T).T

    def fan_out(self) -> np.ndarray:
        return np.asarray((self.matrix_ != 0).sum(axis=0)).ravel().astype(np.int64)


LinearMap = ConvMap | MatrixMap


def identity(shape: tuple[int, ...]) -> LinearMap:
    """The identity on ``shape``: a 1×1 depthwise conv of ones on a grid, else a matrix."""
    if len(shape) == 3:
        c = shape[0]
        return ConvMap(np.ones((c, 1, 1, 1)), tuple(shape), groups=c)  # type: ignore[arg-type]
    n = math.prod(shape)
    return MatrixMap(sp.identity(n, format="csr", dtype=np.float64), shape, shape)


def is_identity(m: LinearMap) -> bool:
    if isinstance(m, ConvMap):
        return m.pointwise and m.depthwise and bool(np.all(m.weight == 1))
    mat = m.matrix_
    return (mat.shape[0] == mat.shape[1] and mat.nnz == mat.shape[0]
            and bool(np.all(mat.diagonal() == 1)))


def scale_rows(m: LinearMap, per_channel: np.ndarray) -> LinearMap:
    """``diag(s) ∘ m`` with one factor per output channel (conv) or output (matrix)."""
    if isinstance(m, ConvMap):
        return m.with_weight(m.weight * np.asarray(per_channel)[:, None, None, None])
    rows = np.repeat(per_channel, m.n_out // len(per_channel))
    return MatrixMap(sp.diags(rows) @ m.matrix_, m.in_shape, m.out_shape)


# ---------------------------------------------------------------- composition


def compose(b: LinearMap, a: LinearMap) -> LinearMap | None:
    """``b ∘ a`` as one map that keeps sharing, or None when none exists."""
    if a.n_out != b.n_in:
        raise ValidationError(f"a linear node expects {b.n_in} inputs but receives {a.n_out}")
    if is_identity(a) and (isinstance(b, MatrixMap) or tuple(a.out_shape) == b.in_shape):
        return b
    if is_identity(b) and (isinstance(a, MatrixMap) or tuple(b.in_shape) == a.out_shape):
        return a
    if isinstance(a, ConvMap) and isinstance(b, ConvMap):
        return _compose_convs(b, a)
    ma, mb = a.matrix(), b.matrix()
    prod = (mb @ ma).tocsr()
    prod.eliminate_zeros()
    if prod.nnz > max(ma.nnz + mb.nnz, SMALL_MATRIX):
        return None
    return MatrixMap(prod, tuple(a.in_shape), tuple(b.out_shape))


def _dilated_kernel(w: np.ndarray, dilation: Pair) -> np.ndarray:
    """A kernel with its dilation written out as zeros (so dilation becomes 1)."""
    if dilation == (1, 1):
        return w
    c_out, c_g, kh, kw = w.shape
    out = np.zeros((c_out, c_g, dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1), w.dtype)
    out[:, :, ::dilation[0], ::dilation[1]] = w
    return out


def _compose_convs(b: ConvMap, a: ConvMap) -> ConvMap | None:
    """``b ∘ a`` for two convs, exact where ``b`` reads no padding of ``a``'s grid.

    ``b``'s tap ``p`` at output ``z`` reads ``a``'s output at ``s_b·z + d_b·p − pad_b``; with
    ``pad_b = 0`` every such position lies on ``a``'s grid, and ``a`` there reads its input
    at ``s_a·(…) + d_a·q − pad_a``. The composed kernel sums, over b's taps, a's kernel
    shifted by ``s_a·d_b·p``; stride multiplies and a's padding carries over. When ``a`` is
    pointwise (a channel map at every position) b may pad: the padding it reads is a's
    zero either way.
    """
    if a.pointwise:
        return _channel_then(b, a)
    if b.pointwise and b.padding == (0, 0) and b.stride == (1, 1):
        return _then_channel(b, a)
    if b.padding != (0, 0):
        return None
    if not (b.depthwise or b.groups == 1 and a.groups == 1):
        return None
    wa = _dilated_kernel(np.asarray(a.weight), a.dilation)
    ka = wa.shape[2:]
    kb = b.kernel
    step = (a.stride[0] * b.dilation[0], a.stride[1] * b.dilation[1])
    kh, kw = ka[0] + step[0] * (kb[0] - 1), ka[1] + step[1] * (kb[1] - 1)
    if b.depthwise:  # channel o of b reads channel o of a
        out = np.zeros((wa.shape[0], wa.shape[1], kh, kw))
        for p in range(kb[0]):
            for q in range(kb[1]):
                tap = np.asarray(b.weight)[:, 0, p, q][:, None, None, None]
                out[:, :, step[0] * p:step[0] * p + ka[0], step[1] * q:step[1] * q + ka[1]] += \
                    tap * wa
        groups = a.groups
    else:
        out = np.zeros((b.weight.shape[0], wa.shape[1], kh, kw))
        for p in range(kb[0]):
            for q in range(kb[1]):
                out[:, :, step[0] * p:step[0] * p + ka[0], step[1] * q:step[1] * q + ka[1]] += \
                    np.einsum("om,mikl->oikl", np.asarray(b.weight)[:, :, p, q], wa)
        groups = 1
    stride = (a.stride[0] * b.stride[0], a.stride[1] * b.stride[1])
    res = ConvMap(out, a.in_shape, stride, a.padding, (1, 1), groups)
    if res.out_shape != b.out_shape:
        return None
    return res if res.stored <= max(a.stored + b.stored, SMALL_MATRIX) else None


def _channel_then(b: ConvMap, a: ConvMap) -> ConvMap | None:
    """``b ∘ a`` with ``a`` a pointwise channel map (1×1 conv, stride 1, no padding)."""
    wa = np.asarray(a.weight)[:, :, 0, 0]  # (c_mid, c_in / g_a)
    if a.depthwise and b.groups in (1, b.in_shape[0]):
        return b.with_weight(np.asarray(b.weight) * _channel_factor(b, wa[:, 0]))
    if a.groups != 1:
        return None
    if b.depthwise:  # output o reads channel o of a: W[o, i] = b[o]·a[o, i]
        w = np.asarray(b.weight) * wa[:, :, None, None]
    elif b.groups == 1:
        w = np.einsum("omkl,mi->oikl", np.asarray(b.weight), wa)
    else:
        return None
    res = ConvMap(w, a.in_shape, b.stride, b.padding, b.dilation, 1)
    return res if res.stored <= max(a.stored + b.stored, SMALL_MATRIX) else None


def _channel_factor(b: ConvMap, scale: np.ndarray) -> np.ndarray:
    """b's weight factor for a per-channel scale of its input channels."""
    if b.groups == 1:
        return scale[None, :, None, None]
    return scale[:, None, None, None]  # depthwise: input channel = output channel


def _then_channel(b: ConvMap, a: ConvMap) -> ConvMap | None:
    """``b ∘ a`` with ``b`` a pointwise channel map."""
    wb = np.asarray(b.weight)[:, :, 0, 0]
    if b.depthwise:
        return a.with_weight(np.asarray(a.weight) * wb[:, 0][:, None, None, None])
    if b.groups != 1 or a.groups != 1:
        return None
    w = np.einsum("om,mikl->oikl", wb, np.asarray(a.weight))
    res = ConvMap(w, a.in_shape, a.stride, a.padding, a.dilation, 1)
    return res if res.stored <= max(a.stored + b.stored, SMALL_MATRIX) else None


def add(a: LinearMap, b: LinearMap) -> LinearMap | None:
    """``a + b`` (two paths from one source) as one map, or None if their structures differ."""
    if isinstance(a, ConvMap) and isinstance(b, ConvMap):
        same = (a.kernel == b.kernel and a.stride == b.stride and a.padding == b.padding
                and a.dilation == b.dilation and a.in_shape == b.in_shape)
        if same and a.groups == b.groups:
            return a.with_weight(np.asarray(a.weight) + np.asarray(b.weight))
        return None
    if isinstance(a, MatrixMap) and isinstance(b, MatrixMap):
        return MatrixMap((a.matrix_ + b.matrix_).tocsr(), a.in_shape, a.out_shape)
    return None


# ---------------------------------------------------------------- NIR nodes


@dataclass(eq=False)
class NodeMap:
    """A linear NIR node on a given input: ``y = map(x) + bias`` (bias flattened, or None)."""

    map: LinearMap
    bias: np.ndarray | None


MapBuilder = Callable[[nir.NIRNode, tuple[int, ...]], NodeMap]
MAP_BUILDERS: dict[type, MapBuilder] = {}
register = registrar(MAP_BUILDERS)


def node_map(node: nir.NIRNode, in_shape: tuple[int, ...], name: str) -> NodeMap:
    try:
        builder = MAP_BUILDERS[type(node)]
    except KeyError:
        raise UnsupportedNodeError(f"{name}: {type(node).__name__} is not a linear node") from None
    try:
        return builder(node, tuple(int(v) for v in in_shape))
    except ValidationError as exc:
        raise ValidationError(f"{name}: {exc}") from None


def _flat_weight(weight: np.ndarray, in_shape: tuple[int, ...], kind: str) -> np.ndarray:
    w = np.asarray(weight, np.float64)
    if w.ndim != 2 or w.shape[1] != math.prod(in_shape):
        raise ValidationError(
            f"{kind} weight {w.shape} does not fit an input of {math.prod(in_shape)} values"
        )
    return w


@register(nir.Affine)
def _affine(node: nir.Affine, in_shape: tuple[int, ...]) -> NodeMap:
    w = _flat_weight(node.weight, in_shape, "Affine")
    return NodeMap(MatrixMap(sp.csr_matrix(w), in_shape, (w.shape[0],)),
                   np.asarray(node.bias, np.float64).ravel())


@register(nir.Linear)
def _linear(node: nir.Linear, in_shape: tuple[int, ...]) -> NodeMap:
    w = _flat_weight(node.weight, in_shape, "Linear")
    return NodeMap(MatrixMap(sp.csr_matrix(w), in_shape, (w.shape[0],)), None)


@register(nir.Scale)
def _scale(node: nir.Scale, in_shape: tuple[int, ...]) -> NodeMap:
    n = math.prod(in_shape)
    scale = np.asarray(node.scale, np.float64)
    if len(in_shape) == 3:
        c = in_shape[0]
        per = scale.reshape(c, -1) if scale.size in (c, n) else None
        if per is not None and np.all(per == per[:, :1]):  # one factor per channel: shared
            return NodeMap(ConvMap(per[:, 0].reshape(c, 1, 1, 1).copy(), in_shape, groups=c),
                           None)
    if scale.size == n:
        diag = scale.ravel()
    else:  # one scale per channel (leading axis)
        diag = np.repeat(scale.ravel(), n // max(scale.size, 1))
    if diag.size != n:
        raise ValidationError(f"Scale of {scale.size} values does not fit {in_shape}")
    return NodeMap(MatrixMap(sp.diags(diag, format="csr"), in_shape, in_shape), None)


@register(nir.Flatten)
def _flatten(node: nir.Flatten, in_shape: tuple[int, ...]) -> NodeMap:
    n = math.prod(in_shape)
    return NodeMap(MatrixMap(sp.identity(n, format="csr"), in_shape, (n,)), None)


def conv_groups(weight: np.ndarray, groups: int) -> tuple[np.ndarray, int]:
    """Recover the groups of a conv written ungrouped (block-diagonal weights).

    Older lrfdyn files and some producers write a depthwise conv as a full
    ``(c, c, kh, kw)`` weight with zeros off the diagonal (nir 1.0.8 mistypes grouped
    convs). Storing it grouped keeps each channel's kernel once.
    """
    if groups != 1:
        return weight, groups
    c_out, c_in = weight.shape[:2]
    if c_out < 2 or c_in < 2:
        return weight, 1
    used = np.any(weight != 0, axis=(2, 3))
    for g in sorted(_common_divisors(c_out, c_in), reverse=True):
        if g == 1:
            break
        po, pi = c_out // g, c_in // g
        block = np.kron(np.eye(g, dtype=bool), np.ones((po, pi), dtype=bool))
        if not np.any(used & ~block):
            return np.concatenate([weight[i * po:(i + 1) * po, i * pi:(i + 1) * pi]
                                   for i in range(g)]), g
    return weight, 1


def _common_divisors(a: int, b: int) -> list[int]:
    g = math.gcd(a, b)
    return [d for d in range(1, g + 1) if g % d == 0]


@register(nir.Conv2d)
def _conv2d(node: nir.Conv2d, in_shape: tuple[int, ...]) -> NodeMap:
    if len(in_shape) != 3:
        raise ValidationError(f"Conv2d needs a (C, H, W) input, got {in_shape}")
    if isinstance(node.padding, str):
        raise UnsupportedNodeError("Conv2d with string padding is not supported; use integers")
    weight, groups = conv_groups(np.asarray(node.weight, np.float64), int(node.groups))
    m = ConvMap(weight, in_shape, _pair(node.stride), _pair(node.padding),
                _pair(node.dilation), groups)
    bias = np.repeat(np.asarray(node.bias, np.float64).ravel(), m.out_shape[1] * m.out_shape[2])
    return NodeMap(m, bias if np.any(bias) else None)


@register(nir.Conv1d)
def _conv1d(node: nir.Conv1d, in_shape: tuple[int, ...]) -> NodeMap:
    if len(in_shape) != 2:
        raise ValidationError(f"Conv1d needs a (C, L) input, got {in_shape}")
    if isinstance(node.padding, str):
        raise UnsupportedNodeError("Conv1d with string padding is not supported; use integers")
    weight = np.asarray(node.weight, np.float64)[:, :, None, :]
    pad = int(np.atleast_1d(node.padding)[0])
    mat, (c, _, length) = conv2d_matrix(
        weight, (in_shape[0], 1, in_shape[1]), (1, int(np.atleast_1d(node.stride)[0])),
        (0, pad), (1, int(np.atleast_1d(node.dilation)[0])), int(node.groups),
    )
    bias = np.repeat(np.asarray(node.bias, np.float64).ravel(), length)
    return NodeMap(MatrixMap(mat, in_shape, (c, length)), bias if np.any(bias) else None)


def _pool(node: nir.NIRNode, in_shape: tuple[int, ...], average: bool) -> NodeMap:
    if len(in_shape) != 3:
        raise ValidationError(f"{type(node).__name__} needs a (C, H, W) input, got {in_shape}")
    c = in_shape[0]
    kh, kw = _pair(node.kernel_size)
    weight = np.full((c, 1, kh, kw), 1.0 / (kh * kw) if average else 1.0)
    return NodeMap(ConvMap(weight, in_shape, _pair(node.stride), _pair(node.padding), (1, 1), c),
                   None)


@register(nir.SumPool2d)
def _sumpool(node: nir.SumPool2d, in_shape: tuple[int, ...]) -> NodeMap:
    return _pool(node, in_shape, average=False)


@register(nir.AvgPool2d)
def _avgpool(node: nir.AvgPool2d, in_shape: tuple[int, ...]) -> NodeMap:
    return _pool(node, in_shape, average=True)


def conv2d_matrix(
    weight: np.ndarray, in_shape: tuple[int, int, int], stride: Pair, padding: Pair,
    dilation: Pair, groups: int,
) -> tuple[sp.csr_matrix, tuple[int, int, int]]:
    """A conv as an explicit sparse matrix on (C, H, W) inputs (small maps and tests only)."""
    c_in, h, w = in_shape
    c_out, c_g, kh, kw = weight.shape
    if c_g * groups != c_in or c_out % groups:
        raise ValidationError(
            f"Conv2d weight {weight.shape} with groups={groups} does not fit {c_in} channels"
        )
    ho, wo = conv_out_hw((h, w), (kh, kw), stride, padding, dilation)
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
