"""The measurements of :mod:`bench_scale`, each run in a fresh, capped interpreter.

``python benchmarks/scale_children.py KIND ARGS…`` runs :data:`CHILDREN` ``[KIND]`` and
prints its result as one JSON line; :func:`bench_scale._child` starts it under an
address-space cap and reads that line. One measurement per interpreter, so that the peak
RSS a child reports (``VmHWM``, imports included) is its own.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from common import BENCH_DIR, ROOT

MNIST_CONFIG = ROOT / "examples" / "lrf_dyn_mnist5k.json"
CIFAR_CHECK = ROOT / "examples" / "cifar_scale_check.py"

TRAIN_EPOCHS = 1
REF_SAMPLES = 24
LAVA_SAMPLES = 4  # the first compiles; 3 timed samples each
IMAGENET_REF_SAMPLES = 2

#: The random-init models of figure 1: the MNIST-5k model at two widths and inputs.
SMALL_MODELS = {
    64: dict(dim=64, img_size=28, in_channels=1),
    128: dict(dim=128, img_size=32, in_channels=3),
}


def _jsonable(v: Any) -> Any:
    import numpy as np

    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


def _model_cfg(dim: int) -> dict[str, Any]:
    cfg = json.loads(MNIST_CONFIG.read_text())["model"]
    return {**cfg, **SMALL_MODELS[dim], "num_classes": 10}


def _net_stats(net, params: int) -> dict[str, Any]:
    from collections import Counter

    stored = int(sum(s.stored_weights for s in net.synapses))
    return {"stored_weights": stored, "parameters": params, "stored_per_param": stored / params,
            "synapses": int(sum(s.nnz for s in net.synapses)), "synapse_layers":
            len(net.synapses), "layer_kinds": dict(Counter(s.kind for s in net.synapses)),
            "groups": len(net.groups), "group_kinds": dict(Counter(g.kind for g in
                                                                 net.groups.values())),
            "neurons": int(sum(g.size for g in net.groups.values())), "latency": net.latency}


def _lower_child(source: str, shared: bool, nir_out: str | None = None) -> tuple[dict, Any]:
    """Export + lower ``source`` (``d64``/``d128`` random-init, or a checkpoint path)."""
    from common import peak_rss_mib, rss_mib, set_threads
    from lrfdyn.export.to_nir import model_to_nir
    from lrfdyn.loihi.lower import lower
    from lrfdyn.pipeline import checkpoint_to_nir

    set_threads()
    base = rss_mib()
    if source.startswith("d") and source[1:].isdigit():
        import torch

        from lrfdyn.train.models import build_model

        cfg = _model_cfg(int(source[1:]))
        torch.manual_seed(0)
        model = build_model("spikformer", cfg).eval()
        params = sum(p.numel() for p in model.parameters())
        shape = (cfg["in_channels"], cfg["img_size"], cfg["img_size"])
        t0 = time.perf_counter()
        graph = model_to_nir(model, shape, model.cfg.timesteps)
        net = lower(graph, shared=shared)
        secs = time.perf_counter() - t0
        peak = peak_rss_mib()
        export_from = "model in memory (model_to_nir)"
    else:
        t0 = time.perf_counter()
        graph = checkpoint_to_nir(source)
        net = lower(graph, shared=shared)
        secs = time.perf_counter() - t0
        export_from = "checkpoint (checkpoint_to_nir: load + build + export)"
        from lrfdyn.train.checkpoint import load_checkpoint

        peak = peak_rss_mib()  # before the parameter count below builds a second model
        params = sum(p.numel() for p in load_checkpoint(source).build().parameters())
    out = {"seconds": secs, "peak_rss_mib": peak, "rss_after_imports_mib": base,
           "shared": shared, "export_from": export_from, **_net_stats(net, params)}
    if nir_out:
        from lrfdyn.export.to_nir import write_nir

        write_nir(graph, nir_out)
    return out, net


def child_lower(source: str, shared: str) -> dict:
    return _lower_child(source, shared == "1")[0]


def child_imagenet(ckpt: str, nir_out: str) -> dict:
    """Export + lower 8-512, map it onto cores, run the reference on 2 random images."""
    import numpy as np

    from common import peak_rss_mib, reset_peak_rss, rss_mib
    from lrfdyn.loihi.resources import map_to_cores
    from lrfdyn.sim.reference import readout, run_reference

    out, net = _lower_child(ckpt, True, nir_out)
    t0 = time.perf_counter()
    cores = map_to_cores(net)
    out["map_to_cores_s"] = time.perf_counter() - t0
    out["cores"], out["chips"] = int(cores.cores), int(cores.chips)
    m = cores.to_dict()
    out["mapping"] = {k: m[k] for k in ("cores", "chips", "neurons", "synapses", "weights",
                                        "fits_one_chip", "conv_storage") if k in m}
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (IMAGENET_REF_SAMPLES, net.input.size), dtype=np.int64)
    steps = net.input.timesteps
    out["ref_rss_before_mib"] = rss_mib()
    out["peak_reset"] = reset_peak_rss()
    t0 = time.perf_counter()
    ref = run_reference(net, x, steps, record=[net.output], batch_size=IMAGENET_REF_SAMPLES)
    out["ref_s"] = time.perf_counter() - t0
    out["ref_peak_rss_mib"] = peak_rss_mib()
    out["ref_steps"] = steps
    out["ref_output_spikes"] = int(ref[net.output].sum())
    out["ref_predictions"] = readout(ref[net.output], steps).tolist()
    return out


def child_train(out_dir: str) -> dict:
    """Train the MNIST-5k LRF-Dyn model briefly (so that its layers spike)."""
    from common import set_threads
    from lrfdyn.train.trainer import TrainConfig, train

    set_threads()
    cfg = json.loads(MNIST_CONFIG.read_text())
    t0 = time.perf_counter()
    result = train(TrainConfig(data=cfg["data"], arch=cfg["arch"], model=cfg["model"],
                               epochs=TRAIN_EPOCHS, seed=cfg.get("seed", 0), out=out_dir),
                   progress=False)
    return {"checkpoint": str(result.checkpoint), "float_accuracy": result.float_accuracy,
            "seconds": time.perf_counter() - t0}


def _mnist_samples(graph, n: int):
    from lrfdyn.train.data import load_dataset

    ds = load_dataset(str(graph.metadata.get("dataset", "mnist5k")),
                      seed=int(graph.metadata.get("split_seed", 0)))
    return ds.x_test[:n], ds.y_test[:n]


def child_mnist_ref(ckpt: str) -> dict:
    """New vs baseline integer reference on the same test samples, with accuracies."""
    import numpy as np

    import baseline_reference as base_ref
    from common import measure_interleaved, set_threads
    from lrfdyn.export.from_nir import run_float
    from lrfdyn.loihi.lower import lower
    from lrfdyn.pipeline import checkpoint_to_nir
    from lrfdyn.sim.reference import readout, run_reference

    set_threads()
    graph = checkpoint_to_nir(ckpt)
    new, old = lower(graph), lower(graph, shared=False)
    images, labels = _mnist_samples(graph, REF_SAMPLES)
    x = images.reshape(len(images), -1).astype(np.int64)
    s_new, s_old = new.steps_per_sample(), old.steps_per_sample()
    res: dict[str, Any] = {}

    def run_new() -> None:
        # As `simulate` runs it: each group only over the steps Lava records of it.
        res["new"] = run_reference(new, x, s_new, lava_window=True)

    def run_old() -> None:
        res["old"] = base_ref.run_reference(old, x, s_old)

    t = measure_interleaved({"new": run_new, "old": run_old}, repeats=3, warmup=0)
    t_in = new.input.timesteps
    pred_new = readout(res["new"][new.output], t_in)
    pred_old = readout(res["old"][old.output], t_in)
    float_pred = run_float(graph, images).sum(axis=1).argmax(axis=1)
    n = len(x)
    per = {k: {**v, "median": v["median"] / n, "min": v["min"] / n, "max": v["max"] / n,
               "samples": [s / n for s in v["samples"]]} for k, v in t.items()}
    rates = {g: float(s[:, :t_in].mean()) for g, s in res["new"].items()
             if new.groups[g].spiking}
    return {
        "per_sample": per, "samples": n, "steps_new": s_new, "steps_old": s_old,
        "acc_new": float((pred_new == labels).mean()),
        "acc_old": float((pred_old == labels).mean()),
        "acc_float": float((float_pred == labels).mean()),
        "predictions_agree": float((pred_new == pred_old).mean()),
        "silent_groups_new": [g for g, r in rates.items() if r == 0],
        "firing_rates_new": rates,
        "stats_new": _net_stats(new, 1), "stats_old": _net_stats(old, 1),
    }


def child_mnist_lava(ckpt: str, shared: str, copies: str = "1") -> dict:
    import numpy as np

    from lrfdyn.loihi.lower import lower
    from lrfdyn.pipeline import checkpoint_to_nir
    from lrfdyn.sim.simulate import simulate

    graph = checkpoint_to_nir(ckpt)
    net = lower(graph, shared=shared == "1")
    k = int(copies)  # k copies side by side: the first block of k compiles, the rest timed
    images, labels = _mnist_samples(graph, LAVA_SAMPLES * k)
    t0 = time.perf_counter()
    rep = simulate(net, images.reshape(len(images), -1).astype(np.int64), labels, copies=k)
    return {"wall_s": time.perf_counter() - t0, "mismatches": int(rep.mismatches),
            "timings": rep.timings, "lava_accuracy": rep.lava_accuracy,
            "reference_accuracy": rep.reference_accuracy,
            "predictions_equal": rep.predictions_equal, "samples": rep.samples,
            "first_mismatch": None if rep.first_mismatch is None else str(rep.first_mismatch),
            "groups": len(net.groups), "synapse_layers": len(net.synapses)}


def child_cifar_check(samples: str) -> dict:
    import importlib.util

    spec = importlib.util.spec_from_file_location("cifar_scale_check", CIFAR_CHECK)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    t0 = time.perf_counter()
    out = mod.run(int(samples))
    out["wall_s"] = time.perf_counter() - t0
    return out


CHILDREN = {"lower": child_lower, "imagenet": child_imagenet, "train": child_train,
            "mnist_ref": child_mnist_ref, "mnist_lava": child_mnist_lava,
            "cifar_check": child_cifar_check}


if __name__ == "__main__":
    sys.path.insert(0, str(BENCH_DIR))
    print(json.dumps(_jsonable(CHILDREN[sys.argv[1]](*sys.argv[2:]))))
