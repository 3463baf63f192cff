"""``make mutation``: cosmic-ray's mutants of the core modules, each against a fast,
targeted test selection; outside CI.

Cosmic-ray writes each mutant into the module file itself, so the run mutates a private
copy of the tree (``runs/mutation/tree``) that imports ``lrfdyn`` from itself, ahead of
the editable install: a killed run never leaves a mutated module in the working tree.

For each module it builds cosmic-ray's work list (a reduced operator set: one swap per
arithmetic operator, boundary swaps of comparisons, numbers, booleans, and/or, unary
signs, break/continue, zero-iteration loops), checks that the selection passes on the
unmutated copy, then runs a seeded random sample of the mutants within a time budget,
shared between modules. Results go to ``runs/mutation/<module>.sqlite`` (``cr-report``
reads them) and a summary to ``runs/mutation/summary.json`` and ``summary.md``.

    python tests/mutation_run.py [--minutes 45] [--per-module N] [--only lower,report]
                                 [--selection unit|broad] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: module -> the tests that should kill its mutants (no training, little Lava).
TARGETS: dict[str, list[str]] = {
    "loihi/lower.py": [
        "tests/test_mutants.py",
        "tests/loihi/test_against_float.py::test_mlp_weights_are_the_float_weights_in_threshold_units[False]",
        "tests/loihi/test_layers.py",
        "tests/sim/test_simulate.py::test_synops_equal_a_hand_count",
    ],
    "loihi/ir.py": [
        "tests/test_mutants.py",
        "tests/loihi/test_against_float.py::test_mlp_weights_are_the_float_weights_in_threshold_units[False]",
        "tests/loihi/test_layers.py",
        "tests/sim/test_simulate.py::test_synops_equal_a_hand_count",
    ],
    "loihi/wiring.py": [
        "tests/test_mutants.py",
        "tests/loihi/test_against_float.py::test_mlp_weights_are_the_float_weights_in_threshold_units[False]",
        "tests/loihi/test_layers.py",
        "tests/sim/test_simulate.py::test_synops_equal_a_hand_count",
    ],
    "loihi/quantize.py": [
        "tests/test_mutants.py",
        "tests/loihi/test_against_float.py::test_mlp_weights_are_the_float_weights_in_threshold_units[False]",
        "tests/loihi/test_layers.py",
        "tests/sim/test_simulate.py::test_synops_equal_a_hand_count",
    ],
    "loihi/schedule.py": [
        "tests/test_mutants.py",
        "tests/loihi/test_against_float.py::test_mlp_weights_are_the_float_weights_in_threshold_units[False]",
        "tests/loihi/test_layers.py",
        "tests/sim/test_simulate.py::test_synops_equal_a_hand_count",
    ],
    "loihi/neurons.py": [
        "tests/test_mutants.py::test_norse_cuba_lif_ignores_w_in_and_nir_applies_it",
        "tests/sim/test_nir_sim.py",
        "tests/loihi/test_against_float.py::test_mlp_weights_are_the_float_weights_in_threshold_units[False]",
    ],
    "loihi/build.py": [
        "tests/test_mutants.py",
        "tests/sim/test_simulate.py::test_shortcut_delay_and_bias_are_spike_exact",
        "tests/sim/test_simulate.py::test_reset_between_samples_equals_a_fresh_network",
        "tests/sim/test_simulate.py::test_networks_that_cannot_drain_are_reset_and_stay_exact",
    ],
    "sim/reference.py": [
        "tests/test_mutants.py",
        "tests/loihi/test_layers.py",
        "tests/sim/test_simulate.py::test_synops_equal_a_hand_count",
        "tests/sim/test_simulate.py::test_shortcut_delay_and_bias_are_spike_exact",
    ],
    "sim/report.py": [
        "tests/test_mutants.py",
        "tests/sim/test_simulate.py::test_synops_equal_a_hand_count",
        "tests/sim/test_simulate.py::test_a_real_disagreement_is_named_by_layer_sample_step_neuron",
        "tests/sim/test_profile.py::test_synops_macs_and_memory_equal_a_hand_count",
    ],
    "sim/streams.py": [
        "tests/sim/test_dendritic.py",
        "tests/sim/test_dendritic_network.py::test_reference_matches_the_hybrid_reference",
    ],
    "sim/dendritic_report.py": [
        "tests/sim/test_shard.py",
        "tests/sim/test_dendritic.py",
    ],
    "sim/dendritic_network.py": [
        "tests/sim/test_shard.py",
        "tests/sim/test_dendritic_network.py",
    ],
    "sim/dendritic.py": [
        "tests/sim/test_shard.py",
        "tests/sim/test_dendritic.py",
    ],
    "sim/memory_closed_form.py": [
        "tests/sim/test_memory.py",
    ],
    "sim/memory_measured.py": [
        "tests/sim/test_memory.py",
    ],
    "sim/memory.py": [
        "tests/sim/test_memory.py",
    ],
}

#: module -> its fast, Lava-free unit tests (the default ``--selection unit``): each
#: mutant runs in seconds. ``--selection broad`` uses :data:`TARGETS` after them.
UNITS: dict[str, list[str]] = {
    "loihi/lower.py": ["tests/loihi/test_lower_units.py", "tests/test_mutants.py"],
    "loihi/ir.py": ["tests/loihi/test_lower_units.py", "tests/test_mutants.py"],
    "loihi/wiring.py": ["tests/loihi/test_lower_units.py", "tests/test_mutants.py"],
    "loihi/quantize.py": ["tests/loihi/test_lower_units.py", "tests/test_mutants.py"],
    "loihi/schedule.py": ["tests/loihi/test_lower_units.py", "tests/test_mutants.py"],
    "loihi/neurons.py": ["tests/loihi/test_neurons_units.py"],
    "loihi/build.py": ["tests/loihi/test_build_units.py"],
    "sim/reference.py": ["tests/sim/test_reference_units.py", "tests/test_mutants.py"],
    "sim/report.py": ["tests/sim/test_report_units.py", "tests/test_mutants.py"],
    "sim/streams.py": [
        "tests/sim/test_dendritic.py::test_z_follows_the_float_model",
        "tests/sim/test_dendritic.py::test_chained_and_batched_streams_agree_on_every_token",
        "tests/sim/test_dendritic.py::test_reference_input_hook_reproduces_the_synapses",
        "tests/sim/test_dendritic.py::test_hybrid_run_records_the_streams",
        "tests/sim/test_dendritic.py::test_graded_overflow_is_caught_before_lava",
    ],
    "sim/dendritic_report.py": [
        "tests/sim/test_shard.py::test_merging_dendritic_shards_gives_the_single_report",
        "tests/sim/test_shard.py::test_merging_one_network_shards_gives_the_single_report",
    ],
    "sim/dendritic_network.py": [
        "tests/sim/test_shard.py::test_merging_one_network_shards_gives_the_single_report",
        "tests/sim/test_dendritic_network.py::test_reference_matches_the_hybrid_reference",
    ],
    "sim/dendritic.py": [
        "tests/sim/test_shard.py::test_merging_dendritic_shards_gives_the_single_report",
        "tests/sim/test_dendritic.py::test_graph_without_dendrite_is_refused",
    ],
    "sim/memory_closed_form.py": [
        "tests/sim/test_memory.py::test_paper_scale_table",
        "tests/sim/test_memory.py::test_scale_is_read_from_the_graph",
    ],
    "sim/memory_measured.py": [
        "tests/sim/test_memory.py::test_model_equals_lowered_counts",
        "tests/sim/test_memory.py::test_model_equals_lowered_counts_at_medium_scale",
    ],
    "sim/memory.py": [
        "tests/sim/test_memory.py::test_profile_memory_cli",
    ],
}


def selection(module: str, kind: str) -> list[str]:
    if kind == "unit":
        return UNITS[module]
    return [*UNITS[module], *(t for t in TARGETS[module] if t not in UNITS[module])]


def _digests() -> dict[str, str]:
    """sha256 of the working tree's mutated modules: proof that the run left them alone."""
    import hashlib

    return {m: hashlib.sha256((ROOT / m).read_bytes()).hexdigest() for m in TARGETS}


#: Operators kept (regexes on cosmic-ray's names); the rest multiply the mutants of one
#: site without testing anything new.
KEEP = [
    r"core/ReplaceBinaryOperator_(Add_Sub|Sub_Add|Mul_Div|Div_Mul|FloorDiv_Mul|Pow_Mul"
    r"|LShift_RShift|RShift_LShift|BitAnd_BitOr|BitOr_BitAnd|Mod_FloorDiv)$",
    r"core/ReplaceComparisonOperator_(Lt_LtE|LtE_Lt|Gt_GtE|GtE_Gt|Eq_NotEq|NotEq_Eq"
    r"|Is_IsNot|IsNot_Is)$",
    r"core/ReplaceUnaryOperator_(USub_UAdd|Delete_Not)$",
    r"core/(NumberReplacer|ReplaceTrueWithFalse|ReplaceFalseWithTrue|ReplaceAndWithOr"
    r"|ReplaceOrWithAnd|ReplaceBreakWithContinue|ReplaceContinueWithBreak|ZeroIterationForLoop"
    r"|AddNot)$",
]


def _copy_tree(work: Path) -> Path:
    """A private copy of the sources and tests whose ``lrfdyn`` package imports from it.

    pytest runs in the copy, whose folder comes first on ``sys.path``; links inside its
    ``lrfdyn/`` to the subpackage folders (the package-dir mapping) make every
    ``lrfdyn.*`` import resolve in the copy, ahead of the editable install's finder.
    """
    tree = work / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    ignore = shutil.ignore_patterns(".venv", "runs", ".git", "__pycache__", "*.egg-info",
                                    ".pytest_cache")
    shutil.copytree(ROOT, tree, ignore=ignore, symlinks=True)
    for sub in ("train", "export", "loihi", "sim"):
        (tree / "lrfdyn" / sub).symlink_to(tree / sub)
    check = subprocess.run(
        [sys.executable, "-c", "import lrfdyn.loihi.lower as m, lrfdyn.sim.report as r; "
         "print(m.__file__); print(r.__file__)"], cwd=tree, capture_output=True, text=True)
    files = check.stdout.split()
    if check.returncode or not all(f.startswith(str(tree)) for f in files) or len(files) != 2:
        raise SystemExit(f"the copy does not import from itself: {check.stdout}{check.stderr}")
    return tree


def _command(tests: list[str]) -> str:
    return (f"{sys.executable} -m pytest -x -q -p no:cacheprovider "
            f"-m 'not slow' {' '.join(tests)}")


def annotation_spans(source: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(line, column) start and end of every annotation in ``source``.

    Under ``from __future__ import annotations`` (every core module) an annotation is a
    string that nothing evaluates, so a mutant inside one (``int | None`` to
    ``int & None``) is equivalent by construction; such mutants are left out and counted.
    Columns are characters, as cosmic-ray's parser counts them, not ast's UTF-8 bytes.
    """
    import ast

    lines = source.splitlines()

    def char_col(line: int, byte_col: int) -> int:
        return len(lines[line - 1].encode()[:byte_col].decode())

    spans = []
    for node in ast.walk(ast.parse(source)):
        notes = []
        if isinstance(node, ast.arg) and node.annotation is not None:
            notes.append(node.annotation)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns:
            notes.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            notes.append(node.annotation)
        for a in notes:
            spans.append(((a.lineno, char_col(a.lineno, a.col_offset)),
                          (a.end_lineno, char_col(a.end_lineno, a.end_col_offset))))
    return spans


def _work_items(module: str) -> tuple[list, int]:
    """cosmic-ray's mutants of ``module`` under :data:`KEEP`, and how many of them sat in
    annotations (left out, see :func:`annotation_spans`)."""
    import re

    from cosmic_ray.commands.init import _all_work_items

    keep = re.compile("|".join(KEEP))
    source = Path(module).read_text()
    postponed = "from __future__ import annotations" in source  # else they run at import
    spans = annotation_spans(source) if postponed else []
    items = [w for w in _all_work_items([Path(module)], {})
             if keep.match(w.mutations[0].operator_name)]
    code = [w for w in items
            if not any(a <= tuple(w.mutations[0].start_pos) < b for a, b in spans)]
    return code, len(items) - len(code)


def run(args: argparse.Namespace) -> dict:
    from cosmic_ray.mutating import mutate_and_test
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome

    work = Path(args.out).resolve()
    work.mkdir(parents=True, exist_ok=True)
    before = _digests()
    tree = _copy_tree(work)
    os.chdir(tree)
    for m in TARGETS:  # cosmic-ray writes to the path relative to the cwd: the copy
        if not (tree / m).resolve().is_relative_to(tree) or (tree / m).resolve() == ROOT / m:
            raise SystemExit(f"{m} would be mutated outside the copy {tree}")
    modules = [m for m in TARGETS if not args.only or Path(m).stem in args.only.split(",")]
    deadline = time.monotonic() + 60 * args.minutes
    rng = random.Random(args.seed)
    plans = {}
    in_annotations = {}
    for m in modules:
        items, in_annotations[m] = _work_items(m)
        sample = rng.sample(items, min(args.per_module, len(items))) if args.per_module \
            else items
        plans[m] = (items, sample)
        print(f"{m}: {len(items)} mutants ({in_annotations[m]} more in annotations, left "
              f"out), sampling {len(sample)}", flush=True)
    summary: dict = {"minutes": args.minutes, "seed": args.seed, "modules": {}}
    for i, m in enumerate(modules):
        items, sample = plans[m]
        tests = selection(m, args.selection)
        cmd = _command(tests)
        t0 = time.monotonic()
        for _ in range(2):  # once more: on a shared machine a run can be killed for memory
            base = subprocess.run(cmd, shell=True, capture_output=True, text=True)
            if base.returncode == 0:
                break
        baseline_s = time.monotonic() - t0
        if base.returncode != 0:  # a broken selection scores nothing: say so, go on
            print(f"{m}: the test selection fails unmutated (rc {base.returncode}); skipped:\n"
                  f"{(base.stdout + base.stderr)[-3000:]}", flush=True)
            summary["modules"][m] = {"mutants_total": len(items), "sampled": len(sample),
                                     "baseline_failed": True, "score": None,
                                     "killed": 0, "survived": 0, "survivors": [],
                                     "tests": tests}
            continue
        # Each remaining module gets an equal share of the time left.
        share = (deadline - time.monotonic()) / (len(modules) - i)
        stop = time.monotonic() + share
        db_path = work / f"{Path(m).stem}.sqlite"
        db_path.unlink(missing_ok=True)
        counts = {"killed": 0, "survived": 0, "incompetent": 0, "no_test": 0, "not_run": 0}
        survivors = []
        with use_db(str(db_path), WorkDB.Mode.create) as db:
            db.add_work_items(sample)
            for item in sample:
                if time.monotonic() > stop:
                    counts["not_run"] += 1
                    continue
                res = mutate_and_test(item.mutations, cmd, timeout=max(30.0, 4 * baseline_s))
                db.set_result(item.job_id, res)
                if res.worker_outcome == WorkerOutcome.NO_TEST:
                    counts["no_test"] += 1
                elif res.test_outcome == TestOutcome.KILLED:
                    counts["killed"] += 1
                elif res.test_outcome == TestOutcome.SURVIVED:
                    counts["survived"] += 1
                    mu = item.mutations[0]
                    survivors.append({"line": mu.start_pos[0], "operator": mu.operator_name,
                                      "in": mu.definition_name,
                                      "diff": "\n".join(l for l in (res.diff or "").splitlines()
                                                        if l[:1] in "+-" and l[:3] not in
                                                        ("+++", "---"))})
                else:
                    counts["incompetent"] += 1
                print(f"  {m}:{item.mutations[0].start_pos[0]} "
                      f"{item.mutations[0].operator_name}: "
                      f"{res.test_outcome or res.worker_outcome}", flush=True)
        ran = counts["killed"] + counts["survived"]
        summary["modules"][m] = {
            "mutants_total": len(items), "in_annotations": in_annotations[m],
            "sampled": len(sample), **counts,
            "score": round(counts["killed"] / ran, 4) if ran else None,
            "baseline_s": round(baseline_s, 1), "tests": tests, "survivors": survivors}
        print(f"{m}: {counts} score {summary['modules'][m]['score']}", flush=True)
    summary["working_tree_unchanged"] = _digests() == before
    (work / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (work / "summary.md").write_text(_markdown(summary))
    return summary


def _markdown(summary: dict) -> str:
    lines = ["| module | mutants | in annotations (left out) | sampled | run | killed "
             "| survived | score |",
             "|---|---|---|---|---|---|---|---|"]
    for m, r in summary["modules"].items():
        ran = r["killed"] + r["survived"]
        score = "n/a" if r["score"] is None else f"{100 * r['score']:.1f} %"
        lines.append(f"| {m} | {r['mutants_total']} | {r.get('in_annotations', 'n/a')} "
                     f"| {r['sampled']} | {ran} | {r['killed']} | {r['survived']} | {score} |")
    if "working_tree_unchanged" in summary:
        lines.append(f"\nseed {summary['seed']}; working-tree modules unchanged by the run "
                     f"(sha256 before/after): {summary['working_tree_unchanged']}")
    for m, r in summary["modules"].items():
        lines.append(f"- tests for {m}: {' '.join(r['tests'])}")
    for m, r in summary["modules"].items():
        for s in r["survivors"]:
            lines.append(f"- survivor {m}:{s['line']} ({s['in']}) {s['operator']}: "
                         f"`{s['diff'].strip()}`")
    return "\n".join(lines) + "\n"


def merge(folders: list[str], out: str) -> dict:
    """One summary from the summary.json of several runs (a later run of a module wins)."""
    summary: dict = {"merged_from": [], "modules": {}, "working_tree_unchanged": True}
    for f in folders:
        part = json.loads((Path(f) / "summary.json").read_text())
        summary["merged_from"].append({"folder": str(f), "seed": part.get("seed"),
                                       "minutes": part.get("minutes"),
                                       "modules": list(part["modules"])})
        summary["modules"].update(part["modules"])
        summary["working_tree_unchanged"] &= bool(part.get("working_tree_unchanged", False))
    summary["seed"] = ",".join(str(m["seed"]) for m in summary["merged_from"])
    summary["modules"] = {m: summary["modules"][m] for m in TARGETS if m in summary["modules"]}
    work = Path(out)
    work.mkdir(parents=True, exist_ok=True)
    (work / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (work / "summary.md").write_text(_markdown(summary))
    return summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=45.0, help="time box for all modules")
    p.add_argument("--per-module", type=int, default=0,
                   help="random sample of mutants per module (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", help="comma-separated module stems, e.g. lower,report")
    p.add_argument("--out", default=str(ROOT / "runs" / "mutation"))
    p.add_argument("--selection", choices=("unit", "broad"), default="unit",
                   help="unit: each module's fast unit tests; broad: plus the integration "
                   "tests (Lava, minutes per mutant)")
    p.add_argument("--merge", nargs="+", metavar="RUN",
                   help="only merge the summary.json of these run folders into --out")
    args = p.parse_args()
    summary = merge(args.merge, args.out) if args.merge else run(args)
    print(_markdown(summary))


if __name__ == "__main__":
    main()
