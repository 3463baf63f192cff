"""Throughput: Lava samples/s of validation, single-run path vs copies vs workers.

Every figure comes from a fresh interpreter (``python bench_throughput.py child …``), one
at a time, so a run's Lava processes cannot slow another's. Ratios compare paths measured
in this run on the same samples; the machine is shared, so absolute rates are for the
record only.

1. MNIST-5k LRF-Dyn (``examples/lrf_dyn_mnist5k.json``, trained ``TRAIN_EPOCHS`` epoch(s),
   or the checkpoint in ``LRFDYN_BENCH_MNIST_CHECKPOINT``), parallel mode, with k =
   min(auto, ``BENCH_COPIES``) copies per network: the single-run path (one sample per
   Lava run, ``copies=1``, the path before this benchmark) and copies on the same 2·k test
   images, whose reports must be equal field by field (mismatches, per-layer counts,
   accuracies); workers 1 and 2 (copies k in each) on 4·k images, equal to each other.
   Steady samples/s leave out each network's first block (it includes compilation), as
   the single-run figure leaves out its first sample; wall figures include everything.
2. The same model in dendritic mode on ``DENDRITIC_SAMPLES`` images, its stream networks
   checked block by block (``network=False``): Lava seconds (compilation included), one sample per run vs copies.
   Then the one dendritic Lava network (the default of ``simulate --mode dendritic``) on
   ``NETWORK_SAMPLES`` images: one copy, copies auto (all samples side by side) and 2
   workers (copies auto in each); reports must equal the one-copy run's (mismatches by
   process, per-layer counts, accuracies, predictions sample by sample).
3. The demo MLP (digits): lava-dl netx ``hdf5.Network`` on Lava (the file ``--format
   netx`` writes; netx runs all samples back to back in one call) vs lrfdyn (one sample
   per run; copies). Marginal samples/s from two run lengths, so compilation cancels.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import BENCH_DIR, PYTHON, ROOT, Row, summary

MNIST_CONFIG = ROOT / "examples" / "lrf_dyn_mnist5k.json"
TRAIN_EPOCHS = 1
#: Copies per network in this benchmark (auto picks more on the MNIST model; the cap keeps
#: the run within its time on the shared machine).
BENCH_COPIES = 8
DENDRITIC_SAMPLES = 2
#: Images through the one dendritic network (~60 s of Lava per sample alone under load).
NETWORK_SAMPLES = int(os.environ.get("LRFDYN_BENCH_NETWORK_SAMPLES", "4"))
#: Parts to run (comma-separated; default all): parallel, mlp, dendritic, network.
PARTS = os.environ.get("LRFDYN_BENCH_THROUGHPUT_PARTS", "parallel,mlp,dendritic,network")
MLP_SAMPLES = (8, 40)
TARGET = 4.0


def _child(kind: str, args: list[str], timeout: float = 1800) -> dict[str, Any]:
    import subprocess

    proc = subprocess.run([PYTHON, str(BENCH_DIR / "bench_throughput.py"), "child", kind, *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"child {kind} exited {proc.returncode}: " + " | ".join(tail))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _comparable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != "timings"}


# ---------------------------------------------------------------- children


def child_train(out_dir: str) -> dict:
    from common import set_threads
    from lrfdyn.train.trainer import TrainConfig, train

    set_threads()
    cfg = json.loads(MNIST_CONFIG.read_text())
    result = train(TrainConfig(data=cfg["data"], arch=cfg["arch"], model=cfg["model"],
                               epochs=TRAIN_EPOCHS, seed=cfg.get("seed", 0), out=out_dir),
                   progress=False)
    return {"checkpoint": str(result.checkpoint), "float_accuracy": result.float_accuracy}


def _mnist(ckpt: str, n: int):
    import numpy as np

    from lrfdyn.export.from_nir import run_float
    from lrfdyn.pipeline import checkpoint_to_nir, held_out_samples

    graph = checkpoint_to_nir(ckpt)
    images, labels, _ = held_out_samples(graph, None, None, n)
    fp = run_float(graph, images).sum(axis=1).argmax(axis=1)
    return graph, images.reshape(len(images), -1).astype(np.int64), labels, fp


def child_parallel(ckpt: str, how: str, n: str, k: str = "0") -> dict:
    """One path over the first n test images: single | copies | workers1 | workers2, with
    k copies per network (0: auto)."""
    from lrfdyn.loihi.copies import choose_copies
    from lrfdyn.loihi.lower import lower
    from lrfdyn.sim.shard import simulate_sharded
    from lrfdyn.sim.simulate import simulate

    graph, x, y, fp = _mnist(ckpt, int(n))
    net = lower(graph)
    t0 = time.perf_counter()
    copies = int(k) or None
    if how in ("single", "copies"):
        rep = simulate(net, x, y, float_predictions=fp, copies=1 if how == "single" else copies)
        steady = rep.timings["samples_per_s"]
    else:
        rep = simulate_sharded("parallel", net, x, y, float_predictions=fp,
                               workers=int(how[-1]), copies=copies)
        shards = rep.timings["shards"]
        # Shards run at once: the samples each timed, over the longest timed stretch.
        timed = sum(s["samples_per_s"] * s["run_s"] for s in shards)
        steady = timed / max(s["run_s"] for s in shards)
    wall = time.perf_counter() - t0
    return {"report": rep.to_dict(), "steady": steady, "wall_s": wall,
            "copies": (copies or choose_copies(net, len(x))) if how != "single" else 1,
            "neurons": sum(g.size for g in net.groups.values())}


def child_dendritic(ckpt: str, how: str, n: str) -> dict:
    from lrfdyn.sim.dendritic import simulate_dendritic
    from lrfdyn.sim.shard import simulate_sharded

    graph, x, y, fp = _mnist(ckpt, int(n))
    t0 = time.perf_counter()
    # The stream networks checked block by block (network=False), where copies apply; the
    # one dendritic network (the default) runs one sample at a time.
    if how == "workers2":
        rep = simulate_sharded("dendritic", graph, x, y, float_predictions=fp, workers=2,
                               copies=None, options={"network": False})
        lava = max(sum(v for k, v in s.items() if k.endswith(".lava_s"))
                   for s in rep.timings["shards"])
    else:
        rep = simulate_dendritic(graph, x, y, float_predictions=fp, network=False,
                                 copies=1 if how == "single" else None)
        lava = sum(v for k, v in rep.timings.items() if k.endswith(".lava_s"))
    return {"report": rep.to_dict(), "lava_s": lava, "wall_s": time.perf_counter() - t0}


def child_network(ckpt: str, how: str, n: str) -> dict:
    """The one dendritic network: ``single`` (copies 1), ``copies`` (auto), ``workers2``."""
    from lrfdyn.sim.dendritic import simulate_dendritic
    from lrfdyn.sim.shard import simulate_sharded

    graph, x, y, fp = _mnist(ckpt, int(n))
    t0 = time.perf_counter()
    if how == "workers2":
        rep = simulate_sharded("dendritic", graph, x, y, float_predictions=fp, workers=2,
                               copies=None)
        shards = rep.timings["shards"]
        lava = max(s["lava_compile_s"] + s["lava_run_s"] for s in shards)
        copies = [s["copies"] for s in shards]
    else:
        rep = simulate_dendritic(graph, x, y, float_predictions=fp,
                                 copies=1 if how == "single" else None)
        lava = rep.timings["lava_compile_s"] + rep.timings["lava_run_s"]
        copies = [rep.timings["copies"]]
    return {"report": rep.to_dict(), "lava_s": lava, "wall_s": time.perf_counter() - t0,
            "copies": copies}


def _network_rows(ckpt: str) -> tuple[list[Row], dict]:
    n = NETWORK_SAMPLES
    runs = {how: _child("network", [ckpt, how, str(n)], timeout=5400)
            for how in ("single", "copies", "workers2")}
    base = runs["single"]
    rows = []
    for how, r in runs.items():
        same = _comparable(r["report"]) == _comparable(base["report"])
        rate, base_rate = n / r["lava_s"], n / base["lava_s"]
        net = r["report"]["network"]
        rows.append(Row(
            group="throughput", name=f"MNIST-5k dendritic one network: {how} "
            f"(copies {r['copies']}), Lava samples/s (compilation included)",
            value=_one(rate), unit="samples/s",
            baseline_name=None if how == "single" else "one copy, one run",
            baseline=None if how == "single" else _one(base_rate),
            ratio=None if how == "single" else rate / base_rate, ratio_label="× single-run",
            target="" if how == "single" else "report identical",
            met=None if how == "single" else same,
            reason="" if same else "report differs from the single run",
            extra={"mismatches": r["report"]["mismatches"],
                   "lava_accuracy": r["report"]["lava_accuracy"],
                   "predictions": net["lava_predictions"],
                   "predictions_equal_reference": net["predictions_equal"],
                   "wall_s": r["wall_s"], "lava_s": r["lava_s"], "copies": r["copies"],
                   "wall_ratio": base["wall_s"] / r["wall_s"]}))
    return rows, {k: {kk: vv for kk, vv in v.items() if kk != "report"}
                  for k, v in runs.items()}


def child_mlp(out_dir: str) -> dict:
    """The demo MLP through netx's hdf5.Network and through lrfdyn, two run lengths each."""
    import numpy as np

    import lrfdyn.loihi.compat  # noqa: F401
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.dense.process import Dense
    from lava.proc.io.source import RingBuffer as Source

    from lrfdyn.loihi.netx import input_synapses, loader_kwargs, write_netx
    from lrfdyn.loihi.build import input_schedule
    from lrfdyn.loihi.ir import BIAS_SOURCE
    from lrfdyn.loihi.lower import lower
    from lrfdyn.pipeline import checkpoint_to_nir
    from lrfdyn.sim.lava_run import run_lava
    from lrfdyn.train.data import load_dataset
    from lrfdyn.train.trainer import TrainConfig, train

    res = train(TrainConfig(data="digits", epochs=3, out=out_dir), progress=False)
    net = lower(checkpoint_to_nir(res.checkpoint))
    path = write_netx(net, Path(out_dir) / "mlp.h5")
    ds = load_dataset("digits")
    x_all = ds.x_test.reshape(len(ds.x_test), -1).astype(np.int64)

    def netx_run(n: int) -> float:
        from lava.lib.dl.netx.hdf5 import Network

        x = x_all[:n]
        steps = net.steps_per_sample()
        netx = Network(net_config=str(path), **loader_kwargs(net))
        sources = {net.input.name: Source(data=input_schedule(net, x)),
                   BIAS_SOURCE: Source(data=np.ones((1, n * steps), np.int32))}
        for syn in input_synapses(net):  # the graded pixel synapse runs beside netx
            dense = Dense(weights=syn.weights.astype(np.int32), weight_exp=syn.weight_exp,
                          num_message_bits=syn.num_message_bits)
            sources[syn.src].s_out.connect(dense.s_in)
            dense.a_out.connect(netx.layers[0].neuron.a_in)
        t0 = time.perf_counter()
        try:
            netx.run(condition=RunSteps(num_steps=n * steps),
                     run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        finally:
            netx.stop()
        return time.perf_counter() - t0

    def lrfdyn_run(n: int, copies: int | None) -> float:
        t0 = time.perf_counter()
        run_lava(net, x_all[:n], copies=copies)
        return time.perf_counter() - t0

    a, b = MLP_SAMPLES
    out: dict[str, Any] = {}
    for name, fn in {"netx": netx_run, "lrfdyn": lambda n: lrfdyn_run(n, 1),
                     "lrfdyn_copies": lambda n: lrfdyn_run(n, None)}.items():
        t_a, t_b = fn(a), fn(b)
        out[name] = {"t_short": t_a, "t_long": t_b, "rate": (b - a) / max(t_b - t_a, 1e-9)}
    return out




# ---------------------------------------------------------------- rows


def _one(v: float) -> dict[str, Any]:
    return summary([v])


def child_size(ckpt: str) -> dict:
    from lrfdyn.loihi.copies import choose_copies
    from lrfdyn.loihi.lower import lower
    from lrfdyn.pipeline import checkpoint_to_nir

    net = lower(checkpoint_to_nir(ckpt))
    return {"copies": choose_copies(net), "neurons": sum(g.size for g in net.groups.values()),
            "groups": len(net.groups), "synapses": len(net.synapses)}


def _parallel_rows(ckpt: str) -> tuple[list[Row], dict]:
    size = _child("size", [ckpt])
    k = min(size["copies"], BENCH_COPIES)
    n = 2 * k  # two blocks of k copies: the second is timed
    runs = {"single": _child("parallel", [ckpt, "single", str(n)]),
            "copies": _child("parallel", [ckpt, "copies", str(n), str(k)]),
            "workers1": _child("parallel", [ckpt, "workers1", str(2 * n), str(k)]),
            "workers2": _child("parallel", [ckpt, "workers2", str(2 * n), str(k)])}
    same = _comparable(runs["copies"]["report"]) == _comparable(runs["single"]["report"])
    w_same = _comparable(runs["workers1"]["report"]) == _comparable(runs["workers2"]["report"])
    rep = runs["single"]["report"]
    desc = (f"{n} samples: mismatches {rep['mismatches']}, Lava accuracy "
            f"{rep['lava_accuracy']}, reference {rep['reference_accuracy']}")
    b = runs["single"]["steady"]
    rows = [Row(group="throughput", name=f"MNIST-5k parallel: single-run path (copies=1), "
                f"steady samples/s ({n} samples)", value=_one(b), unit="samples/s",
                extra={"check": desc, "network": size})]
    for how in ("copies", "workers1", "workers2"):
        r = runs[how]
        ratio = r["steady"] / b if b else None
        ident = same if how == "copies" else w_same
        best = how == "workers2"
        rows.append(Row(
            group="throughput",
            name=f"MNIST-5k parallel: {how}, {k} copies per network (auto: "
            f"{size['copies']}), steady samples/s ({n if how == 'copies' else 2 * n} samples)",
            value=_one(r["steady"]), unit="samples/s", baseline_name="single-run path",
            baseline=_one(b), ratio=ratio, ratio_label="× single-run",
            target=(f">= {TARGET:g}× single-run; " if best else "") +
            ("report == single run's" if how == "copies" else "workers 1 and 2 reports equal"),
            met=ident and (bool(ratio and ratio >= TARGET) if best else True),
            reason="" if ident else "reports differ",
            extra={"wall_s": r["wall_s"], "mismatches": r["report"]["mismatches"],
                   "lava_accuracy": r["report"]["lava_accuracy"]}))
    w1, w2 = runs["workers1"], runs["workers2"]
    rows.append(Row(group="throughput", name=f"MNIST-5k parallel: 2 workers vs 1 ({2 * n} "
                    "samples), wall samples/s incl. start-up and compilation",
                    value=_one(2 * n / w2["wall_s"]), unit="samples/s",
                    baseline_name="1 worker", baseline=_one(2 * n / w1["wall_s"]),
                    ratio=w1["wall_s"] / w2["wall_s"], ratio_label="× 1 worker",
                    target="reports equal", met=w_same))
    return rows, {"size": size, "copies": k,
                  "runs": {h: {kk: vv for kk, vv in v.items() if kk != "report"}
                           for h, v in runs.items()},
                  "identical": {"copies_vs_single": same, "workers1_vs_2": w_same}}


def _dendritic_rows(ckpt: str) -> tuple[list[Row], dict]:
    runs = {how: _child("dendritic", [ckpt, how, str(DENDRITIC_SAMPLES)])
            for how in ("single", "copies")}
    base = runs["single"]
    rows = []
    for how, r in runs.items():
        same = _comparable(r["report"]) == _comparable(base["report"])
        rate, base_rate = DENDRITIC_SAMPLES / r["lava_s"], DENDRITIC_SAMPLES / base["lava_s"]
        rows.append(Row(
            group="throughput", name=f"MNIST-5k dendritic: {how}, Lava samples/s "
            "(both blocks' stream networks, compilation included)",
            value=_one(rate), unit="samples/s",
            baseline_name=None if how == "single" else "one sample per run",
            baseline=None if how == "single" else _one(base_rate),
            ratio=None if how == "single" else rate / base_rate, ratio_label="× single-run",
            target="" if how == "single" else "report identical",
            met=None if how == "single" else same,
            reason="" if same else "report differs from the single run",
            extra={"mismatches": r["report"]["mismatches"], "wall_s": r["wall_s"]}))
    return rows, {k: {kk: vv for kk, vv in v.items() if kk != "report"}
                  for k, v in runs.items()}


def _mlp_rows(tmp: str) -> tuple[list[Row], dict]:
    r = _child("mlp", [str(Path(tmp) / "mlp")])
    netx = r["netx"]["rate"]
    rows = [Row(group="throughput", name="demo MLP: lava-dl netx hdf5.Network on Lava, "
                "marginal samples/s", value=_one(netx), unit="samples/s")]
    for key, label in (("lrfdyn", "lrfdyn, one sample per run"),
                       ("lrfdyn_copies", "lrfdyn, copies auto")):
        rows.append(Row(group="throughput", name=f"demo MLP: {label}, marginal samples/s",
                        value=_one(r[key]["rate"]), unit="samples/s", baseline_name="netx",
                        baseline=_one(netx), ratio=r[key]["rate"] / netx,
                        ratio_label="× netx"))
    return rows, r


def run(quick: bool = False) -> tuple[list[Row], dict]:
    rows: list[Row] = []
    info: dict[str, Any] = {"samples": {"copies_cap": BENCH_COPIES,
                                        "dendritic": DENDRITIC_SAMPLES, "mlp": MLP_SAMPLES,
                                        "network": NETWORK_SAMPLES}}
    parts = {p.strip() for p in PARTS.split(",")}
    with tempfile.TemporaryDirectory(prefix="lrfdyn-bench-tp-") as tmp:
        ckpt = os.environ.get("LRFDYN_BENCH_MNIST_CHECKPOINT")
        if not ckpt:
            ckpt = _child("train", [str(Path(tmp) / "mnist5k")])["checkpoint"]
        info["checkpoint"] = ckpt
        for name, fn, arg in (("parallel", _parallel_rows, ckpt), ("mlp", _mlp_rows, tmp),
                              ("dendritic", _dendritic_rows, ckpt),
                              ("network", _network_rows, ckpt)):
            if name not in parts:
                continue
            t0 = time.perf_counter()
            try:
                r, i = fn(arg)
            except Exception as exc:  # noqa: BLE001  (one failing part must not hide the rest)
                r, i = [Row(group="throughput", name=f"{name} part", value=None, unit="",
                            met=False, reason=f"failed: {type(exc).__name__}: {exc}")], {}
            rows += r
            info[name] = {**i, "seconds": time.perf_counter() - t0}
    return rows, info


CHILDREN = {"train": child_train, "size": child_size, "parallel": child_parallel,
            "dendritic": child_dendritic, "network": child_network, "mlp": child_mlp}


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "child":
        sys.path.insert(0, str(BENCH_DIR))
        print(json.dumps(CHILDREN[sys.argv[2]](*sys.argv[3:]), default=float))
    else:
        from run_all import table

        got, _ = run()
        print(table(got))
