"""Every Lava process and CPU process model of lrfdyn's own, in one place.

* :mod:`.compartment`: LRF-Dyn's dendritic compartment (CUBA u/v without a threshold).
* :mod:`.nir_neuron`: a LIF that resets like snnTorch or never spikes (float runs, readouts).
* :mod:`.recorder`: spikes and graded payloads straight into memory-mapped files.
* :mod:`.sparse`: faster bit-identical CPU models of Lava's own ``Sparse``/``DelaySparse``.
* :mod:`.conv`: a faster bit-identical CPU model of Lava's own ``Conv`` (wide ``groups``).
* :mod:`.clocked`: a LIF that updates once per stream period and a recorder of its update
  steps (the per-token side of the one dendritic network).

The models of Lava's own processes are selected per process type through
``exception_proc_model_map``; :func:`cpu_models` gives that map. On Loihi 2 none
of them is used: lava-loihi brings its own.
"""

from __future__ import annotations

from typing import Any


def cpu_models(select_tag: str = "fixed_pt", *, stock: bool = False) -> dict[type, Any]:
    """``exception_proc_model_map`` for a CPU run with tag ``select_tag``.

    ``stock=True`` keeps Lava's own models for Lava's own processes (the fast
    replacements are fixed_pt only, and tests compare the two).
    """
    from lrfdyn.loihi.processes.compartment import COMPARTMENT_MODELS
    from lrfdyn.loihi.processes.nir_neuron import NIR_NEURON_MODELS
    from lrfdyn.loihi.processes.recorder import RECORDER_MODELS

    models: dict[type, Any] = {**RECORDER_MODELS, **COMPARTMENT_MODELS,
                               **NIR_NEURON_MODELS.get(select_tag, {})}
    if select_tag == "fixed_pt" and not stock:
        from lrfdyn.loihi.processes.sparse import FAST_MODELS

        from lrfdyn.loihi.processes.conv import FAST_CONV_MODELS

        models.update(FAST_MODELS)
        models.update(FAST_CONV_MODELS)
    return models
