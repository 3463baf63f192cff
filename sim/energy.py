"""Energy *estimates* from operation counts; every number carries its constants and sources.

Nothing here is a measurement. Lava's CPU backend has no energy counters, so
energy is estimated as Σ count × energy-per-operation, with published
per-operation figures:

* **Spiking-transformer convention** (Spikformer, Zhou et al., ICLR 2023;
  Spike-driven Transformer, Yao et al., NeurIPS 2023), from 45 nm CMOS figures
  (Horowitz, ISSCC 2014: 32-bit float multiply 3.7 pJ, add 0.9 pJ)::

      E = E_MAC · MAC_first + E_AC · SynOps_rest,   E_MAC = 4.6 pJ, E_AC = 0.9 pJ

  ``MAC_first`` are the multiply-accumulates of the layers fed by the graded
  (non-spiking) input; ``SynOps_rest`` are all other SynOps (binary spikes,
  one accumulate each).
* **Loihi-based** (Loihi 1 figures, Davies et al., IEEE Micro 38(1), 2018)::

      E = E_syn · SynOps + E_neuron · neuron_updates + E_spike · spikes

  Loihi 1 published figures are used as an estimate for Loihi 2; they are
  unverified for Loihi 2 (Intel 4 process, different core design). They cover
  dynamic energy only: no static/leakage power, no tile hops beyond one, no
  barrier synchronisation, no host I/O.
* **Dense ANN baseline**: the same layers as a non-spiking network,
  ``E = E_MAC · dense_MACs`` (45 nm, same source), for comparison.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from lrfdyn.errors import ValidationError

#: Every energy result says this: it is computed from counts and constants, never measured.
KIND = "estimate"


@dataclass(frozen=True)
class EnergyConstant:
    """One energy-per-operation figure with its provenance."""

    name: str
    pj: float
    source: str
    note: str = ""

    def __post_init__(self) -> None:
        if not self.pj > 0:
            raise ValidationError(f"energy constant {self.name}: {self.pj} pJ must be positive")


# ------------------------------------------------- 45 nm (spiking-transformer convention)

_HOROWITZ = ("M. Horowitz, 'Computing's energy problem (and what we can do about it)', "
             "ISSCC 2014, 45 nm")

#: One 32-bit float multiply-accumulate at 45 nm: 3.7 pJ (fmul) + 0.9 pJ (fadd).
E_MAC_45NM = EnergyConstant(
    "E_MAC (32-bit float MAC, 45 nm)", 4.6, _HOROWITZ,
    "as used by Spikformer (ICLR 2023) and Spike-driven Transformer (NeurIPS 2023)",
)
#: One 32-bit float accumulate at 45 nm (a SynOp of a binary spike).
E_AC_45NM = EnergyConstant(
    "E_AC (32-bit float add, 45 nm)", 0.9, _HOROWITZ,
    "as used by Spikformer (ICLR 2023) and Spike-driven Transformer (NeurIPS 2023)",
)

# ------------------------------------------------- Loihi 1 (used as an estimate for Loihi 2)

_DAVIES = ("M. Davies et al., 'Loihi: A Neuromorphic Manycore Processor with On-Chip "
           "Learning', IEEE Micro 38(1):82-99, 2018 (table of energy per operation)")
_LOIHI2_CAVEAT = "Loihi 1 published figure used as an estimate for Loihi 2; unverified for Loihi 2"

#: Minimum energy of one synaptic spike operation on Loihi 1.
E_LOIHI1_SYNOP = EnergyConstant("E_syn (Loihi 1 synaptic spike op)", 23.6, _DAVIES,
                                _LOIHI2_CAVEAT)
#: Energy of one neuron (compartment) update on Loihi 1; the paper's lower figure
#: (it quotes a higher one, ~81 pJ, for an active update), so this term is a lower bound.
E_LOIHI1_NEURON = EnergyConstant("E_neuron (Loihi 1 neuron update)", 52.0, _DAVIES,
                                 f"{_LOIHI2_CAVEAT}; lower of the two published figures")
#: Energy of delivering one spike within a tile (no mesh hops) on Loihi 1.
E_LOIHI1_SPIKE = EnergyConstant("E_spike (Loihi 1 within-tile spike)", 1.7, _DAVIES,
                                f"{_LOIHI2_CAVEAT}; ignores mesh hops")


# ------------------------------------------------- results


@dataclass
class EnergyTerm:
    """``count`` operations of one kind at ``constant.pj`` each."""

    quantity: str
    count: float
    constant: EnergyConstant

    @property
    def pj(self) -> float:
        return self.count * self.constant.pj


@dataclass
class EnergyEstimate:
    """An energy *estimate*: the sum of its terms, for the run and per sample."""

    method: str
    terms: list[EnergyTerm]
    samples: int
    caveat: str
    kind: str = KIND
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ValidationError(f"energy estimate over {self.samples} samples; need at least 1")
        if self.kind != KIND:
            raise ValidationError(f"energy results are estimates, not {self.kind!r}")

    @property
    def total_pj(self) -> float:
        return sum(t.pj for t in self.terms)

    @property
    def per_sample_pj(self) -> float:
        return self.total_pj / self.samples

    def formula(self) -> str:
        """The estimate written out, e.g. ``4.6 pJ × 1,200 MAC + 0.9 pJ × 300 AC``."""
        return " + ".join(f"{t.constant.pj:g} pJ × {t.count:,.0f} {t.quantity}"
                          for t in self.terms)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "method": self.method,
            "total_pj": self.total_pj, "per_sample_pj": self.per_sample_pj,
            "per_sample_nj": self.per_sample_pj / 1e3, "samples": self.samples,
            "formula": self.formula(), "caveat": self.caveat,
            "terms": [{"quantity": t.quantity, "count": t.count, "pj": t.pj,
                       "constant": dataclasses.asdict(t.constant)} for t in self.terms],
            **self.extra,
        }


def _check_counts(**counts: float) -> None:
    for name, value in counts.items():
        if value < 0:
            raise ValidationError(f"energy estimate: {name} = {value} must be non-negative")


def transformer_convention(first_layer_macs: float, synops_ac: float, samples: int
                           ) -> EnergyEstimate:
    """``E = 4.6 pJ · MAC_first + 0.9 pJ · SynOps_rest`` (45 nm; Spikformer / SDT convention).

    Args:
        first_layer_macs: MACs of the synapse layers fed by the graded input, over the run.
        synops_ac: every other SynOp (one accumulate per spike and target), over the run.
        samples: samples the counts cover (for the per-sample figure).
    """
    _check_counts(first_layer_macs=first_layer_macs, synops_ac=synops_ac)
    return EnergyEstimate(
        method="spiking-transformer convention (45 nm MAC/AC)",
        terms=[EnergyTerm("MAC (graded-input layer)", first_layer_macs, E_MAC_45NM),
               EnergyTerm("AC (SynOps of spikes)", synops_ac, E_AC_45NM)],
        samples=samples,
        caveat="estimate from operation counts and 45 nm figures; not a measurement, "
               "and not Loihi's energy",
    )


def loihi_estimate(synops: float, neuron_updates: float, spikes: float, samples: int
                   ) -> EnergyEstimate:
    """``E = 23.6 pJ · SynOps + 52 pJ · neuron updates + 1.7 pJ · spikes`` (Loihi 1 figures).

    Args:
        synops: all SynOps, graded input and bias included (Loihi runs every one of them).
        neuron_updates: neurons × steps.
        spikes: spikes emitted by all neuron groups.
        samples: samples the counts cover.
    """
    _check_counts(synops=synops, neuron_updates=neuron_updates, spikes=spikes)
    return EnergyEstimate(
        method="Loihi-based (Loihi 1 published per-operation figures)",
        terms=[EnergyTerm("SynOps", synops, E_LOIHI1_SYNOP),
               EnergyTerm("neuron updates", neuron_updates, E_LOIHI1_NEURON),
               EnergyTerm("spikes", spikes, E_LOIHI1_SPIKE)],
        samples=samples,
        caveat="estimate: Loihi 1 published figures used as an estimate for Loihi 2; "
               "unverified for Loihi 2; dynamic energy only (no static power, mesh hops, "
               "synchronisation or host I/O)",
    )


def dense_ann_estimate(dense_macs: float, samples: int) -> EnergyEstimate:
    """``E = 4.6 pJ · dense MACs``: the same layers as a dense, non-spiking network (45 nm)."""
    _check_counts(dense_macs=dense_macs)
    return EnergyEstimate(
        method="dense ANN baseline (45 nm MAC)",
        terms=[EnergyTerm("MAC (dense-equivalent)", dense_macs, E_MAC_45NM)],
        samples=samples,
        caveat="estimate for comparison: every weight multiplied at every step",
    )
