"""Attention variants on MNIST-5k at one fixed small configuration (Issue #4, acceptance table).

Trains every variant with the same budget and prints a Markdown table of test accuracy
(mean ± std over seeds) and writes ``table.json`` / ``table.md`` into ``--out``. Each run
also keeps its own folder (``<variant>_s<seed>/checkpoint.pt`` and ``result.json``), and a
run whose ``result.json`` exists is skipped, so an interrupted table resumes where it
stopped and the table can be rebuilt at any time from what has finished.

After training, each variant's first finished checkpoint is analyzed with
:func:`lrfdyn.train.analysis.analyze_checkpoint` (attention entropy and token-grid distance,
averaged over layers), which adds two columns to the table. ``--no-train`` only rebuilds the
table and the analysis from the runs that have finished.

Runs are ordered seed-major with the main variants first (every variant's seed 0, then the
main variants' further seeds, then the remaining LRF-Dyn token/gate combinations'), so a
run cut short by the time budget still covers every variant once.

Usage::

    .venv/bin/python examples/mnist5k_table.py --epochs 8 --seeds 0 1 2 \\
        --out runs/mnist5k_table8
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from lrfdyn.io import write_json
from lrfdyn.train.trainer import TrainConfig, train

#: The fixed configuration every variant shares (MNIST 28×28 → 7×7 = 49 tokens).
BASE_MODEL: dict[str, Any] = {
    "dim": 64, "depth": 2, "heads": 4, "timesteps": 4, "mlp_ratio": 4.0,
    "stem_strides": [1, 2, 2], "k_dendrites": 8, "lrf_dilations": [3, 5],
}

#: Variant name → attention overrides. The first five are the "main" variants.
VARIANTS: dict[str, dict[str, Any]] = {
    "ssa": {"attention": "ssa"},
    "lrf_ssa": {"attention": "lrf_ssa"},
    "lrf_dyn[v,none]": {"attention": "lrf_dyn", "token": "v", "gate": "none"},
    "statten": {"attention": "statten"},
    "a2os2a": {"attention": "a2os2a"},
    "lrf_dyn[v,q]": {"attention": "lrf_dyn", "token": "v", "gate": "q"},
    "lrf_dyn[kv,none]": {"attention": "lrf_dyn", "token": "kv", "gate": "none"},
    "lrf_dyn[kv,q]": {"attention": "lrf_dyn", "token": "kv", "gate": "q"},
}
MAIN = list(VARIANTS)[:5]


def run_dir(out: Path, variant: str, seed: int) -> Path:
    """Folder of one run; brackets and commas are kept out of file names."""
    safe = variant.replace("[", "-").replace("]", "").replace(",", "-")
    return out / f"{safe}_s{seed}"


def schedule(variants: list[str], seeds: list[int]) -> list[tuple[str, int]]:
    """Seed-major order: every variant once first, then the main variants' further seeds."""
    first = [(v, seeds[0]) for v in variants]
    main = [(v, s) for s in seeds[1:] for v in variants if v in MAIN]
    rest = [(v, s) for s in seeds[1:] for v in variants if v not in MAIN]
    return first + main + rest


def run_one(out: Path, variant: str, seed: int, epochs: int, batch_size: int,
            lr: float) -> dict[str, Any]:
    """Train one (variant, seed) unless its ``result.json`` exists; return the result."""
    folder = run_dir(out, variant, seed)
    result_path = folder / "result.json"
    if result_path.is_file():
        return json.loads(result_path.read_text())
    cfg = TrainConfig(data="mnist5k", arch="spikformer", model={**BASE_MODEL, **VARIANTS[variant]},
                      epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, out=str(folder))
    start = time.perf_counter()
    res = train(cfg, progress=False)
    seconds = time.perf_counter() - start
    result = {"variant": variant, "seed": seed, "epochs": epochs,
              "test_accuracy": res.float_accuracy, "seconds": seconds,
              "history": res.history, "checkpoint": str(res.checkpoint)}
    if cfg.model["attention"] == "lrf_dyn":
        # Only LRF-Dyn exports to NIR, so only it has a Loihi-integer accuracy.
        from lrfdyn.pipeline import checkpoint_to_nir, quantized_accuracy

        result["quantized_accuracy"] = quantized_accuracy(
            checkpoint_to_nir(res.checkpoint), "mnist5k", None, cfg.split_seed)
    write_json(result_path, result)
    return result


def summarize(out: Path, variants: list[str], seeds: list[int]) -> dict[str, Any]:
    """Collect every finished run into per-variant mean ± std (std 0 with one seed)."""
    rows: dict[str, Any] = {}
    for v in variants:
        runs = [json.loads(p.read_text()) for s in seeds
                if (p := run_dir(out, v, s) / "result.json").is_file()]
        if not runs:
            continue
        accs = [r["test_accuracy"] for r in runs]
        rows[v] = {
            "seeds": [r["seed"] for r in runs], "accuracies": accs,
            "mean": statistics.fmean(accs),
            "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "seconds_per_run": statistics.fmean(r["seconds"] for r in runs),
            "epochs": runs[0]["epochs"],
        }
        if all("quantized_accuracy" in r for r in runs):
            q = [r["quantized_accuracy"] for r in runs]
            rows[v]["quantized"] = q
            rows[v]["quantized_gap_max"] = max(abs(a - b) for a, b in zip(accs, q))
    return rows


def locality(out: Path, variant: str, seed: int, samples: int) -> dict[str, Any]:
    """Attention entropy and grid distance of one run's checkpoint, averaged over layers."""
    from lrfdyn.train.analysis import analyze_checkpoint

    folder = run_dir(out, variant, seed)
    res = analyze_checkpoint(folder / "checkpoint.pt", folder / "analysis", samples)
    first = res["layers"][0]
    return {"seed": seed, "entropy": res["mean_entropy"], "distance": res["mean_distance"],
            "uniform_entropy": first["uniform_entropy"],
            "uniform_distance": first["uniform_distance"],
            "per_layer": [(la["entropy"], la["distance"]) for la in res["layers"]]}


def markdown(rows: dict[str, Any]) -> str:
    """The table as Markdown: accuracy in %, mean ± sample std over the finished seeds.

    With the analysis, entropy (nats) and distance (grid steps) of the first seed's
    checkpoint follow, averaged over layers.
    """
    lines = ["| variant | test acc. (%) | Loihi-int acc. (%) | seeds | epochs | s / run "
             "| entropy | distance |",
             "|---|---|---|---|---|---|---|---|"]
    for v, r in rows.items():
        acc = f"{100 * r['mean']:.2f} ± {100 * r['std']:.2f}" if len(r["seeds"]) > 1 \
            else f"{100 * r['mean']:.2f}"
        loc = r.get("locality")
        ent, dist = (f"{loc['entropy']:.2f}", f"{loc['distance']:.2f}") if loc else ("", "")
        q = r.get("quantized")
        qacc = "" if not q else (f"{100 * statistics.fmean(q):.2f} ± {100 * statistics.stdev(q):.2f}"
                                 if len(q) > 1 else f"{100 * q[0]:.2f}")
        lines.append(f"| {v} | {acc} | {qacc} | {len(r['seeds'])} | {r['epochs']} | "
                     f"{r['seconds_per_run']:.0f} | {ent} | {dist} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--out", default="runs/mnist5k_table8")
    p.add_argument("--analysis-samples", type=int, default=64,
                   help="test samples for the attention analysis (0 skips it)")
    p.add_argument("--no-train", action="store_true",
                   help="only rebuild the table (and analysis) from finished runs")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    for variant, seed in [] if a.no_train else schedule(a.variants, a.seeds):
        r = run_one(out, variant, seed, a.epochs, a.batch_size, a.lr)
        print(f"{variant:18s} seed {seed}: {100 * r['test_accuracy']:.2f} % "
              f"({r['seconds']:.0f} s)", flush=True)
        # Rewrite the table after every run, so a cut-short job still leaves one.
        rows = summarize(out, a.variants, a.seeds)
        write_json(out / "table.json", {"model": BASE_MODEL, "data": "mnist5k", "rows": rows})
        (out / "table.md").write_text(markdown(rows) + "\n")
    rows = summarize(out, a.variants, a.seeds)
    if a.analysis_samples > 0:
        for v, r in rows.items():
            r["locality"] = locality(out, v, r["seeds"][0], a.analysis_samples)
    write_json(out / "table.json", {"model": BASE_MODEL, "data": "mnist5k", "rows": rows})
    (out / "table.md").write_text(markdown(rows) + "\n")
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
