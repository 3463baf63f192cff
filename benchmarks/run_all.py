"""``make bench``: run every benchmark group, print the table, write results.json/.md.

Each figure is printed with its ratio to a baseline measured in the same run (timings on
a shared machine are noisy; ratios much less so) and, where issue #8 sets one, its
target as met / missed with the reason. A group that fails is recorded with its error
and the others still run. Usage: ``python benchmarks/run_all.py [--only g1,g2]``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BENCH_DIR, Row, fmt_value, machine_info  # noqa: E402
from lrfdyn.io import write_json, write_text  # noqa: E402

GROUPS = {
    "dendrite": "bench_dendrite",
    "validation": "bench_validation",
    "toolchain": "bench_toolchain",
    "memory": "bench_memory",
    "peers": "bench_peers",
    "scale": "bench_scale",
    "throughput": "bench_throughput",
}


def _status(r: Row) -> str:
    if r.met is True:
        return "met"
    if r.met is False:
        return f"MISSED: {r.reason}" if r.reason else "MISSED"
    return r.reason if r.reason else ""


def table(rows: list[Row]) -> str:
    head = "| group | figure | value, median (min–max) | baseline | ratio | target | status |"
    lines = [head, "|" + "---|" * 7]
    for r in rows:
        base = "—" if r.baseline_name is None else \
            f"{r.baseline_name}: {fmt_value(r.baseline, r.unit)}"
        ratio = "—" if r.ratio is None else f"{r.ratio:.3g} ({r.ratio_label})"
        cells = [r.group, r.name, fmt_value(r.value, r.unit), base, ratio, r.target or "—",
                 _status(r) or "—"]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def _merged(path: Path, groups: dict[str, dict], rows: list[Row]
            ) -> tuple[dict[str, dict], list[Row]]:
    """This run's groups and rows, after the previous file's rows of every other group."""
    if not path.is_file():
        return groups, rows
    import json

    prev = json.loads(path.read_text())
    kept = {g: v for g, v in prev.get("groups", {}).items() if g not in groups}
    old = [Row(**r) for r in prev.get("rows", []) if r["group"] in kept]
    return {**kept, **groups}, old + rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated groups: " + ",".join(GROUPS))
    ap.add_argument("--out", default=str(BENCH_DIR), help="folder for results.json/.md")
    args = ap.parse_args(argv)
    chosen = [g for g in GROUPS if not args.only or g in args.only.split(",")]
    t_start = time.perf_counter()
    info = machine_info()
    rows: list[Row] = []
    groups: dict[str, dict] = {}
    for g in chosen:
        t0 = time.perf_counter()
        print(f"== {g} …", flush=True)
        try:
            mod = importlib.import_module(GROUPS[g])
            g_rows, g_info = mod.run()
            status = "ok"
        except Exception as exc:  # noqa: BLE001  (one failing group must not hide the rest)
            traceback.print_exc()
            g_rows, g_info = [Row(group=g, name=f"{g} benchmark", value=None, unit="",
                                  met=False, reason=f"failed: {type(exc).__name__}: {exc}")], {}
            status = "failed"
        secs = time.perf_counter() - t0
        groups[g] = {"status": status, "seconds": secs, "info": g_info}
        rows += g_rows
        print(table(g_rows), f"\n({g}: {secs:.0f} s)\n", flush=True)
    total = time.perf_counter() - t_start
    info["loadavg_at_end"] = list(__import__("os").getloadavg())
    out = Path(args.out)
    if args.only:  # keep the other groups' last figures (each group records its own run)
        groups, rows = _merged(out / "results.json", groups, rows)
    result = {"machine": info, "total_seconds": total, "groups": groups,
              "rows": [r.to_dict() for r in rows]}
    write_json(out / "results.json", result)
    v = info["versions"]
    md = "\n".join([
        "# lrfdyn benchmarks (issue #8)", "",
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB; "
        f"Python {info['python']}, torch {v['torch']}, numpy {v['numpy']}, "
        f"lava-nc {v['lava-nc']}, nir {v['nir']}, snntorch {v['snntorch']}; "
        f"torch threads pinned to 1 (LRFDYN_BENCH_THREADS). Load average at start "
        f"{info['loadavg_at_start']}, at end {info['loadavg_at_end']}.", "",
        "Every value is the median (min–max) of its repetitions; ratios compare with a "
        "baseline measured in the same run. Total runtime: "
        f"{total:.0f} s.", "", table(rows), ""])
    write_text(out / "results.md", md)
    print(table(rows))
    print(f"\ntotal {total:.0f} s; wrote {out / 'results.json'} and {out / 'results.md'}")
    return 0 if all(s["status"] == "ok" for s in groups.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
