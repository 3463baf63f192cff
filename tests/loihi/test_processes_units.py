"""Unit tests of loihi/processes/__init__.py: which CPU model ``cpu_models`` picks for each
process, per tag and with ``stock``. The map is what Lava runs (exception_proc_model_map),
so a wrong entry means Lava's own Conv (zeros at 192 groups) or its slow Sparse."""

from __future__ import annotations

import lrfdyn.loihi.compat  # noqa: F401  (before any lava import)
from lava.proc.conv.process import Conv
from lava.proc.sparse.process import DelaySparse, Sparse

from lrfdyn.loihi.processes import cpu_models
from lrfdyn.loihi.processes.compartment import DendriteCompartments, PyDendriteCompartmentsModel
from lrfdyn.loihi.processes.conv import FastConvModel
from lrfdyn.loihi.processes.nir_neuron import NirLIF, PyNirLifModelFixed, PyNirLifModelFloat
from lrfdyn.loihi.processes.recorder import PySpikeRecorderModel, SpikeRecorder
from lrfdyn.loihi.processes.sparse import CachedDelaySparseModel, DotSparseModel

OWN = {SpikeRecorder: PySpikeRecorderModel, DendriteCompartments: PyDendriteCompartmentsModel}


def test_fixed_point_runs_use_the_fast_conv_and_sparse_models():
    assert cpu_models() == cpu_models("fixed_pt") == {
        **OWN, NirLIF: PyNirLifModelFixed, Sparse: DotSparseModel,
        DelaySparse: CachedDelaySparseModel, Conv: FastConvModel}


def test_stock_keeps_lavas_own_models_for_lavas_own_processes():
    assert cpu_models("fixed_pt", stock=True) == {**OWN, NirLIF: PyNirLifModelFixed}


def test_float_runs_get_the_float_nir_neuron_and_no_fixed_point_models():
    assert cpu_models("floating_pt") == {**OWN, NirLIF: PyNirLifModelFloat}
    assert cpu_models("floating_pt", stock=True) == {**OWN, NirLIF: PyNirLifModelFloat}


def test_stock_is_a_keyword_argument():
    import pytest

    with pytest.raises(TypeError):
        cpu_models("fixed_pt", True)  # a second positional argument is not ``stock``
    assert cpu_models(select_tag="fixed_pt", stock=True) == cpu_models("fixed_pt", stock=True)
