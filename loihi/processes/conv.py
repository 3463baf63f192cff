"""A fast CPU model of Lava's own ``Conv`` process, and its wiring between flat neuron groups.

Lava 0.10's ``PyConvModelFixed`` has two problems (docs/design.md §7):

* it declares ``groups``, ``kernel_size``, ``stride``, ``padding`` and ``dilation`` as
  int8 Vars, so the builder stores ``groups=192`` as -64 and ``groups=256`` as 0, and the
  output is all zeros: every depthwise conv with 128 channels or more breaks (a kernel
  of 128 or more breaks the same way);
* ``lava.proc.conv.utils.TORCH_IS_AVAILABLE`` is hard-coded False, so every step loops
  ``scipy.signal.convolve2d`` over groups × out × in channels: a 1×1 conv 384→384 on
  8×8 takes seconds per step.

:class:`FastConvModel` is a ``fixed_pt`` model of the same process with the same step:
send the previous step's ``a_buf``; receive ``s_in`` (as bool when
``num_message_bits == 0``); convolve in Lava's layouts (input ``(W, H, C_in)``, weight
``(C_out, W_k, H_k, C_in/groups)``, a true convolution, i.e. a flipped-kernel
correlation); ignore ``weight_exp`` and the weight width; wrap the sum to 24-bit signed
(``utils.signed_clamp`` is a modulo, not a saturation). It reads the true ``groups``
etc. by declaring those Vars int32, and convolves with one ``torch`` ``conv2d`` in
float64, exact while every partial sum stays below 2^53 (checked every step; above that
an int64 path that is exact modulo 2^64, hence modulo 2^24, takes over). The stock
model sums in float64 too and then casts to int32, so the two agree bit for bit
wherever ``|sum| < 2^31``; beyond that the stock cast is undefined and this model keeps
the exact 24-bit wrap. ``tests/loihi/test_conv_model.py`` runs both models in Lava.

lrfdyn's neuron groups are flat ``(C·H·W,)`` in torch (C-order) layout. Lava's virtual
ports (``reshape``/``transpose``/``flatten``) are applied by the receiving ``PyInPort``
on the CPU backend, so :func:`connect_conv` wires a flat group into a Lava ``Conv`` and
back exactly, with no extra process and no extra time step; :func:`conv_process` builds
the ``Conv`` from torch-layout integer weights.

On Loihi 2, lava-loihi brings its own Conv model; this one is for the CPU backend only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import lrfdyn.loihi.compat  # noqa: F401  (before any lava import)
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.proc.conv.process import Conv

from lrfdyn.loihi import fixed

#: The fixed-point Conv output is 24-bit signed (``PyConvModelFixed.clamp_precision``).
OUT_BITS = 24
#: Integers up to this magnitude are exact in float64.
FLOAT64_EXACT = 2 ** 53

Pair = int | tuple[int, int]


def _pair(value: Pair) -> tuple[int, int]:
    a, b = (value, value) if np.isscalar(value) else tuple(value)
    return int(a), int(b)


def lava_weight(weight: np.ndarray) -> np.ndarray:
    """Torch conv weight ``(C_out, C_in/g, kh, kw)`` -> Lava ``(C_out, kw, kh, C_in/g)``.

    Lava convolves (``signal.convolve2d``) where torch correlates, so the kernel is
    flipped in both spatial axes as well as transposed.
    """
    w = np.asarray(weight)
    return np.ascontiguousarray(w.transpose(0, 3, 2, 1)[:, ::-1, ::-1, :])


def torch_weight(weight: np.ndarray) -> np.ndarray:
    """Lava conv weight ``(C_out, kw, kh, C_in/g)`` -> torch ``(C_out, C_in/g, kh, kw)``."""
    w = np.asarray(weight)
    return np.ascontiguousarray(w[:, ::-1, ::-1, :].transpose(0, 3, 2, 1))


def conv_int64(x: np.ndarray, weight: np.ndarray, stride: Pair, padding: Pair,
               dilation: Pair, groups: int) -> np.ndarray:
    """Integer ``F.conv2d`` of ``x (C, H, W)`` with torch-layout ``weight``, in int64.

    Exact modulo 2^64 whatever the magnitudes (so exact after any 24-bit wrap); one
    batched product per kernel offset, no per-position matrix.
    """
    x = np.asarray(x, np.int64)
    w = np.asarray(weight, np.int64)
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    c_out, c_in_g, kh, kw = w.shape
    c, h, wd = x.shape
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    xp = np.pad(x, ((0, 0), (ph, ph), (pw, pw)))
    wg = w.reshape(groups, c_out // groups, c_in_g, kh, kw)
    out = np.zeros((groups, c_out // groups, ho * wo), np.int64)
    with np.errstate(over="ignore"):  # wrapping modulo 2^64 is intended
        for i in range(kh):
            for j in range(kw):
                patch = xp[:, i * dh: i * dh + sh * (ho - 1) + 1: sh,
                           j * dw: j * dw + sw * (wo - 1) + 1: sw]
                out += np.matmul(wg[:, :, :, i, j], patch.reshape(groups, c_in_g, ho * wo))
    return out.reshape(c_out, ho, wo)


#: Largest per-position matrix (entries, all groups) that a conv model builds to run as a
#: batched product: torch's CPU conv loops over groups, so a depthwise 13×13 kernel on
#: a 7×7 grid takes ~8 ms per step as a conv and ~0.05 ms as 64 small products.
MATRIX_LIMIT = 1 << 22


def _group_matrices(w: torch.Tensor, input_shape: tuple[int, int, int],
                    geometry: dict[str, Any]) -> dict[str, Any]:
    """``matrix``: each group's conv as a ``(HW_in, C_out/G·HW_out)`` matrix, stacked
    ``(G, …)``, where every group reads one input channel (depthwise) and the matrices stay
    under :data:`MATRIX_LIMIT`; else None (torch's conv is fast there, or they are too big).
    ``input_shape`` is Lava's ``(W, H, C)``."""
    c_out, c_in_g, kh, kw = w.shape
    wd, h = int(input_shape[0]), int(input_shape[1])
    groups = geometry["groups"]
    if c_in_g != 1 or kh * kw == 1:
        return {"matrix": None}
    (sh, sw), (ph, pw), (dh, dw) = (geometry[k] for k in ("stride", "padding", "dilation"))
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if groups * h * wd * (c_out // groups) * ho * wo > MATRIX_LIMIT:
        return {"matrix": None}
    # Convolve every basis image: row i of group g's matrix is the response to pixel i.
    basis = torch.eye(h * wd, dtype=torch.float64).reshape(h * wd, 1, h, wd)
    with torch.no_grad():
        resp = F.conv2d(basis.expand(-1, groups, -1, -1), w, **geometry)  # (HW, C_out, ho, wo)
    return {"matrix": resp.reshape(h * wd, groups, -1).transpose(0, 1).contiguous(),
            "out_hw": (ho, wo)}


def _repeats(w: np.ndarray, groups: int) -> int:
    """Largest b dividing ``groups`` such that ``w`` (C_out, ...) is b equal stacked blocks."""
    divisors = [b for b in range(groups, 1, -1) if groups % b == 0 and w.shape[0] % b == 0]
    for b in divisors:  # few: a number has far fewer divisors than it is large
        blocks = w.reshape(b, w.shape[0] // b, *w.shape[1:])
        if (blocks == blocks[:1]).all():
            return b
    return 1


@implements(proc=Conv, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class FastConvModel(PyLoihiProcessModel):
    """``PyConvModelFixed``'s step, with wide geometry Vars and one ``conv2d`` per step."""

    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    a_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    a_buf: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    weight: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=8)
    # int32, not the stock int8: the builder casts each Var into the declared dtype.
    kernel_size: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=32)
    stride: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=32)
    padding: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=32)
    dilation: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=32)
    groups: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=32)
    num_message_bits: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=5)
    weight_exp: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=8)
    num_weight_bits: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=5)

    _setup: dict[str, Any] | None = None

    def _prepare(self) -> dict[str, Any]:
        # Lava forks one OS process per model; GNU OpenMP thread pools do not survive a
        # fork (the reason Lava disabled torch in utils.conv), so torch runs on one thread.
        torch.set_num_threads(1)
        w = torch_weight(self.weight).astype(np.int64)  # Vars are final by the first step
        # Lava's (X, Y) = (W, H) order -> torch's (H, W).
        geometry = {"stride": (int(self.stride[1]), int(self.stride[0])),
                    "padding": (int(self.padding[1]), int(self.padding[0])),
                    "dilation": (int(self.dilation[1]), int(self.dilation[0])),
                    "groups": int(self.groups[0])}
        fan_in = int(np.prod(w.shape[1:]))
        # Copies side by side (lrfdyn.loihi.copies) repeat the kernel with the groups:
        # convolve them as a batch of the repeated part (torch's CPU conv is far faster
        # over a batch than over many groups). The sums are the same integers.
        batch = _repeats(w, geometry["groups"])
        w = w[: w.shape[0] // batch]
        geometry["groups"] //= batch
        w_f64 = torch.from_numpy(w.astype(np.float64))
        return {"w": w, "w_f64": w_f64, "batch": batch,
                **_group_matrices(w_f64, self.proc_params["input_shape"], geometry),
                # |partial sum| <= fan_in * max|w| * max|s|, whatever the summation order.
                "sum_bound": fan_in * int(np.abs(w).max(initial=0)), **geometry}

    def _convolve(self, s_in: np.ndarray) -> np.ndarray:
        """Exact integer conv of ``s_in (W, H, C)``: ``(W', H', C')`` int64, before the wrap."""
        if self._setup is None:
            self._setup = self._prepare()
        p = self._setup
        x = np.asarray(s_in, np.int64).transpose(2, 1, 0)  # (C, H, W)
        geometry = {k: p[k] for k in ("stride", "padding", "dilation", "groups")}
        b = p["batch"]
        xb = x.reshape(b, x.shape[0] // b, *x.shape[1:])
        if p["sum_bound"] * int(np.abs(x).max(initial=0)) < FLOAT64_EXACT:
            xt = torch.from_numpy(xb.astype(np.float64))
            with torch.no_grad():
                if p["matrix"] is not None:  # (G, HW_in, C_out/G·HW_out), see _group_matrices
                    m = p["matrix"]
                    y = torch.bmm(xt.reshape(b, m.shape[0], -1).transpose(0, 1), m)
                    y = y.transpose(0, 1).reshape(b, p["w"].shape[0], *p["out_hw"])
                else:
                    y = F.conv2d(xt, p["w_f64"], **geometry)
                y = y.numpy().astype(np.int64)
        else:
            y = np.stack([conv_int64(xi, p["w"], **geometry) for xi in xb])
        return y.reshape(-1, *y.shape[2:]).transpose(2, 1, 0)

    def run_spk(self) -> None:
        self.a_out.send(self.a_buf)
        s_in = self.s_in.recv()
        if self.num_message_bits.item() == 0:  # as the stock model: any non-zero is a spike
            s_in = s_in.astype(bool)
        self.a_buf = fixed.wrap_signed(self._convolve(s_in), OUT_BITS).astype(np.int32)


def conv_process(weight: np.ndarray, in_shape: tuple[int, int, int], stride: Pair = 1,
                 padding: Pair = 0, dilation: Pair = 1, groups: int = 1, *,
                 num_message_bits: int = 0, name: str | None = None) -> Conv:
    """A Lava ``Conv`` equal to ``F.conv2d(x, weight, None, stride, padding, dilation, groups)``.

    ``weight`` is torch layout ``(C_out, C_in/groups, kh, kw)``, integer-valued;
    ``in_shape`` and the pairs are torch order ``(C, H, W)`` / ``(h, w)``. The weights go in
    as given: like Lava's own Conv models, none clips them to ``num_weight_bits`` (the
    lowering quantizes), and ``weight_exp`` is 0 (the fixed-point models ignore it). Wire
    it between flat groups with :func:`connect_conv`.
    """
    w = np.asarray(weight)
    if w.ndim != 4 or len(in_shape) != 3:
        raise ValueError(f"expected a 4-D weight and a (C, H, W) in_shape, got {w.shape}, "
                         f"{in_shape}")
    if not np.array_equal(w, np.round(w)) or np.abs(w).max(initial=0) >= 2 ** 31:
        raise ValueError("conv weights must be int32 integers (quantize before lowering)")
    c, h, wd = (int(v) for v in in_shape)
    c_out, c_in_g, kh, kw = w.shape
    if groups < 1 or c % groups or c_out % groups or c_in_g * groups != c:
        raise ValueError(f"groups={groups} does not fit weight {w.shape} on {c} input channels")
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    if min(sh, sw, dh, dw) < 1 or min(ph, pw) < 0:
        raise ValueError(f"bad conv geometry: stride {stride}, padding {padding}, "
                         f"dilation {dilation}")
    if (h + 2 * ph - dh * (kh - 1) - 1) < 0 or (wd + 2 * pw - dw * (kw - 1) - 1) < 0:
        raise ValueError(f"kernel {kh}x{kw} (dilation {dilation}) does not fit {in_shape} "
                         f"padded by {padding}")
    if num_message_bits not in range(0, 25):
        raise ValueError(f"num_message_bits must be in 0..24, got {num_message_bits}")
    # Lava: input (W, H, C), weight (C_out, W_k, H_k, C_in/g), pairs in (X, Y) = (W, H).
    return Conv(weight=lava_weight(w).astype(np.int32), input_shape=(wd, h, c),
                padding=(pw, ph), stride=(sw, sh), dilation=(dw, dh), groups=int(groups),
                num_message_bits=int(num_message_bits), name=name)


def connect_conv(src_port: OutPort, conv: Conv, dst_port: InPort,
                 in_shape: tuple[int, int, int], out_shape: tuple[int, int, int]) -> None:
    """Wire flat ``(C·H·W,)`` ``src_port`` -> ``conv`` -> flat ``(C'·H'·W',)`` ``dst_port``.

    Flat index ``(c·H + y)·W + x`` (torch/C order) is Lava's ``(x, y, c)``: the source is
    reshaped to ``(C, H, W)`` and transposed to ``(W, H, C)``, the output transposed back
    and flattened. These are Lava virtual ports, which the receiving port applies on
    every ``recv``: no process and no time step is added. ``src_port`` and ``dst_port``
    may carry other connections (several synapses into one port add up).
    """
    c, h, w = (int(v) for v in in_shape)
    co, ho, wo = (int(v) for v in out_shape)
    if tuple(int(v) for v in conv.input_shape) != (w, h, c):
        raise ValueError(f"conv input {tuple(conv.input_shape)} is not (W, H, C) of {in_shape}")
    if tuple(int(v) for v in conv.output_shape) != (wo, ho, co):
        raise ValueError(f"conv output {tuple(conv.output_shape)} is not (W, H, C) of "
                         f"{out_shape}")
    if tuple(src_port.shape) != (c * h * w,) or tuple(dst_port.shape) != (co * ho * wo,):
        raise ValueError(f"ports {src_port.shape} -> {dst_port.shape} are not flat "
                         f"{in_shape} -> {out_shape}")
    src_port.reshape((c, h, w)).transpose((2, 1, 0)).connect(conv.s_in)
    conv.a_out.transpose((2, 1, 0)).flatten().connect(dst_port)


#: Process type -> fast model, for ``exception_proc_model_map``.
FAST_CONV_MODELS: dict[type, type[PyLoihiProcessModel]] = {Conv: FastConvModel}
