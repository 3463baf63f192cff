"""Issue #8 (5): an equivalent small spiking MLP in a peer library vs lrfdyn's training forward.

The network is the demo MLP (64 → 128 → 128 → 10, T = 8, batch 256, Spikformer LIF
``v ← v/2 + x/2`` with hard reset to 0, threshold 1). In snnTorch it is
``Linear → Leaky(beta=0.5, reset_mechanism="zero")`` per layer with the weights of the
lrfdyn model halved (snnTorch adds the full input, lrfdyn adds x/τ), so both compute the
same spikes; the forward runs with autograd on, as in training. Baseline: lrfdyn.

Peers are installed only for the benchmark, from ``requirements-peers.txt`` with
``--no-deps`` (``ensure_peers``), and only if that leaves torch and numpy untouched.
Norse runs too where it is installed (``make test-peers`` installs it; norse 1.1.0
runs with the venv's torch 2.14, checked by tests/peers): ``LIFBoxCell`` with
τ⁻¹ = 500 /s at Norse's dt = 1 ms is ``v ← v/2 + x/2`` with reset to 0, so it takes the
lrfdyn weights unhalved.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
from importlib import metadata

import torch

from common import BENCH_DIR, PYTHON, Row, measure_interleaved, set_threads

BATCH = 256


def ensure_peers() -> dict[str, str]:
    """Install the peers of ``requirements-peers.txt`` with ``--no-deps`` when missing.

    Returns ``{package: "ok <version>" | reason}``. Skipped with LRFDYN_BENCH_NO_INSTALL=1.
    """
    status: dict[str, str] = {}
    if importlib.util.find_spec("snntorch") is None:
        if os.environ.get("LRFDYN_BENCH_NO_INSTALL") == "1":
            return {"snntorch": "not installed (LRFDYN_BENCH_NO_INSTALL=1)"}
        before = {p: metadata.version(p) for p in ("torch", "numpy")}
        proc = subprocess.run(
            [PYTHON, "-m", "pip", "install", "-q", "--no-deps", "-r",
             str(BENCH_DIR / "requirements-peers.txt")],
            capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
        after = {p: metadata.version(p) for p in ("torch", "numpy")}
        if proc.returncode != 0:
            return {"snntorch": f"pip install failed: {proc.stderr.strip()[-200:]}"}
        if before != after:
            return {"snntorch": f"install changed {before} → {after}; not used"}
        importlib.invalidate_caches()
    try:
        import snntorch  # noqa: F401

        status["snntorch"] = f"ok {metadata.version('snntorch')}"
    except Exception as exc:  # noqa: BLE001
        status["snntorch"] = f"import failed: {type(exc).__name__}: {exc}"
    return status


def _copied_linears(lrf_model: torch.nn.Module, scale: float) -> torch.nn.ModuleList:
    """lrfdyn's Linear layers copied, weights and biases times ``scale``."""
    from torch import nn

    fcs = nn.ModuleList()
    for lin in (m for m in lrf_model.layers if isinstance(m, nn.Linear)):
        fc = nn.Linear(lin.in_features, lin.out_features)
        with torch.no_grad():
            fc.weight.copy_(lin.weight * scale)
            fc.bias.copy_(lin.bias * scale)
        fcs.append(fc)
    return fcs


class _PeerMLP(torch.nn.Module):
    """Linear → peer LIF chains over T steps; ``init_state(lif)`` is the peer's first state."""

    def __init__(self, fcs, lifs, steps: int, init_state) -> None:
        super().__init__()
        self.fcs, self.lifs, self.steps, self.init_state = fcs, lifs, steps, init_state

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x0 = images.flatten(1)
        states = [self.init_state(lif) for lif in self.lifs]
        out = []
        for _ in range(self.steps):
            x = x0
            for i, (fc, lif) in enumerate(zip(self.fcs, self.lifs)):
                x, states[i] = lif(fc(x), states[i])
            out.append(x)
        return torch.stack(out)


def _snntorch_mlp(lrf_model: torch.nn.Module):
    import snntorch as snn

    # snnTorch's Leaky is v <- beta·v + x: lrfdyn's 1/τ = 0.5 goes into the weights.
    fcs = _copied_linears(lrf_model, 0.5)
    lifs = torch.nn.ModuleList(snn.Leaky(beta=0.5, threshold=1.0, reset_mechanism="zero")
                               for _ in fcs)
    return _PeerMLP(fcs, lifs, lrf_model.cfg.timesteps, lambda lif: lif.reset_mem())


def _norse_mlp(lrf_model: torch.nn.Module):
    import norse.torch as nt

    fcs = _copied_linears(lrf_model, 1.0)
    p = nt.LIFBoxParameters(tau_mem_inv=torch.tensor(500.0), v_th=torch.tensor(1.0))
    lifs = torch.nn.ModuleList(nt.LIFBoxCell(p) for _ in fcs)
    return _PeerMLP(fcs, lifs, lrf_model.cfg.timesteps, lambda lif: None)


def _forward_row(label: str, status: str, make_peer, ours, images) -> Row:
    """The peer's MLP forward against lrfdyn's, same weights, interleaved in one run."""
    if not status.startswith("ok"):
        return Row(group="peers", name=f"{label} spiking MLP forward", value=None, unit="s",
                   target="optional peer", met=None, reason=f"skipped: {status}")
    peer = make_peer(ours)
    with torch.no_grad():
        a, _ = ours(images)
        b = peer(images)
    t = measure_interleaved({"ours": lambda: ours(images)[0].sum(),
                             "peer": lambda: peer(images).sum()}, repeats=7)
    return Row(
        group="peers", name=f"{label} {status[3:]} MLP 64-128-128-10, T=8, batch {BATCH}, "
        "forward (autograd on)", value=t["peer"], unit="s",
        baseline_name="lrfdyn SpikingMLP forward", baseline=t["ours"],
        ratio=t["peer"]["median"] / t["ours"]["median"], ratio_label=f"{label} / lrfdyn",
        target="informational", extra={"spike_agreement": float((a == b).float().mean())})


def run(quick: bool = False) -> tuple[list[Row], dict]:
    set_threads()
    status = ensure_peers()
    from lrfdyn.train.models import build_model

    torch.manual_seed(0)
    ours = build_model("mlp", {"in_features": 64, "hidden": [128, 128], "num_classes": 10,
                               "timesteps": 8})
    images = torch.rand(BATCH, 1, 8, 8)
    try:
        import norse.torch  # noqa: F401

        status["norse"] = f"ok {metadata.version('norse')}"
    except Exception as exc:  # noqa: BLE001
        status["norse"] = f"not installed ({type(exc).__name__}; make test-peers installs it)"
    rows = [_forward_row(label, status[key], make, ours, images)
            for key, label, make in (("snntorch", "snnTorch", _snntorch_mlp),
                                     ("norse", "Norse", _norse_mlp))]
    return rows, {"peers": status}


if __name__ == "__main__":
    for r in run()[0]:
        print(r.name, r.value and r.value["median"], r.ratio, r.extra, r.reason)
