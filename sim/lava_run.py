"""Run a lowered network on Lava's CPU simulator (``fixed_pt``), sample by sample.

One compiled network serves every sample: after each sample the runner zeroes
all neuron and synapse state (DESIGN.md §6: identical to a fresh network), and
the source ring buffer simply moves on to the next sample's block. The network
is stopped on every path, including errors and Ctrl-C.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

import lrfdyn.loihi.compat  # noqa: F401  (before any lava import)
from lava.magma.core.run_conditions import RunSteps
from lava.magma.core.run_configs import Loihi2SimCfg, RunConfig

from lrfdyn.errors import LavaRunError
from lrfdyn.loihi.build import LavaNetwork, build_lava, reset_state
from lrfdyn.loihi.lower import LoweredNetwork


@dataclass
class LavaRun:
    """Raw spikes of every group, (N, steps_per_sample, size), plus timings in seconds."""

    spikes: dict[str, np.ndarray]
    compile_s: float
    run_s: float


def run_lava(
    net: LoweredNetwork,
    x: np.ndarray,
    *,
    on_sample: Callable[[int], None] | None = None,
    select_tag: str = "fixed_pt",
    run_cfg: RunConfig | None = None,
    backend: str = "Lava",
) -> LavaRun:
    """Run samples ``x`` (N, input_size) through ``net`` on Lava and record every spike.

    ``run_cfg`` replaces the default ``Loihi2SimCfg(select_tag=select_tag)``, e.g. with
    ``Loihi2HwCfg()`` for the chip; ``backend`` names it in error messages.
    """
    lava_net = build_lava(net, np.asarray(x, np.int64))
    steps = lava_net.steps_per_sample
    spikes = {g: np.zeros((len(x), steps, grp.size), bool) for g, grp in net.groups.items()}
    runner = lava_net.source
    cfg = run_cfg if run_cfg is not None else Loihi2SimCfg(select_tag=select_tag)
    compile_s = run_s = 0.0
    try:
        for i in range(len(x)):
            t0 = time.perf_counter()
            try:
                runner.run(condition=RunSteps(num_steps=steps), run_cfg=cfg)
            except Exception as exc:  # Lava raises bare Exceptions from its runtime
                raise LavaRunError(
                    f"{backend} failed on sample {i}: {type(exc).__name__}: "
                    f"{_first_line(exc)}; rerun with --debug for the traceback"
                ) from exc
            elapsed = time.perf_counter() - t0
            if i == 0:
                compile_s = elapsed
            else:
                run_s += elapsed
            _collect(lava_net, spikes, i)
            reset_state(lava_net)
            if on_sample is not None:
                on_sample(i)
    finally:
        _stop(lava_net)
    return LavaRun(spikes=spikes, compile_s=compile_s, run_s=run_s)


def _collect(lava_net: LavaNetwork, spikes: dict[str, np.ndarray], i: int) -> None:
    for name, sink in lava_net.sinks.items():
        spikes[name][i] = sink.data.get().T != 0


def _stop(lava_net: LavaNetwork) -> None:
    runtime = getattr(lava_net.source, "runtime", None)
    if runtime is not None:
        try:
            lava_net.source.stop()
        except Exception:  # noqa: BLE001  (a failed run may leave a half-started runtime)
            pass


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else "(no message)"
