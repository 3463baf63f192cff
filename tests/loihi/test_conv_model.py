"""lrfdyn's fast Conv model gives exactly Lava's own Conv outputs, and works where Lava's does not.

Every network here runs in real Lava (``Loihi2SimCfg``, ``fixed_pt``): a source ring
buffer -> ``Conv`` -> a graded :class:`SpikeRecorder`, once with Lava's stock
``PyConvModelFixed`` and once with :class:`FastConvModel`. The Conv sends the previous
step's result, so step 0 records zeros and step t records conv(input of step t-1).
"""

from __future__ import annotations

import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lrfdyn.loihi.fixed import wrap_signed
from lrfdyn.loihi.processes.conv import (FAST_CONV_MODELS, FastConvModel, connect_conv,
                                         conv_int64, conv_process, lava_weight, torch_weight)
from lrfdyn.loihi.processes.recorder import RECORDER_MODELS, SpikeRecorder, open_recording

from lava.magma.core.process.ports.ports import OutPort
from lava.magma.core.run_conditions import RunSteps
from lava.magma.core.run_configs import Loihi2SimCfg
from lava.proc.conv.process import Conv
from lava.proc.io.source import RingBuffer

T = 5
WRAP = 2 ** 24


def _models(stock: bool) -> dict[type, type]:
    return dict(RECORDER_MODELS) if stock else {**RECORDER_MODELS, **FAST_CONV_MODELS}


def _run(src: RingBuffer, recorder_path: Path, n_out: int, stock: bool,
         read_vars: tuple = ()) -> tuple[np.ndarray, list[np.ndarray]]:
    """Run ``src``'s network for T steps: the recording (T, n_out) and ``read_vars``' values."""
    rec = open_recording(str(recorder_path), T, n_out, graded=True)
    cfg = Loihi2SimCfg(select_tag="fixed_pt", exception_proc_model_map=_models(stock))
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Cannot import module", category=UserWarning)
            src.run(condition=RunSteps(num_steps=T), run_cfg=cfg)
        values = [np.asarray(v.get()) for v in read_vars]
    finally:
        src.stop()
    return np.array(rec, np.int64), values


def _conv_net(conv: Conv, x_whc: np.ndarray, path: Path) -> tuple[RingBuffer, int]:
    """Source of ``x_whc`` (T, W, H, C) -> ``conv`` -> graded recorder, all in Lava layout."""
    src = RingBuffer(data=np.moveaxis(x_whc, 0, -1).astype(np.int32))
    src.s_out.connect(conv.s_in)
    n_out = int(np.prod(conv.output_shape))
    rec = SpikeRecorder(shape=tuple(int(v) for v in conv.output_shape), steps=T,
                        path=str(path), graded=True)
    conv.a_out.connect(rec.a_in)
    return src, n_out


def _reference(x_chw: np.ndarray, weight: np.ndarray, *, message_bits: int, **geometry) -> \
        np.ndarray:
    """Exact integer torch conv of (T, C, H, W), wrapped to 24 bits, as a Conv records it.

    Returns (T, n_out) in the requested layout's order: row t is conv(x[t-1]), row 0 zeros.
    """
    x = x_chw if message_bits else (x_chw != 0).astype(np.int64)
    bound = np.abs(weight).max() * np.abs(x).max() * np.prod(weight.shape[1:])
    assert bound < 2 ** 53, "reference would not be exact in float64"
    y = F.conv2d(torch.tensor(x, dtype=torch.float64), torch.tensor(weight, dtype=torch.float64),
                 **geometry).numpy().astype(np.int64)
    out = np.zeros_like(y)
    out[1:] = y[:-1]
    return out


def _to_lava_order(y_tchw: np.ndarray) -> np.ndarray:
    return y_tchw.transpose(0, 3, 2, 1).reshape(len(y_tchw), -1)


def _assert_steps_equal(got: np.ndarray, want: np.ndarray, what: str,
                        shape: tuple[int, ...]) -> None:
    bad = np.argwhere(got != want)
    if len(bad):
        step, flat = bad[0]
        raise AssertionError(
            f"{what}: {len(bad)} mismatches; first at step {step}, index {flat} "
            f"= {np.unravel_index(flat, shape)} of {shape}: got {got[step, flat]}, "
            f"want {want[step, flat]}")


@dataclass(frozen=True)
class Case:
    name: str
    c_in: int
    c_out: int
    h: int
    w: int
    kernel: tuple[int, int]  # (kh, kw), torch order like all pairs here
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    message_bits: int = 0
    inputs: str = "spikes"  # spikes | graded8 | graded20 | small_ints
    weight_max: int = 128
    wraps: bool = False


CASES = [
    Case("spikes_3x3_pad1_nonsquare", 3, 4, 5, 7, (3, 3), padding=(1, 1)),
    Case("spikes_stride2_groups2", 4, 6, 9, 6, (3, 2), stride=(2, 2), padding=(1, 0), groups=2),
    Case("spikes_dilated_depthwise", 4, 4, 8, 7, (3, 3), stride=(1, 2), padding=(2, 1),
         dilation=(2, 1), groups=4),
    Case("graded8_depthwise_5x3", 6, 6, 6, 5, (5, 3), padding=(2, 1), groups=6,
         message_bits=8, inputs="graded8"),
    # |sum| reaches ~2^30: past the 24-bit wrap, inside the int32 range the stock model casts to.
    Case("graded24_wraps", 2, 3, 5, 4, (3, 3), padding=(1, 1), message_bits=24,
         inputs="graded20", weight_max=100, wraps=True),
    # num_message_bits = 0 with non-binary payloads: both models count any non-zero as 1.
    Case("nonbinary_payload_as_spikes", 2, 2, 4, 6, (2, 2), dilation=(1, 2),
         inputs="small_ints"),
]


def _inputs(case: Case, rng: np.random.Generator) -> np.ndarray:
    shape = (T, case.c_in, case.h, case.w)
    if case.inputs == "spikes":
        return (rng.random(shape) < 0.4).astype(np.int64)
    if case.inputs == "graded8":
        return rng.integers(-128, 128, shape)
    if case.inputs == "graded20":
        return rng.integers(-2 ** 20, 2 ** 20, shape)
    return rng.integers(-3, 4, shape)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_fast_model_equals_lavas_own_conv(case: Case, tmp_path: Path) -> None:
    rng = np.random.default_rng(zlib.crc32(case.name.encode()))
    x = _inputs(case, rng)
    weight = rng.integers(-case.weight_max, case.weight_max,
                          (case.c_out, case.c_in // case.groups, *case.kernel))
    geometry = dict(stride=case.stride, padding=case.padding, dilation=case.dilation,
                    groups=case.groups)
    exact = _to_lava_order(_reference(x, weight, message_bits=case.message_bits, **geometry))
    want = wrap_signed(exact)
    if case.wraps:
        assert np.abs(exact).max() >= 2 ** 23 and (want != exact).any()
        assert np.abs(exact).max() < 2 ** 31  # where the stock int32 cast is exact
    x_whc = x.transpose(0, 3, 2, 1)

    got = {}
    for stock in (True, False):
        # Lava's own Conv, built directly in Lava's layouts: (X, Y) = (W, H) pairs.
        conv = Conv(weight=lava_weight(weight), input_shape=x_whc.shape[1:],
                    stride=case.stride[::-1], padding=case.padding[::-1],
                    dilation=case.dilation[::-1], groups=case.groups,
                    num_message_bits=case.message_bits)
        src, n_out = _conv_net(conv, x_whc, tmp_path / f"rec_{stock}.bin")
        got[stock], _ = _run(src, tmp_path / f"rec_{stock}.bin", n_out, stock)
        shape = tuple(int(v) for v in conv.output_shape)

    _assert_steps_equal(got[False], got[True], f"{case.name}: fast vs stock", shape)
    _assert_steps_equal(got[True], want, f"{case.name}: stock vs torch reference", shape)
    assert (got[True][1:] != 0).any()


def test_depthwise_192_groups_work_where_lavas_own_conv_gives_zeros(tmp_path: Path) -> None:
    c, h, w = 192, 3, 4
    rng = np.random.default_rng(192)
    x = rng.integers(-2 ** 23, 2 ** 23, (T, c, h, w))
    weight = rng.integers(-128, 128, (c, 1, 3, 3))
    geometry = dict(stride=1, padding=1, dilation=1, groups=c)
    exact = _to_lava_order(_reference(x, weight, message_bits=24, **geometry))
    assert np.abs(exact).max() >= 2 ** 31  # beyond what the stock model's int32 cast keeps
    x_whc = x.transpose(0, 3, 2, 1)

    got, groups_seen = {}, {}
    for stock in (True, False):
        conv = conv_process(weight, (c, h, w), padding=1, groups=c, num_message_bits=24)
        src, n_out = _conv_net(conv, x_whc, tmp_path / f"rec_{stock}.bin")
        got[stock], (groups_seen[stock],) = _run(src, tmp_path / f"rec_{stock}.bin", n_out,
                                                 stock, read_vars=(conv.groups,))

    shape = (w, h, c)
    _assert_steps_equal(got[False], wrap_signed(exact), "groups=192 vs torch reference", shape)
    # Lava 0.10's PyConvModelFixed declares groups int8: 192 arrives as -64, its group
    # loop runs zero times, and the output is all zeros. The fast model reads 192.
    assert int(groups_seen[True][0]) == 192 - 256, "stock Conv no longer truncates groups"
    assert not got[True].any(), "stock Conv no longer gives zeros for groups=192"
    assert int(groups_seen[False][0]) == 192


def _exact_conv_python(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Unpadded stride-1 single-group conv of (C, H, W) in Python ints (no overflow, no float)."""
    c_out, _, kh, kw = weight.shape
    _, h, w = x.shape
    out = np.zeros((c_out, h - kh + 1, w - kw + 1), object)
    xo, wo = x.astype(object), weight.astype(object)
    for o in range(c_out):
        for i in range(h - kh + 1):
            for j in range(w - kw + 1):
                out[o, i, j] = int((xo[:, i:i + kh, j:j + kw] * wo[o]).sum())
    return out


def test_large_kernel_and_huge_sums_take_the_exact_int64_path(tmp_path: Path) -> None:
    # A 3x131 kernel: kernel_size 131 does not fit the stock model's int8 Var (the stock
    # model is not run: it fails mid-run, and Lava then hangs). Weights near 2^29 times
    # 23-bit payloads over a fan-in of 393 exceed 2^53, so float64 would not be exact.
    c, h, w, kh, kw = 1, 4, 140, 3, 131
    rng = np.random.default_rng(131)
    x = rng.integers(-2 ** 23, 2 ** 23, (T, c, h, w))
    weight = rng.integers(-2 ** 29, 2 ** 29, (2, c, kh, kw))
    conv = conv_process(weight, (c, h, w), num_message_bits=24)
    src, n_out = _conv_net(conv, x.transpose(0, 3, 2, 1), tmp_path / "rec.bin")
    got, _ = _run(src, tmp_path / "rec.bin", n_out, stock=False)

    exact = np.stack([_exact_conv_python(x[t], weight) for t in range(T - 1)])
    assert max(abs(int(v)) for v in exact.ravel()) >= 2 ** 53
    want = np.zeros((T, n_out), np.int64)
    wrapped = np.vectorize(lambda v: (int(v) + 2 ** 23) % WRAP - 2 ** 23, otypes=[np.int64])
    want[1:] = _to_lava_order(wrapped(exact))
    _assert_steps_equal(got, want, "3x131 kernel, int64 path", tuple(conv.output_shape))


@pytest.mark.parametrize("stock", [False, True], ids=["fast", "stock"])
def test_connect_conv_maps_flat_torch_order_groups(stock: bool, tmp_path: Path) -> None:
    c, h, w, c_out, groups = 4, 6, 5, 6, 2
    geometry = dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=groups)
    rng = np.random.default_rng(5)
    x = rng.integers(-128, 128, (T, c, h, w))
    weight = rng.integers(-128, 128, (c_out, c // groups, 3, 2))
    y = _reference(x, weight, message_bits=8, **geometry)  # (T, C', H', W')
    out_shape = y.shape[1:]
    n_out = int(np.prod(out_shape))
    other = rng.integers(-1000, 1000, (T, n_out))  # a second synapse into the same port

    conv = conv_process(weight, (c, h, w), num_message_bits=8, **geometry)
    src = RingBuffer(data=x.reshape(T, -1).T.astype(np.int32))  # flat (C·H·W,), C order
    direct = RingBuffer(data=other.T.astype(np.int32))
    rec = SpikeRecorder(shape=(n_out,), steps=T, path=str(tmp_path / "rec.bin"), graded=True)
    connect_conv(src.s_out, conv, rec.a_in, (c, h, w), out_shape)
    direct.s_out.connect(rec.a_in)
    got, _ = _run(src, tmp_path / "rec.bin", n_out, stock)

    want = wrap_signed(y.reshape(T, -1)) + other
    _assert_steps_equal(got, want, f"connect_conv ({'stock' if stock else 'fast'})",
                        (n_out,))


def test_layouts_int64_path_and_validation() -> None:
    rng = np.random.default_rng(0)
    weight = rng.integers(-9, 10, (6, 2, 3, 4))
    assert lava_weight(weight).shape == (6, 4, 3, 2)
    assert np.array_equal(torch_weight(lava_weight(weight)), weight)
    x = rng.integers(-50, 50, (4, 7, 9))
    for geometry in (dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2),
                     dict(stride=1, padding=0, dilation=1, groups=1)):
        w = weight if geometry["groups"] == 2 else rng.integers(-9, 10, (6, 4, 3, 4))
        want = F.conv2d(torch.tensor(x, dtype=torch.float64)[None],
                        torch.tensor(w, dtype=torch.float64), **geometry)[0].numpy()
        assert np.array_equal(conv_int64(x, w, **geometry), want.astype(np.int64))
    assert np.array_equal(wrap_signed(np.array([2 ** 23 - 1, 2 ** 23, -2 ** 23 - 1, 3 * WRAP])),
                          [2 ** 23 - 1, -2 ** 23, 2 ** 23 - 1, 0])

    conv = conv_process(weight, (4, 7, 9), stride=(2, 1), padding=(1, 2), groups=2)
    assert tuple(conv.input_shape) == (9, 7, 4)
    assert tuple(int(v) for v in conv.output_shape) == (9 + 4 - 3, (7 + 2 - 3) // 2 + 1, 6)
    with pytest.raises(ValueError, match="groups"):
        conv_process(weight, (4, 7, 9), groups=3)
    with pytest.raises(ValueError, match="integers"):
        conv_process(weight + 0.5, (4, 7, 9), groups=2)
    with pytest.raises(ValueError, match="does not fit"):
        conv_process(weight, (4, 2, 9), groups=2)
    with pytest.raises(ValueError, match="not flat"):
        connect_conv(OutPort(shape=(4, 7, 9)), conv, conv.s_in, (4, 7, 9), (6, 4, 10))

    from lrfdyn.loihi.processes import cpu_models

    assert cpu_models()[Conv] is FastConvModel
    assert Conv not in cpu_models(stock=True)
