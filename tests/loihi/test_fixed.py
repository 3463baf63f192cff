"""``lrfdyn.loihi.fixed`` against Lava's own bit-accurate models, run in real Lava.

The ground truth is Lava's source (lava-nc 0.10): ``PyLifModelBitAcc``
(lava/proc/lif/models.py), ``PyDenseModelBitAcc`` (lava/proc/dense/models.py) and
``PyConvModelFixed`` (lava/proc/conv/models.py). Nothing here copies their
arithmetic: the Lava side is always a compiled Lava network (``fixed_pt``) or a
call of Lava's own helper functions.

Timing facts used below, read from the Lava source:

* ``io.source.RingBuffer`` sends ``data[..., t]`` at (0-based) step ``t``.
* ``Dense`` and ``Conv`` send their buffer *first* and only then receive and
  accumulate, so the neuron at step ``t`` sees the input sent at step ``t - 1``
  (and 0 at step 0): one step of synaptic delay.
* ``io.sink.RingBuffer`` stores what it receives at step ``t`` in ``data[..., t]``,
  with no delay.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

import lrfdyn.loihi.compat  # noqa: F401  (must precede every lava import)
from lrfdyn.errors import LoihiRangeError
from lrfdyn.loihi import fixed

from lava.magma.core.run_conditions import RunSteps  # noqa: E402
from lava.magma.core.run_configs import Loihi2SimCfg  # noqa: E402
from lava.proc.conv import utils as conv_utils  # noqa: E402
from lava.proc.conv.process import Conv  # noqa: E402
from lava.proc.dense.process import Dense  # noqa: E402
from lava.proc.io.sink import RingBuffer as SinkRingBuffer  # noqa: E402
from lava.proc.io.source import RingBuffer as SourceRingBuffer  # noqa: E402
from lava.proc.lif.process import LIF  # noqa: E402
from lava.utils.weightutils import (  # noqa: E402
    SignMode,
    clip_weights,
    determine_sign_mode,
    truncate_weights,
)

UV_LIM = 1 << 23  # 2**23: u wraps beyond it, v saturates at +-(UV_LIM - 1)
#: Largest |summed a_in| the random cases may produce (exclusive); see _make_specs.
A_IN_LIMIT = 1 << 17


def _run_cfg() -> Loihi2SimCfg:
    return Loihi2SimCfg(select_tag="fixed_pt")


# =====================================================================
# 1. Random LIF + Dense cases against PyLifModelBitAcc / PyDenseModelBitAcc
# =====================================================================

T_STEPS = 120
N_IN = 16
N_PER_PROC = 32
SEED = 20240611


@dataclass(eq=False)
class ProcSpec:
    """One Dense -> LIF sub-network. Every neuron of it is one test case:
    (du, dv, vth, weight_exp, sign mode, message mode) are shared by the process
    (Lava's LIF has scalar du/dv/vth), bias_mant/bias_exp and the weight row are
    the neuron's own."""

    name: str
    graded: bool
    du: int
    dv: int
    vth: int
    bias_mant: np.ndarray
    bias_exp: np.ndarray
    weights: np.ndarray  # raw, before Lava's 8-bit clip / LSB truncation
    weight_exp: int

    def describe(self, neuron: int) -> str:
        return (
            f"du={self.du} dv={self.dv} vth={self.vth} "
            f"bias_mant={int(self.bias_mant[neuron])} bias_exp={int(self.bias_exp[neuron])} "
            f"weight_exp={self.weight_exp} "
            f"{'graded (num_message_bits=8)' if self.graded else 'binary (num_message_bits=0)'} "
            f"sign_mode={determine_sign_mode(self.weights).name} "
            f"weights row={self.weights[neuron].tolist()}"
        )


def _weight_rows(rng: np.random.Generator, sign: str, n: int) -> np.ndarray:
    """Raw weight rows spanning beyond the 8-bit range, each row with its own scale."""
    w = np.empty((n, N_IN), np.int64)
    for i in range(n):
        if sign == "mixed":
            centre = rng.uniform(-330, 330)
            spread = rng.uniform(0, 330)
            row = np.round(centre + spread * rng.uniform(-1, 1, N_IN))
        else:
            hi = rng.integers(1, 420)
            row = rng.integers(0, hi + 1, N_IN)
            if sign == "inhibitory":
                row = -row
        row = np.where(rng.random(N_IN) < 0.2, 0, row)  # some absent synapses
        w[i] = row
    if sign == "mixed":  # make the sign mode certain, and hit both 8-bit clip limits
        w[0, 0], w[1, 0] = 300, -300
    elif sign == "excitatory":
        w[0, 0] = 300
    else:
        w[0, 0] = -300
    return w


def _make_specs(rng: np.random.Generator) -> list[ProcSpec]:
    """8 processes x 32 neurons = 256 cases.

    weight_exp is chosen so that |summed a_in| < 2**17 in every case:
    binary: 16 inputs * 256 << 3 = 2**15; graded: 16 * 255 * 256 >> 3 < 2**17.
    Lava adds ``a_in << 6`` to a 24-bit u in int32 and wraps only once, so with
    |a_in| >= 2**17 (|a_in << 6| >= 2**23) u can leave the 24-bit range after the
    wrap; that regime is outside what either implementation defines (the
    checked range is asserted in test_random_cases_cover_wrap_and_clip).
    """
    # (name, graded, sign mode, weight_exp, du, dv, vth); None = drawn at random.
    layout = [
        ("binary-mixed-A", False, "mixed", 3, None, None, None),
        ("graded-mixed-A", True, "mixed", -3, None, None, 131071),
        ("binary-excitatory", False, "excitatory", 1, None, 0, None),
        ("graded-excitatory", True, "excitatory", -5, None, None, None),
        ("binary-inhibitory", False, "inhibitory", 0, None, None, 0),
        ("graded-inhibitory", True, "inhibitory", -4, None, 4095, None),
        ("binary-mixed-B", False, "mixed", -8, 4095, None, None),
        ("graded-mixed-B", True, "mixed", -6, 0, None, None),
    ]
    specs = []
    for name, graded, sign, wexp, du, dv, vth in layout:
        n = N_PER_PROC
        if du is None:  # mostly slow current decay, so that u can reach the wrap
            du = int(rng.integers(0, 48)) if rng.random() < 0.75 else int(rng.integers(0, 4096))
        if dv is None:
            dv = int(rng.integers(0, 256)) if rng.random() < 0.5 else int(rng.integers(0, 4096))
        if vth is None:  # log-uniform over the 17-bit range
            vth = int(round(2 ** rng.uniform(0, 17))) - 1
        kind = rng.choice(3, size=n, p=[0.25, 0.5, 0.25])  # none / moderate / large bias
        bias_mant = np.where(kind == 0, 0, rng.integers(-4096, 4096, n))
        bias_exp = np.where(kind == 2, rng.integers(4, 8, n), rng.integers(0, 4, n))
        if name == "graded-mixed-B":
            # A few negative exponents (outside Loihi's unsigned 3 bits, but both Lava
            # and fixed.scaled_bias define them as a right shift).
            bias_exp[:4] = [-1, -2, -3, -1]
            bias_mant[:4] = [-4095, 4095, -3, 1001]
        specs.append(
            ProcSpec(
                name=name,
                graded=graded,
                du=du,
                dv=dv,
                vth=vth,
                bias_mant=bias_mant.astype(np.int64),
                bias_exp=bias_exp.astype(np.int64),
                weights=_weight_rows(rng, sign, n),
                weight_exp=wexp,
            )
        )
    return specs


def _make_input(rng: np.random.Generator) -> np.ndarray:
    """(N_IN, T) payloads 0..255 with per-input sparsity. Graded Dense processes use
    the payload; binary ones (num_message_bits=0) see every non-zero entry as a spike,
    exactly as Lava's ``s_in.astype(bool)``."""
    rate = rng.uniform(0.1, 0.9, (N_IN, 1))
    payload = rng.integers(1, 256, (N_IN, T_STEPS))
    return np.where(rng.random((N_IN, T_STEPS)) < rate, payload, 0).astype(np.int64)


@dataclass(eq=False)
class Record:
    """u, v, spikes of one process, each (T, n)."""

    u: np.ndarray
    v: np.ndarray
    spikes: np.ndarray


@dataclass(eq=False)
class Coverage:
    a_in_max: int  # max |summed a_in|
    u_wrap_pos: np.ndarray  # (T, n) bool: u > 2**23 before the wrap
    u_wrap_neg: np.ndarray  # (T, n) bool: u <= -2**23 before the wrap
    v_clip_pos: np.ndarray
    v_clip_neg: np.ndarray


def _reference(spec: ProcSpec, data: np.ndarray) -> tuple[Record, Coverage]:
    """The pure lrfdyn reference, with Dense's one-step delay."""
    n = spec.weights.shape[0]
    x = data if spec.graded else (data != 0).astype(np.int64)
    a_in = np.zeros((T_STEPS, n), np.int64)
    a_in[1:] = fixed.dense_accumulate(spec.weights, x[:, :-1].T, spec.weight_exp)
    params = fixed.LifParams(
        du=spec.du, dv=spec.dv, vth=spec.vth, bias_mant=spec.bias_mant, bias_exp=spec.bias_exp
    )
    state = fixed.LifState.zeros((n,))
    rec = Record(*(np.zeros((T_STEPS, n), np.int64) for _ in range(3)))
    cov = Coverage(int(np.abs(a_in).max()), *(np.zeros((T_STEPS, n), bool) for _ in range(4)))
    bias = fixed.scaled_bias(spec.bias_mant, spec.bias_exp)
    for t in range(T_STEPS):
        # Coverage bookkeeping only: the values before wrap / clip.
        u_raw = fixed.decay(state.u, spec.du + 1) + (a_in[t] << 6)
        cov.u_wrap_pos[t] = u_raw > UV_LIM
        cov.u_wrap_neg[t] = u_raw <= -UV_LIM
        v_prev = state.v
        spikes, state = fixed.lif_step(state, a_in[t], params)
        v_raw = fixed.decay(v_prev, spec.dv) + state.u + bias
        cov.v_clip_pos[t] = v_raw > UV_LIM - 1
        cov.v_clip_neg[t] = v_raw < -(UV_LIM - 1)
        rec.u[t], rec.v[t], rec.spikes[t] = state.u, state.v, spikes
    return rec, cov


def _run_lava_dense_lif(specs: list[ProcSpec], data: np.ndarray) -> list[Record]:
    """One Lava network: a shared source feeding one Dense -> LIF -> sink per spec."""
    src = SourceRingBuffer(data=data.astype(np.int32))
    lifs, sinks = [], []
    for spec in specs:
        n = spec.weights.shape[0]
        dense = Dense(
            weights=spec.weights.astype(np.int32),
            weight_exp=spec.weight_exp,
            num_message_bits=8 if spec.graded else 0,
        )
        lif = LIF(
            shape=(n,),
            du=spec.du,
            dv=spec.dv,
            vth=spec.vth,
            bias_mant=spec.bias_mant.astype(np.int32),
            bias_exp=spec.bias_exp.astype(np.int32),
        )
        sink = SinkRingBuffer(shape=(n,), buffer=T_STEPS)
        src.s_out.connect(dense.s_in)
        dense.a_out.connect(lif.a_in)
        lif.s_out.connect(sink.a_in)
        lifs.append(lif)
        sinks.append(sink)
    n = N_PER_PROC
    u = np.zeros((len(specs), T_STEPS, n), np.int64)
    v = np.zeros_like(u)
    try:
        for t in range(T_STEPS):
            src.run(condition=RunSteps(num_steps=1), run_cfg=_run_cfg())
            if t == 0:  # get() on a process outside the compiled graph returns its init
                assert all(p.runtime is src.runtime for p in lifs + sinks)
            for p, lif in enumerate(lifs):
                u[p, t] = lif.u.get()
                v[p, t] = lif.v.get()
        spikes = [np.asarray(s.data.get()).astype(np.int64).T for s in sinks]
    finally:
        src.stop()
    return [Record(u[p], v[p], spikes[p]) for p in range(len(specs))]


def _mismatches(
    specs: list[ProcSpec], lava: list[Record], ref: list[Record], data: np.ndarray
) -> list[str]:
    out = []
    for p, spec in enumerate(specs):
        for var in ("u", "v", "spikes"):
            got, want = getattr(lava[p], var), getattr(ref[p], var)
            bad = np.argwhere(got != want)  # rows sorted by step, then neuron
            if bad.size == 0:
                continue
            step, neuron = (int(i) for i in bad[0])
            out.append(
                f"case (process {p} '{spec.name}', neuron {neuron}), step {step} "
                f"(0-based), variable {var}: lava={int(got[step, neuron])} "
                f"reference={int(want[step, neuron])}; "
                f"[{len(bad)} mismatching (step, neuron) entries of {var} in this process; "
                f"first bad neurons {sorted(set(bad[:, 1].tolist()))[:8]}]; "
                f"previous u/v (lava) = "
                f"{int(lava[p].u[step - 1, neuron]) if step else 0}/"
                f"{int(lava[p].v[step - 1, neuron]) if step else 0}; "
                f"input sent at step {step - 1} = "
                f"{data[:, step - 1].tolist() if step else 'none'}; case: {spec.describe(neuron)}"
            )
    return out


@pytest.fixture(scope="module")
def dense_lif_cases():
    rng = np.random.default_rng(SEED)
    specs = _make_specs(rng)
    data = _make_input(rng)
    refs = [_reference(s, data) for s in specs]
    return specs, data, [r for r, _ in refs], [c for _, c in refs]


def test_random_cases_cover_wrap_and_clip(dense_lif_cases):
    """The random cases really exercise the wrap, the clip, spikes and the weight
    clip / LSB truncation, and stay inside the single-wrap input range."""
    specs, _, refs, covs = dense_lif_cases
    n_cases = sum(s.weights.shape[0] for s in specs)
    assert n_cases >= 200
    assert T_STEPS >= 100

    a_in_max = max(c.a_in_max for c in covs)
    assert a_in_max < A_IN_LIMIT, "inputs outside the single-wrap range; lower weight_exp"
    assert a_in_max >= A_IN_LIMIT // 4, "inputs no longer approach the 2**17 limit"

    def cases_with(attr: str) -> int:
        return sum(int(getattr(c, attr).any(axis=0).sum()) for c in covs)

    def events(attr: str) -> int:
        return sum(int(getattr(c, attr).sum()) for c in covs)

    for attr in ("u_wrap_pos", "u_wrap_neg", "v_clip_pos", "v_clip_neg"):
        assert cases_with(attr) >= n_cases // 10, (
            f"only {cases_with(attr)} of {n_cases} cases hit {attr} ({events(attr)} events)"
        )
    spiking = sum(int(r.spikes.any(axis=0).sum()) for r in refs)
    assert n_cases // 4 <= spiking <= n_cases - n_cases // 10, f"{spiking} spiking cases"

    # Synapses: weights outside 8 bits (clipped) and odd mixed-sign weights (LSB lost).
    clipped = truncated = 0
    for s in specs:
        w = s.weights
        if determine_sign_mode(w) == SignMode.MIXED:
            clipped += int(((w < -256) | (w > 255)).sum())
            truncated += int(((w >= -256) & (w <= 255) & (w % 2 == 1)).sum())
        else:
            clipped += int((np.abs(w) > 255).sum())
    assert clipped >= 50 and truncated >= 200, (clipped, truncated)


def test_lif_dense_match_lava_bit_exactly(dense_lif_cases):
    """u, v and spikes of >= 200 random (du, dv, vth, bias, weight row) cases equal
    Lava's PyLifModelBitAcc fed by PyDenseModelBitAcc at every one of 120 steps."""
    specs, data, refs, _ = dense_lif_cases
    lava = _run_lava_dense_lif(specs, data)
    bad = _mismatches(specs, lava, refs, data)
    assert not bad, f"{len(bad)} (process, variable) pairs differ from Lava:\n" + "\n".join(bad)
    # The comparison was not vacuous.
    assert sum(int(r.spikes.sum()) for r in lava) > 1000


def test_wrap_boundary_matches_lava():
    """u at exactly +-2**23 (and one unit inside) against real Lava.

    A source feeds the LIF's a_in directly (no Dense, so no delay and any integer
    input). With du=4095 the current has no memory: u = wrap(a_in << 6), so
    a_in = +-2**17 lands exactly on +-2**23: +2**23 is kept, -2**23 becomes +2**23.
    A second LIF (du=0, dv=0) accumulates the same input and wraps repeatedly.
    """
    b = 1 << 17
    t_steps = 24
    rng = np.random.default_rng(7)
    rows = [
        np.full(t_steps, b),
        np.full(t_steps, -b),
        np.full(t_steps, b - 1),
        np.full(t_steps, -(b - 1)),
        np.resize([b, -b], t_steps),
        np.resize([-b, b - 1, 0, 1 - b], t_steps),
        rng.integers(-b, b + 1, t_steps),
        rng.choice([-b, -b + 1, b - 1, b, 0, 1, -1], t_steps),
    ]
    data = np.stack(rows).astype(np.int64)
    n = data.shape[0]
    groups = [
        dict(du=4095, dv=0, vth=131071, bias_mant=np.zeros(n, np.int64),
             bias_exp=np.zeros(n, np.int64)),
        dict(du=0, dv=0, vth=131071, bias_mant=rng.integers(-4096, 4096, n),
             bias_exp=rng.integers(0, 8, n)),
    ]
    src = SourceRingBuffer(data=data.astype(np.int32))
    lifs, sinks = [], []
    for g in groups:
        lif = LIF(
            shape=(n,), du=g["du"], dv=g["dv"], vth=g["vth"],
            bias_mant=g["bias_mant"].astype(np.int32), bias_exp=g["bias_exp"].astype(np.int32),
        )
        sink = SinkRingBuffer(shape=(n,), buffer=t_steps)
        src.s_out.connect(lif.a_in)
        lif.s_out.connect(sink.a_in)
        lifs.append(lif)
        sinks.append(sink)
    got = {k: np.zeros((len(groups), t_steps, n), np.int64) for k in ("u", "v")}
    try:
        for t in range(t_steps):
            src.run(condition=RunSteps(num_steps=1), run_cfg=_run_cfg())
            for i, lif in enumerate(lifs):
                got["u"][i, t] = lif.u.get()
                got["v"][i, t] = lif.v.get()
        got_spikes = [np.asarray(s.data.get()).astype(np.int64).T for s in sinks]
    finally:
        src.stop()

    for i, g in enumerate(groups):
        params = fixed.LifParams(**g)
        state = fixed.LifState.zeros((n,))
        for t in range(t_steps):
            spikes, state = fixed.lif_step(state, data[:, t], params)
            for var, want, lava_val in (
                ("u", state.u, got["u"][i, t]),
                ("v", state.v, got["v"][i, t]),
                ("spikes", spikes.astype(np.int64), got_spikes[i][t]),
            ):
                bad = np.flatnonzero(want != lava_val)
                assert bad.size == 0, (
                    f"case (LIF {i} {dict(du=g['du'], dv=g['dv'])}, neuron {bad[0]}), step {t}, "
                    f"variable {var}: lava={lava_val[bad[0]]} reference={want[bad[0]]} "
                    f"a_in={data[bad[0], t]}"
                )
    # The boundary really was hit: -2**23 became +2**23 in the memoryless group.
    assert (got["u"][0, :, 1] == UV_LIM).all() and (got["u"][0, :, 0] == UV_LIM).all()


# =====================================================================
# 2. Conv (PyConvModelFixed)
# =====================================================================


def _numpy_conv_whc(
    x: np.ndarray,
    w: np.ndarray,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
) -> np.ndarray:
    """Integer 2-D convolution in Lava's layouts: x (W, H, C_in), w (C_out, KW, KH,
    C_in/groups), output (W_out, H_out, C_out).

    Lava's Conv is a true convolution (scipy.signal.convolve2d, kernel flipped), not
    torch's cross-correlation:
    out[x, y, k] = sum_{i, j, c} xpad[x*sx + i*dx, y*sy + j*dy, c] * w[k, KW-1-i, KH-1-j, c].
    """
    x = np.asarray(x, np.int64)
    w = np.asarray(w, np.int64)[:, ::-1, ::-1, :]
    c_out, kw, kh, c_in_g = w.shape
    (sx, sy), (px, py), (dx, dy) = stride, padding, dilation
    xp = np.pad(x, ((px, px), (py, py), (0, 0)))
    w_out = (xp.shape[0] - dx * (kw - 1) - 1) // sx + 1
    h_out = (xp.shape[1] - dy * (kh - 1) - 1) // sy + 1
    k_g = c_out // groups
    out = np.zeros((w_out, h_out, c_out), np.int64)
    for k in range(c_out):
        g = k // k_g
        chans = slice(g * c_in_g, (g + 1) * c_in_g)
        for i in range(kw):
            for j in range(kh):
                patch = xp[
                    i * dx : i * dx + sx * (w_out - 1) + 1 : sx,
                    j * dy : j * dy + sy * (h_out - 1) + 1 : sy,
                    chans,
                ]
                out[:, :, k] += patch @ w[k, i, j, :]
    return out


def _run_lava_conv(data: np.ndarray, weight: np.ndarray, graded: bool, **conv_kw) -> tuple:
    t_steps = data.shape[-1]
    src = SourceRingBuffer(data=data.astype(np.int32))
    conv = Conv(
        weight=weight.astype(np.int32),
        input_shape=data.shape[:-1],
        num_message_bits=8 if graded else 0,
        **conv_kw,
    )
    sink = SinkRingBuffer(shape=conv.output_shape, buffer=t_steps)
    src.s_out.connect(conv.s_in)
    conv.a_out.connect(sink.a_in)
    try:
        src.run(condition=RunSteps(num_steps=t_steps), run_cfg=_run_cfg())
        out = np.asarray(sink.data.get()).astype(np.int64)
    finally:
        src.stop()
    return out, conv.output_shape


CONV_CASES = {
    # name: (input (W, H, C), C_out, kernel (KW, KH), stride, padding, dilation,
    #        groups, graded, |weight| bound, weight_exp (which Conv must ignore))
    "graded-groups2-stride-pad-dil":
        ((7, 6, 4), 6, (3, 2), (2, 1), (1, 2), (1, 2), 2, True, 300, 3),
    "binary-stride2-pad1": ((6, 5, 3), 4, (3, 3), (2, 2), (1, 1), (1, 1), 1, False, 2000, -4),
    "graded-depthwise-dil2": ((8, 7, 4), 4, (2, 3), (1, 2), (0, 1), (2, 1), 4, True, 128, 0),
    "graded-24bit-overflow": ((5, 5, 2), 2, (3, 3), (1, 1), (1, 1), (1, 1), 1, True, 40000, 0),
}


def _conv_case(name: str):
    shape, c_out, ks, stride, padding, dilation, groups, graded, wmax, wexp = CONV_CASES[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    t_steps = 6
    if graded:
        data = rng.integers(0, 256, shape + (t_steps,))
    else:
        data = (rng.random(shape + (t_steps,)) < 0.5).astype(np.int64)
    weight = rng.integers(-wmax, wmax + 1, (c_out,) + ks + (shape[2] // groups,))
    if name == "graded-24bit-overflow":
        weight[0] = np.abs(weight[0])  # channel 0 overflows upwards, channel 1 mixed
        data[..., 2] = 255
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, weight_exp=wexp)
    return data, weight, graded, kw


def _conv_reference(data, weight, graded, kw) -> tuple[np.ndarray, np.ndarray]:
    """Reference Conv output per step: one-step delay, weight_exp ignored, then
    fixed.wrap_signed to 24 bits. Returns (limited output, unlimited sum), both
    (W, H, C_out, T)."""
    x = data if graded else (data != 0).astype(np.int64)
    geometry = (kw["stride"], kw["padding"], kw["dilation"], kw["groups"])
    sums = [_numpy_conv_whc(x[..., t], weight, *geometry) for t in range(data.shape[-1] - 1)]
    raw = np.stack([np.zeros_like(sums[0])] + sums, axis=-1)
    return fixed.wrap_signed(raw, 24), raw


def _assert_conv_equal(got, want, raw, name):
    bad = np.argwhere(got != want)
    assert bad.size == 0, (
        f"conv case {name!r}: {len(bad)} of {got.size} outputs differ; first at "
        f"(x, y, c_out, step)={tuple(int(i) for i in bad[0])}: lava={got[tuple(bad[0])]} "
        f"reference={want[tuple(bad[0])]} (unclamped sum {raw[tuple(bad[0])]})"
    )


@pytest.mark.parametrize(
    "name",
    [
        "graded-groups2-stride-pad-dil",
        "binary-stride2-pad1",
        "graded-depthwise-dil2",
        "graded-24bit-overflow",
    ],
)
def test_conv_matches_lava(name):
    """Lava Conv (fixed_pt): (W, H, C) layouts, true convolution, one-step delay,
    weight_exp ignored, output wrapped to 24 bits via fixed.wrap_signed."""
    data, weight, graded, kw = _conv_case(name)
    got, shape = _run_lava_conv(data, weight, graded, **kw)
    want, raw = _conv_reference(data, weight, graded, kw)
    assert got.shape == want.shape == tuple(shape) + (data.shape[-1],)
    if name == "graded-24bit-overflow":
        assert (np.abs(raw) >= 1 << 23).sum() >= 10, "the overflow case no longer overflows"
    else:
        assert (np.abs(raw) < 1 << 23).all() and np.abs(raw).max() > 0
    _assert_conv_equal(got, want, raw, name)


def test_lava_conv_output_wraps_modulo_2_24():
    """Pins down Lava's behaviour on 24-bit overflow of the Conv output: a
    two's-complement wrap, not a saturation, and fixed.wrap_signed agrees."""
    name = "graded-24bit-overflow"
    data, weight, graded, kw = _conv_case(name)
    got, _ = _run_lava_conv(data, weight, graded, **kw)
    want, raw = _conv_reference(data, weight, graded, kw)
    assert (raw > (1 << 23) - 1).sum() >= 10 and (raw < -(1 << 23)).sum() >= 1
    _assert_conv_equal(got, want, raw, name)
    # Lava's helper itself, at the boundaries.
    x = np.array([(1 << 23) - 1, 1 << 23, -(1 << 23), -(1 << 23) - 1, 3 << 23])
    expected = [(1 << 23) - 1, -(1 << 23), -(1 << 23), (1 << 23) - 1, -(1 << 23)]
    assert conv_utils.signed_clamp(x, bits=24).tolist() == expected
    assert fixed.wrap_signed(x, 24).tolist() == expected


# =====================================================================
# 3. Pure-numpy edge cases of fixed.py
# =====================================================================


def test_decay_rounds_toward_zero():
    assert fixed.decay(np.array([-5]), 2048).tolist() == [-2]  # -2.5 -> -2, not -3
    assert fixed.decay(np.array([5]), 2048).tolist() == [2]
    assert fixed.decay(np.array([-1, 1, 0]), 1).tolist() == [0, 0, 0]  # 4095/4096 of 1
    rng = np.random.default_rng(0)
    x = rng.integers(-(1 << 23), 1 << 23, 5000)
    d = rng.integers(0, 4097, 5000)  # 4096 = du 4095 + Lava's ds_offset 1
    got = fixed.decay(x, d)
    # Truncation of the exact quotient toward zero, in Python integers.
    want = [
        (abs(xi) * (4096 - di) // 4096) * (1 if xi >= 0 else -1)
        for xi, di in zip(x.tolist(), d.tolist())
    ]
    assert got.tolist() == want
    assert (fixed.decay(-x, d) == -got).all()  # odd symmetry: no floor bias
    assert (fixed.decay(x, 4096) == 0).all() and (fixed.decay(x, 0) == x).all()


def test_wrap_current_boundaries_match_lava_rule():
    lim = 1 << 23
    x = np.array([lim - 1, lim, lim + 1, lim + 5, -lim + 1, -lim, -lim - 1, 0, 2 * lim - 1])
    # Lava: > 2**23 -> minus 2**24, then <= -2**23 -> plus 2**24 (one wrap, asymmetric).
    want = [lim - 1, lim, -lim + 1, -lim + 5, -lim + 1, lim, lim - 1, 0, -1]
    assert fixed.wrap_current(x).tolist() == want


def test_lif_step_wrap_clip_reset_and_strict_threshold():
    lim = 1 << 23
    # du=4095: no current memory, u = wrap(a_in << 6).
    p = fixed.LifParams(du=4095, dv=4095, vth=fixed.VTH_MAX)
    a_in = np.array([1 << 17, -(1 << 17), (1 << 17) - 1, -(1 << 17) + 1])
    s, st = fixed.lif_step(fixed.LifState.zeros((4,)), a_in, p)
    assert st.u.tolist() == [lim, lim, lim - 64, -lim + 64]
    # v = u (dv=4095 decays 0 to 0); 2**23 clips to 2**23 - 1 and spikes; 2**23 - 64 is
    # exactly vth_max << 6 and does not spike (strictly greater is required).
    assert st.v.tolist() == [0, 0, lim - 64, -lim + 64]
    assert s.tolist() == [True, True, False, False]
    # v clips at -(2**23 - 1) and stays there.
    p = fixed.LifParams(du=0, dv=0, vth=0, bias_mant=-4096, bias_exp=7)
    st = fixed.LifState(np.array([-lim + 10]), np.array([-lim + 10]))
    s, st = fixed.lif_step(st, np.array([0]), p)
    assert st.v.tolist() == [-(lim - 1)] and not s.any()
    # Spike only strictly above vth << 6; u is kept at the reset.
    p = fixed.LifParams(du=4095, dv=4095, vth=100)
    s, st = fixed.lif_step(fixed.LifState.zeros((2,)), np.array([100, 101]), p)
    assert s.tolist() == [False, True]
    assert st.v.tolist() == [6400, 0] and st.u.tolist() == [6400, 6464]


def test_scaled_bias():
    assert fixed.scaled_bias(np.array([-4096, 4095, -3, 5]), np.array([7, 7, 0, 2])).tolist() == [
        -4096 << 7, 4095 << 7, -3, 20
    ]
    # Negative exponent: arithmetic (flooring) right shift, as Lava's np.right_shift.
    assert fixed.scaled_bias(np.array([-3, 3]), np.array([-1, -1])).tolist() == [-2, 1]


@pytest.mark.parametrize("sign", ["excitatory", "inhibitory", "mixed", "zeros"])
def test_dense_effective_weights_match_lava_weightutils(sign):
    rng = np.random.default_rng(sum(map(ord, sign)))
    w = rng.integers(-600, 601, (40, 30))
    if sign == "excitatory":
        w = np.abs(w)
    elif sign == "inhibitory":
        w = -np.abs(w)
    elif sign == "zeros":
        w = np.zeros((3, 4), np.int64)
    else:
        w.flat[:8] = [-257, -256, -255, 254, 255, 256, 1, -1]
    mode = determine_sign_mode(w)
    assert mode == {"excitatory": SignMode.EXCITATORY, "inhibitory": SignMode.INHIBITORY,
                    "mixed": SignMode.MIXED, "zeros": SignMode.EXCITATORY}[sign]
    # Exactly what PyDenseModelBitAcc does on its first step (num_weight_bits=8).
    want = truncate_weights(clip_weights(w, mode, num_bits=8), mode, 8)
    got = fixed.dense_effective_weights(w)
    assert got.tolist() == want.tolist()


def test_dense_accumulate_shifts_the_sum():
    w = np.array([[255, -256, 7], [3, 1, -1]])
    x = np.array([[1, 1, 1], [0, 1, 0]])
    eff = fixed.dense_effective_weights(w)  # mixed: [[254, -256, 6], [2, 0, -2]]
    assert eff.tolist() == [[254, -256, 6], [2, 0, -2]]
    assert fixed.dense_accumulate(w, x, 0).tolist() == [[4, 0], [-256, 0]]
    assert fixed.dense_accumulate(w, x, 2).tolist() == [[16, 0], [-1024, 0]]
    assert fixed.dense_accumulate(w, x, -3).tolist() == [[0, 0], [-32, 0]]
    assert fixed.dense_accumulate(w, np.array([[0, 0, 1]]), -2).tolist() == [[1, -1]]  # floor


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(du=-1, dv=0, vth=0),
        dict(du=4096, dv=0, vth=0),
        dict(du=0, dv=-1, vth=0),
        dict(du=0, dv=4096, vth=0),
        dict(du=0, dv=0, vth=-1),
        dict(du=0, dv=0, vth=131072),
        dict(du=0, dv=0, vth=0, bias_mant=4096),
        dict(du=0, dv=0, vth=0, bias_mant=-4097),
        dict(du=0, dv=0, vth=0, bias_mant=np.array([0, 5000, 1])),
    ],
)
def test_lif_params_reject_out_of_range(kwargs):
    with pytest.raises(LoihiRangeError):
        fixed.LifParams(**kwargs)


def test_lif_params_accept_range_limits():
    fixed.LifParams(du=4095, dv=4095, vth=131071, bias_mant=np.array([-4096, 4095]), bias_exp=7)
    fixed.LifParams(du=0, dv=0, vth=0, bias_mant=0, bias_exp=0)


@pytest.mark.parametrize("du,dv,spiking", [(4095, 2048, True), (4095, 0, True), (3071, 3072, True),
                                           (2047, 2048, False), (4095, 2047, True)])
def test_torch_lif_equals_lif_step(du: int, dv: int, spiking: bool) -> None:
    """The reference's int32 kernel is bit-identical to lif_step wherever it is built,
    including wrapped currents and saturated voltages; where it cannot be exact it is
    not built at all."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(du + dv)
    size, steps = 257, 40
    # Past 2^17 the current wraps; past 2^24 the kernel works in int64.
    a_max = (1 << 25) + 5 if dv == 0 else (1 << 17) + 3
    p = fixed.LifParams(du=du, dv=dv, vth=int(rng.integers(1, 1 << 16)),
                        bias_mant=rng.integers(-4096, 4096, size), bias_exp=3)
    kernel = fixed.TorchLif.build(p, spiking, float(a_max), "cpu")
    if dv == 2047:  # 4096 − 2047 is no power of two: only lif_step is exact
        assert kernel is None
        return
    assert kernel is not None and kernel.wraps
    assert kernel.dtype == (torch.int64 if a_max >= 1 << 24 else torch.int32)
    a_in = torch.as_tensor(rng.integers(-a_max, a_max + 1, (steps, 3, size)))
    a_in[::7] = a_max  # drive u to the wrap and v to the clip
    a_in[3::7] = -a_max
    ref = fixed.LifState(torch.zeros((3, size), dtype=torch.int64),
                         torch.zeros((3, size), dtype=torch.int64))
    u = v = torch.zeros((3, size), dtype=kernel.dtype)
    for t in range(steps):
        s_ref, ref = fixed.lif_step(ref, a_in[t], p, spiking)
        s, u, v = kernel(u, v, a_in[t].to(kernel.dtype))
        assert torch.equal(s, s_ref) and torch.equal(u.long(), ref.u) and torch.equal(v.long(), ref.v), t


def test_torch_lif_drops_wrap_and_clip_only_when_unreachable() -> None:
    torch = pytest.importorskip("torch")
    p = fixed.LifParams(du=4095, dv=2048, vth=100)
    assert not fixed.TorchLif.build(p, True, float((1 << 16) - 1), "cpu").wraps
    assert fixed.TorchLif.build(p, True, float(1 << 17), "cpu").wraps  # −2^23 wraps to +2^23
    assert fixed.TorchLif.build(p, True, float(1 << 24) - 1, "cpu").dtype == torch.int32
    assert fixed.TorchLif.build(p, True, float(1 << 24), "cpu").dtype == torch.int64


def test_reference_sums_int32_layers_in_int64_where_their_total_could_overflow() -> None:
    """Each layer's bound fits int32, their sum does not: the group must add in int64."""
    torch = pytest.importorskip("torch")
    import scipy.sparse as sp

    from lrfdyn.loihi.ir import InputSpec, LoweredNetwork, NeuronGroup, RelayParams, SynapseSpec
    from lrfdyn.sim.reference import run_reference

    big = (1 << 30) - 1  # one layer's worst case stays below 2^30 (int32 output)
    n = 3
    syn = [SynapseSpec(name=f"in{i}", src="in", dst="r", weights=sp.csr_matrix(np.eye(n)),
                       weight_exp=0) for i in range(3)]
    net = LoweredNetwork(input=InputSpec(name="in", size=n, levels=big, timesteps=1),
                         groups={"r": NeuronGroup(name="r", size=n, params=RelayParams(0),
                                                  spiking=False, kind="relay")},
                         synapses=syn, output="r", dt=1e-3)
    assert net.groups["r"].graded
    out = run_reference(net, np.full((1, n), big))
    assert (out["r"][0, 0] == 3 * big).all()  # int32 would have wrapped to a negative
