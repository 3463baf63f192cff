"""Affine expressions of delayed sources, built from typed synapse maps.

Between two neuron groups a chain or sum of linear NIR nodes is an
:class:`Expression`: ``Σ map(source[t − lag]) + bias``. Each term keeps its
structure (:mod:`lrfdyn.loihi.layers`): a conv stays a conv, so composing a chain
never multiplies a shared kernel out into one matrix per position. Where a
composition cannot stay shared, :meth:`Expression.then` says so (returns None)
and lowering makes the intermediate node a relay instead.

A NIR ``Delay`` is linear too, but it shifts time rather than mixing values, so
terms are keyed by :class:`Tap` (source, lag in steps): paths from one source that
reach a target with different lags become different synapses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import nir
import numpy as np
import scipy.sparse as sp
import torch

from lrfdyn.errors import ValidationError
from lrfdyn.loihi.layers import (
    MAP_BUILDERS,
    LinearMap,
    MatrixMap,
    NodeMap,
    add,
    compose,
    identity,
    node_map,
)


class Tap(NamedTuple):
    """A source's output ``lag`` steps ago (``lag`` > 0 behind a NIR Delay; < 0, a later
    step, only inside a block-sum node's lowering)."""

    source: str
    lag: int = 0


Term = tuple[Tap, LinearMap]


def apply_map(m: LinearMap, v: np.ndarray) -> np.ndarray:
    """``m`` applied to one flat float vector."""
    return m.apply(torch.as_tensor(v, dtype=torch.float64)[None])[0].numpy()


@dataclass(eq=False)
class Expression:
    """``Σ_terms map(tap.source[t − tap.lag]) + bias`` (bias flattened, C order)."""

    terms: list[Term]
    bias: np.ndarray
    shape: tuple[int, ...]

    @classmethod
    def source(cls, name: str, shape: tuple[int, ...]) -> Expression:
        return cls([(Tap(name), identity(shape))], np.zeros(math.prod(shape)), tuple(shape))

    @property
    def size(self) -> int:
        return int(self.bias.size)

    @property
    def sources(self) -> set[str]:
        return {tap.source for tap, _ in self.terms}

    def then(self, nm: NodeMap, *, with_bias: bool = True,
             explicit: bool = False) -> Expression | None:
        """This expression seen through a linear node, or None if a term cannot stay shared.

        ``explicit=True`` multiplies explicit matrices whatever their size (never None).
        """
        if nm.map.n_in != self.size:
            raise ValidationError(
                f"a linear node expects {nm.map.n_in} inputs but receives {self.size}"
            )
        terms = []
        for tap, m in self.terms:
            if explicit:
                c = MatrixMap((nm.map.matrix() @ m.matrix()).tocsr(), tuple(m.in_shape),
                              tuple(nm.map.out_shape))
            else:
                c = compose(nm.map, m)
            if c is None:
                return None
            terms.append((tap, c))
        bias = apply_map(nm.map, self.bias) if np.any(self.bias) else np.zeros(nm.map.n_out)
        if with_bias and nm.bias is not None:
            bias = bias + nm.bias
        return Expression(merged_terms(terms), bias, tuple(nm.map.out_shape))

    def plus(self, other: Expression) -> Expression:
        """Sum of two expressions (NIR sums the edges entering a node)."""
        if other.size != self.size:
            raise ValidationError(
                f"edges entering one node carry {self.size} and {other.size} values"
            )
        return Expression(merged_terms(self.terms + other.terms), self.bias + other.bias,
                          self.shape)

    def plus_bias(self, bias: np.ndarray | None) -> Expression:
        if bias is None:
            return self
        return Expression(self.terms, self.bias + bias, self.shape)

    def explicit(self) -> Expression:
        """Every term as an explicit matrix (the float lowering, small graphs)."""
        terms = [(tap, m if isinstance(m, MatrixMap) else
                  MatrixMap(m.matrix(), tuple(m.in_shape), tuple(m.out_shape)))
                 for tap, m in self.terms]
        return Expression(merged_terms(terms), self.bias, self.shape)

    def delayed(self, lags: np.ndarray) -> Expression:
        """This expression seen through per-element delays of ``lags`` steps (NIR Delay).

        One lag for every element shifts each tap; different lags select rows, which
        needs explicit matrices. A constant bias is the same at every step.
        """
        lags = np.broadcast_to(np.asarray(lags, np.int64).ravel(), self.bias.shape)
        if np.all(lags == lags[0]):
            lag = int(lags[0])
            return Expression([(Tap(t.source, t.lag + lag), m) for t, m in self.terms],
                              self.bias, self.shape)
        terms: list[Term] = []
        for lag in np.unique(lags):
            rows = sp.diags((lags == lag).astype(np.float64), format="csr")
            for tap, m in self.explicit().terms:
                terms.append((Tap(tap.source, tap.lag + int(lag)),
                              MatrixMap((rows @ m.matrix()).tocsr(), m.in_shape, m.out_shape)))
        return Expression(merged_terms(terms), self.bias, self.shape)


def merged_terms(terms: list[Term]) -> list[Term]:
    """Terms with one entry per (tap, structure): same-shaped maps from one tap add up."""
    out: list[Term] = []
    for tap, m in terms:
        for i, (t2, m2) in enumerate(out):
            if t2 == tap:
                s = add(m2, m)
                if s is not None:
                    out[i] = (tap, s)
                    break
        else:
            out.append((tap, m))
    return out


# ---------------------------------------------------------------- one node, as a matrix


@dataclass(eq=False)
class LinearMatrix:
    """``y = matrix @ x + bias`` on flattened arrays (the NIR simulator's view of a node)."""

    matrix: sp.csr_matrix
    bias: np.ndarray | None
    out_shape: tuple[int, ...]


def linear_map(node: nir.NIRNode, in_shape: tuple[int, ...], name: str) -> LinearMatrix:
    """One linear node as an explicit matrix (small graphs: the float NIR simulation)."""
    nm = node_map(node, in_shape, name)
    return LinearMatrix(nm.map.matrix(), nm.bias, tuple(nm.map.out_shape))


__all__ = ["MAP_BUILDERS", "Expression", "LinearMatrix", "Tap", "Term", "apply_map", "linear_map",
           "merged_terms"]
