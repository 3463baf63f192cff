"""Lava imports and runs on this Python through lrfdyn's compatibility shim."""

import dataclasses
import sys

import numpy as np
import pytest

import lrfdyn.loihi.compat  # noqa: F401


def test_lava_process_modules_import() -> None:
    import lava.proc.conv.process as conv
    import lava.proc.dense.process as dense
    import lava.proc.lif.process as lif

    assert lif.LIF and dense.Dense and conv.Conv


@pytest.mark.skipif(sys.version_info < (3, 11), reason="the shim only acts on 3.11+")
def test_shim_is_scoped_to_lava_classes() -> None:
    @dataclasses.dataclass
    class Unhashable:
        x: int = 0

    with pytest.raises(ValueError, match="mutable default"):

        @dataclasses.dataclass
        class Outside:
            field_: Unhashable = Unhashable()


def test_lava_default_is_shared_as_in_python_310() -> None:
    from lava.magma.compiler.var_model import ByteEncoder, CoreEncoder

    # 3.10 semantics: every instance shares the one default object, and the class
    # attribute still holds it.
    a, b = CoreEncoder(), CoreEncoder()
    assert isinstance(a.x, ByteEncoder)
    assert a.x is b.x is CoreEncoder.x
    assert CoreEncoder(x=ByteEncoder(base=3)).x.base == 3


def test_tiny_dense_lif_runs_20_steps_and_stops() -> None:
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.dense.process import Dense
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source
    from lava.proc.lif.process import LIF

    src = Source(data=np.ones((2, 20), np.int32))
    dense = Dense(weights=np.array([[100, 0], [0, 40]]))
    lif = LIF(shape=(2,), du=4095, dv=2048, vth=150)
    sink = Sink(shape=(2,), buffer=20)
    src.s_out.connect(dense.s_in)
    dense.a_out.connect(lif.a_in)
    lif.s_out.connect(sink.a_in)
    try:
        lif.run(condition=RunSteps(num_steps=20), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        spikes = sink.data.get()
    finally:
        lif.stop()
    # Neuron 0 (input 100·64 per step, threshold 150·64) spikes; neuron 1 (40) never does.
    assert spikes[0].sum() > 0 and spikes[1].sum() == 0
    assert not lif.runtime._is_running
