"""Issue #8 (3): toolchain latency of the demo MLP and of the small transformer.

* export: checkpoint → NIR graph → ``model.nir`` (``checkpoint_to_nir`` + ``write_nir``);
* lowering: read ``model.nir`` → :func:`lrfdyn.loihi.lower.lower`;
* compile: Lava's compiler on freshly built processes (``build_lava`` + ``compile``,
  no runtime started, so no child processes).

Target: export + lowering < 2 s per model; compile is reported separately. The
baseline of each row is the step it is compared with in the same run (export vs
lowering), so the ratio shows where the time goes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from common import Row, build_small_transformer, digits_test, measure, set_threads, summary
from lrfdyn.export.to_nir import write_nir
from lrfdyn.loihi.build import build_lava
from lrfdyn.loihi.lower import lower
from lrfdyn.pipeline import checkpoint_to_nir
from lrfdyn.sim.simulate import read_graph
from lrfdyn.train.checkpoint import save_checkpoint

TARGET_S = 2.0


def _compile_once(nir_path: Path, x: np.ndarray) -> float:
    import time

    import lrfdyn.loihi.compat  # noqa: F401
    from lava.magma.core.run_configs import Loihi2SimCfg

    net = lower(read_graph(nir_path))
    lava_net = build_lava(net, x)
    t0 = time.perf_counter()
    lava_net.source.compile(Loihi2SimCfg(select_tag="fixed_pt"))
    return time.perf_counter() - t0


def _rows(label: str, ckpt: Path, work: Path, x: np.ndarray, repeats: int) -> list[Row]:
    nir_path = work / f"{label}.nir"

    def export() -> None:
        write_nir(checkpoint_to_nir(ckpt), nir_path)

    def lowering() -> None:
        lower(read_graph(nir_path))

    export()
    t_exp = measure(export, repeats=repeats)
    t_low = measure(lowering, repeats=repeats)
    both = [a + b for a, b in zip(t_exp["samples"], t_low["samples"])]
    total = summary(both)
    met = total["median"] < TARGET_S
    compiles = summary([_compile_once(nir_path, x) for _ in range(repeats)])
    net = lower(read_graph(nir_path))
    size = {"groups": len(net.groups), "synapse_layers": len(net.synapses),
            "neurons": int(sum(g.size for g in net.groups.values())),
            "synapses": int(sum(s.nnz for s in net.synapses)),
            "nir_bytes": nir_path.stat().st_size}
    return [
        Row(group="toolchain", name=f"{label}: export + lowering", value=total, unit="s",
            target=f"< {TARGET_S:g} s", met=met,
            reason="" if met else f"median {total['median']:.2f} s", extra=size),
        Row(group="toolchain", name=f"{label}: export (checkpoint → model.nir)", value=t_exp,
            unit="s", baseline_name="lowering", baseline=t_low,
            ratio=t_exp["median"] / t_low["median"], ratio_label="export / lowering"),
        Row(group="toolchain", name=f"{label}: Lava compile (fixed_pt, no runtime)",
            value=compiles, unit="s", baseline_name="export + lowering", baseline=total,
            ratio=compiles["median"] / total["median"],
            ratio_label="compile / (export + lowering)", target="reported separately"),
    ]


def run(quick: bool = False) -> tuple[list[Row], dict]:
    set_threads()
    from lrfdyn.train.trainer import TrainConfig, train

    repeats = 5
    images, _ = digits_test(1)
    x = images.reshape(1, -1).astype(np.int64)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="lrfdyn-bench-") as tmp:
        work = Path(tmp)
        mlp = train(TrainConfig(data="digits", arch="mlp", epochs=2, out=str(work / "mlp")),
                    progress=False)
        rows += _rows("demo MLP (trained 2 epochs)", mlp.checkpoint, work, x, repeats)
        model = build_small_transformer()
        ckpt = save_checkpoint(work / "transformer.pt", model, "spikformer", data="digits")
        rows += _rows("demo transformer (LRF-Dyn, untrained)", ckpt, work, x, repeats)
    return rows, {"mlp_float_accuracy": mlp.float_accuracy}


if __name__ == "__main__":
    for r in run()[0]:
        print(r.name, r.value["median"], r.ratio)
