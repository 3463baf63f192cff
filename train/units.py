"""Time and leak conversions, in one place.

A Spikformer LIF with membrane time constant tau (in steps) updates
``v ← (1 − 1/tau)·v + (1/tau)·x``. NIR describes the same neuron in continuous
time, ``tau_s·dv/dt = (v_leak − v) + r·I``, which forward Euler with step ``dt``
turns into exactly that update when ``tau_s = tau·dt`` and ``r = 1``. Loihi keeps
``(4096 − dv)/4096`` of v per step, so ``dv = 4096/tau``. These functions are
each other's inverses (``tests/train/test_units.py``).
"""

from __future__ import annotations

from lrfdyn.loihi.fixed import DECAY_UNITY, decay_from_factor

#: Default NIR time step in seconds. Exported graphs record it in ``graph.metadata["dt"]``.
DT = 1e-3


def leak_factor(tau_steps: float) -> float:
    """Fraction of v kept per step: ``1 − 1/tau``."""
    return 1.0 - 1.0 / tau_steps


def tau_from_leak(keep: float) -> float:
    """Inverse of :func:`leak_factor`."""
    return 1.0 / (1.0 - keep)


def tau_to_seconds(tau_steps: float, dt: float = DT) -> float:
    """NIR's continuous time constant for a time constant of ``tau_steps`` steps."""
    return tau_steps * dt


def seconds_to_tau(tau_s: float, dt: float = DT) -> float:
    """Inverse of :func:`tau_to_seconds`."""
    return tau_s / dt


def tau_to_dv(tau_steps: float) -> int:
    """Loihi 12-bit voltage decay for a time constant in steps (tau=2 → 2048)."""
    return decay_from_factor(leak_factor(tau_steps))


def dv_to_tau(dv: int) -> float:
    """Inverse of :func:`tau_to_dv` (exact for dv = 4096/tau)."""
    return DECAY_UNITY / dv
