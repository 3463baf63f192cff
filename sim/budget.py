"""The resource guard: estimate a run's memory and time before any of it starts.

A network's size is known once it is lowered (neurons, stored weights, steps per
sample), so a run that cannot finish is refused in milliseconds, with the estimate in
the message, instead of filling the machine's memory or running for days. The
estimate counts what the run allocates, per sample and step:

* the float pass (nirtorch, batches of 256): each layer's state, (batch, neurons) float32;
* the integer reference: every group's recorded values, (N, steps, neurons): a byte per
  spike, 8 per voltage or graded value; its weights as float64 tensors; batches of 64
  of int64 state;
* Lava: the recordings in shared memory ((N, block steps, neurons), 1 byte per spike,
  4 per graded value) and their copy per sample in the main process, the input schedule
  held by the source (4 bytes per value and step, twice: the process and its model),
  its weights (the process and its model), and one forked worker per process
  (:data:`WORKER_BYTES` each).

Times are rough (within a few times): Lava about :data:`LAVA_S_PER_PROCESS_STEP` per
process and step plus :data:`LAVA_S_PER_NEURON_STEP` per neuron and step, measured on
2 cores; the reference about a nanosecond per synaptic weight and step. Only memory is
refused; the time is reported so that the user can decide.

The budget is :data:`DEFAULT_MAX_MEMORY`; ``--max-memory`` (``simulate``, ``profile``)
raises or lowers it for one command.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from lrfdyn.errors import ResourceError, ValidationError

GIB = 1 << 30
#: Memory a run may use unless ``--max-memory`` says otherwise.
DEFAULT_MAX_MEMORY = 8 * GIB
#: Resident memory of one forked Lava worker (Python, numpy, Lava; copy-on-write pages
#: it touches), measured at 30–60 MB.
WORKER_BYTES = 64 << 20
#: Lava CPU simulator: seconds per process and step, and per neuron and step (2 cores).
LAVA_S_PER_PROCESS_STEP = 1.2e-4
LAVA_S_PER_NEURON_STEP = 5e-7
#: Integer reference: seconds per stored synaptic weight and step (float32 matmul / conv).
REFERENCE_S_PER_WEIGHT_STEP = 1e-9
REFERENCE_S_PER_NEURON_STEP = 2e-8
FLOAT_BATCH = 256
REFERENCE_BATCH = 64

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_limit: list[int] = []  # the --max-memory of the running command, if given


def parse_size(text: str) -> int:
    """``8G``, ``512M``, ``1.5T``, ``2GiB`` or plain bytes, as bytes; one clear error else."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(?:I?B)?\s*", str(text), re.IGNORECASE)
    if not m:
        raise ValidationError(f"--max-memory {text!r} is not a size; give e.g. 16G or 512M")
    value = float(m.group(1)) * _UNITS[m.group(2).upper()]
    if not math.isfinite(value) or value < 1:
        raise ValidationError(f"--max-memory {text!r} must be a positive size, e.g. 16G")
    return int(value)


def format_bytes(n: float) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def format_seconds(s: float) -> str:
    for unit, size in (("days", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if s >= size:
            return f"{s / size:.1f} {unit}"
    return f"{s:.0f} s" if s >= 1 else "under a second"


def max_memory() -> int:
    """The budget of the running command."""
    return _limit[-1] if _limit else DEFAULT_MAX_MEMORY


@contextmanager
def limit(size: str | int | None) -> Iterator[None]:
    """Use ``size`` (``--max-memory``; None: the default) as the budget inside the block."""
    if size is None:
        yield
        return
    _limit.append(size if isinstance(size, int) else parse_size(size))
    try:
        yield
    finally:
        _limit.pop()


@dataclass
class Estimate:
    """What one run needs, by part; bytes and seconds."""

    samples: int
    steps: int
    neurons: int
    weights: int
    processes: int
    float_bytes: int
    reference_bytes: int
    lava_bytes: int
    float_s: float
    reference_s: float
    lava_s: float

    @property
    def total_bytes(self) -> int:
        # The float pass ends before the reference starts; the reference's recordings
        # are still held while Lava runs.
        return max(self.float_bytes, self.reference_bytes + self.lava_bytes)

    @property
    def total_s(self) -> float:
        return self.float_s + self.reference_s + self.lava_s

    def describe(self) -> str:
        parts = [f"reference {format_bytes(self.reference_bytes)}"]
        if self.lava_bytes:
            parts.append(f"Lava {format_bytes(self.lava_bytes)} in {self.processes:,} "
                         "worker processes")
        if self.float_bytes:
            parts.append(f"float pass {format_bytes(self.float_bytes)}")
        return (f"about {format_bytes(self.total_bytes)} ({', '.join(parts)}) and "
                f"{format_seconds(self.total_s)} for {self.samples:,} samples x "
                f"{self.steps:,} steps x {self.neurons:,} neurons")

    def to_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "steps": self.steps, "neurons": self.neurons,
                "weights": self.weights, "processes": self.processes,
                "bytes": {"float": self.float_bytes, "reference": self.reference_bytes,
                          "lava": self.lava_bytes, "total": self.total_bytes},
                "seconds": {"float": self.float_s, "reference": self.reference_s,
                            "lava": self.lava_s, "total": self.total_s}}


def estimate(net: Any, samples: int, *, lava: bool = True, float_pass: bool = False,
             record_all: bool = True) -> Estimate:
    """The memory and time of running ``samples`` samples through lowered ``net``.

    ``lava``: the Lava run too; ``float_pass``: the float model's pass over the samples;
    ``record_all``: the reference records every group (else the output only).
    """
    from lrfdyn.loihi.build import drain_steps

    groups = list(net.groups.values())
    neurons = sum(g.size for g in groups)
    steps = int(net.steps_per_sample())
    t = int(net.input.timesteps)
    n = max(int(samples), 0)
    weights = sum(int(s.stored_weights) for s in net.synapses)
    recorded = groups if record_all else [net.groups[net.output]]
    ref_rec = sum(n * steps * g.size * (1 if g.spiking and not g.graded else 8)
                  for g in recorded)
    batch = min(n, REFERENCE_BATCH)
    ref_bytes = ref_rec + 8 * weights + 6 * 8 * batch * neurons
    ref_s = n * steps * (REFERENCE_S_PER_WEIGHT_STEP * weights
                         + REFERENCE_S_PER_NEURON_STEP * neurons)
    lava_bytes, lava_s, processes = 0, 0.0, 0
    if lava:
        block = steps + drain_steps(net)
        processes = 2 * len(groups) + len(net.synapses) + 1 + len(net.bias_sources) + 2
        shm = sum(n * block * g.size * (4 if g.graded else 1) for g in groups)
        main_copy = sum(n * steps * g.size * (1 if g.spiking and not g.graded else 8)
                        for g in groups)
        schedule = 2 * 4 * n * block * (net.input.size + len(net.bias_sources))
        lava_bytes = shm + main_copy + schedule + 2 * 8 * weights + processes * WORKER_BYTES
        lava_s = n * block * (LAVA_S_PER_PROCESS_STEP * processes
                              + LAVA_S_PER_NEURON_STEP * neurons)
    float_bytes, float_s = 0, 0.0
    if float_pass:
        fb = min(n, FLOAT_BATCH)
        # Each layer's current, voltage and output per batch; the batch's output at
        # every step, stacked; the outputs of every sample.
        out = net.groups[net.output].size
        float_bytes = 3 * 4 * fb * neurons + 2 * 4 * fb * t * out + 4 * n * t * out
        float_s = n * t * (REFERENCE_S_PER_WEIGHT_STEP * weights
                           + REFERENCE_S_PER_NEURON_STEP * neurons)
    return Estimate(samples=n, steps=steps, neurons=neurons, weights=weights,
                    processes=processes, float_bytes=float_bytes, reference_bytes=ref_bytes,
                    lava_bytes=lava_bytes, float_s=float_s, reference_s=ref_s, lava_s=lava_s)


def check(net: Any, samples: int, *, lava: bool = True, float_pass: bool = False,
          record_all: bool = True, budget: int | None = None) -> Estimate:
    """:func:`estimate`, refused with :class:`ResourceError` over the budget."""
    est = estimate(net, samples, lava=lava, float_pass=float_pass, record_all=record_all)
    budget = max_memory() if budget is None else budget
    if est.total_bytes > budget:
        raise ResourceError(
            f"this run needs {est.describe()}, over the memory budget of "
            f"{format_bytes(budget)}; run fewer --samples or timesteps, or raise the budget "
            f"with --max-memory {_suggest(est.total_bytes)}"
        )
    return est


def fitting_shards(net: Any, samples: int, *, workers: int = 1, lava: bool = True,
                   float_pass: bool = False, budget: int | None = None) -> int:
    """The fewest contiguous sample shards, at least ``workers``, such that ``workers``
    of them held at once fit the budget. A run records every group of every sample it
    holds, so its memory grows with its samples; shards run one after another (or
    ``workers`` at a time) and merge exactly (:mod:`lrfdyn.sim.shard`). ``float_pass``:
    the float model's pass over all samples runs first, in this process.

    Raises:
        ResourceError: when the float pass, or a shard of one sample per worker, is over
            the budget, with that estimate.
    """
    budget = max_memory() if budget is None else budget
    samples = max(int(samples), 1)
    if float_pass:
        est = estimate(net, samples, lava=False, float_pass=True)
        if est.float_bytes > budget:
            raise ResourceError(
                f"this run needs about {format_bytes(est.float_bytes)} for its float pass "
                f"(which shards cannot split) and {format_seconds(est.total_s)} for "
                f"{samples:,} samples x {est.steps:,} steps x {est.neurons:,} neurons, over "
                f"the memory budget of {format_bytes(budget)}; run fewer --samples or "
                f"timesteps, or raise the budget with --max-memory {_suggest(est.float_bytes)}")
    first = max(1, min(int(workers), samples))

    def fits(shards: int) -> bool:
        held = min(int(workers), shards)
        return held * estimate(net, math.ceil(samples / shards), lava=lava).total_bytes \
            <= budget

    if fits(first):
        return first
    if not fits(samples):
        check(net, 1, lava=lava, budget=budget // first)  # raises, with one sample's needs
    lo, hi = first, samples  # fits(hi), not fits(lo)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(mid) else (mid, hi)
    return hi


def _suggest(n: int) -> str:
    """A round --max-memory above ``n`` bytes."""
    gib = n / GIB
    return f"{max(1, math.ceil(gib * 1.25))}G" if gib < 1024 else f"{math.ceil(gib / 1024 * 1.25)}T"
