"""Sharded validation (sim/shard.py): worker processes and Ray give one run's report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lrfdyn.errors import LavaRunError
from lrfdyn.sim.shard import ShardTask, merge_reports, run_shards, shard_ranges

SAMPLES = 6


def _comparable(report) -> dict:
    d = report.to_dict()
    d.pop("timings")
    return d


@pytest.fixture(scope="module")
def single(digits_run: Path):
    """The single-run report: one process, one sample at a time."""
    from lrfdyn.pipeline import run_simulation

    return run_simulation(digits_run / "model.nir", samples=SAMPLES, progress=False, copies=1)


def test_shard_ranges_cover_every_sample_once() -> None:
    assert shard_ranges(7, 3) == [(0, 2), (2, 5), (5, 7)]
    assert shard_ranges(2, 4) == [(0, 1), (1, 2)]
    assert [b - a for a, b in shard_ranges(1000, 8)] == [125] * 8


def test_merging_in_process_shards_gives_the_single_report(digits_run, single) -> None:
    """Shards of 1, 2 and 3 samples, merged: every field equal, mismatch counts included."""
    from lrfdyn.export.from_nir import run_float
    from lrfdyn.loihi.lower import lower
    from lrfdyn.pipeline import held_out_samples
    from lrfdyn.sim.simulate import read_graph, simulate

    graph = read_graph(digits_run / "model.nir")
    net = lower(graph)
    images, labels, _ = held_out_samples(graph, None, None, SAMPLES)
    x = images.reshape(len(images), -1).astype(np.int64)
    fp = run_float(graph, images).sum(axis=1).argmax(axis=1)
    parts = [(0, 1), (1, 3), (3, 6)]
    reports = [simulate(net, x[a:b], labels[a:b], float_predictions=fp[a:b], use_lava=False)
               for a, b in parts]
    merged = merge_reports(reports, [a for a, _ in parts])
    whole = simulate(net, x, labels, float_predictions=fp, use_lava=False)
    assert _comparable(merged) == _comparable(whole)
    assert merged.layers[0].spikes > 0


def test_workers_report_equals_the_single_run(digits_run, single, tmp_path) -> None:
    """`simulate --workers 2 --copies auto` through the CLI: the report one process writes
    with one sample at a time, field by field."""
    from lrfdyn.cli import main

    out = tmp_path / "report.json"
    rc = main(["simulate", str(digits_run / "model.nir"), "--samples", str(SAMPLES),
               "--workers", "2", "--copies", "auto", "--report", str(out), "--json"])
    assert rc == 0
    got = json.loads(out.read_text())
    timings = got.pop("timings")
    assert got == json.loads(json.dumps(_comparable(single)))
    assert [s["start"] for s in timings["shards"]] == [0, 3] and timings["workers"] == 2
    assert single.mismatches == 0 and single.lava_accuracy is not None


def test_a_run_over_the_memory_budget_runs_as_shards_that_fit_with_one_runs_report(
        digits_run, single, tmp_path) -> None:
    """A run records every group of every sample it holds; over the budget it is cut into
    the fewest shards that fit, one after another, and the report is one run's."""
    from lrfdyn.cli import main
    from lrfdyn.errors import ResourceError
    from lrfdyn.loihi.lower import lower
    from lrfdyn.sim.budget import estimate, fitting_shards
    from lrfdyn.sim.simulate import read_graph

    net = lower(read_graph(digits_run / "model.nir"))
    two = estimate(net, 2).total_bytes
    assert estimate(net, 3).total_bytes > two  # so a budget of `two` needs 3 shards of 2
    assert fitting_shards(net, SAMPLES, budget=estimate(net, SAMPLES).total_bytes) == 1
    assert fitting_shards(net, SAMPLES, budget=two) == 3
    assert fitting_shards(net, SAMPLES, workers=2, budget=2 * two) == 3  # 2 held at once
    with pytest.raises(ResourceError, match="for 1 samples"):
        fitting_shards(net, SAMPLES, budget=estimate(net, 1).total_bytes - 1)

    out = tmp_path / "report.json"
    rc = main(["simulate", str(digits_run / "model.nir"), "--samples", str(SAMPLES),
               "--copies", "1", "--max-memory", str(two), "--report", str(out), "--json"])
    assert rc == 0
    got = json.loads(out.read_text())
    timings = got.pop("timings")
    assert [s["start"] for s in timings["shards"]] == [0, 2, 4]
    assert got == json.loads(json.dumps(_comparable(single)))


def test_a_failed_shard_is_named_by_its_sample_range_and_nothing_is_returned(digits_run):
    from lrfdyn.loihi.lower import lower
    from lrfdyn.sim.simulate import read_graph

    net = lower(read_graph(digits_run / "model.nir"))
    good = np.zeros((2, net.input.size), np.int64)
    bad = np.zeros((3, net.input.size + 1), np.int64)  # the wrong data set's width
    tasks = [ShardTask("parallel", net, good, np.zeros(2, int), None, 0, 2, use_lava=False),
             ShardTask("parallel", net, bad, np.zeros(3, int), None, 2, 5, use_lava=False)]
    ticks: list[float] = []
    with pytest.raises(LavaRunError, match=r"1 shard\(s\) failed \(3 of 5 samples\).*"
                                           r"samples 2–4: ValidationError"):
        run_shards(tasks, workers=2, on_tick=ticks.append)


def test_merging_dendritic_shards_gives_the_single_report(tiny_lrf_dyn) -> None:
    """Dendritic mode, integer references only: shards of 1 and 2 samples merge into the
    report of all 3."""
    from lrfdyn.sim.dendritic import simulate_dendritic
    from lrfdyn.sim.shard import merge_dendritic

    _, graph = tiny_lrf_dyn
    x = np.random.default_rng(0).integers(0, 256, (3, 14 * 14))
    y = np.array([0, 1, 1])
    whole = simulate_dendritic(graph, x, y, use_lava=False, float_predictions=y)
    parts = [simulate_dendritic(graph, x[a:b], y[a:b], use_lava=False,
                                float_predictions=y[a:b]) for a, b in ((0, 1), (1, 3))]
    a, b = whole.to_dict(), merge_dendritic(parts, [0, 1]).to_dict()
    a.pop("timings"), b.pop("timings")
    assert a == b and a["float_accuracy"] == 1.0


@pytest.mark.slow
def test_ray_local_cluster_report_equals_the_single_run(digits_run, single) -> None:
    pytest.importorskip("ray")
    from lrfdyn.pipeline import run_simulation

    report = run_simulation(digits_run / "model.nir", samples=SAMPLES, progress=False,
                            workers=2, cluster="local", copies=2)
    assert _comparable(report) == _comparable(single)
    assert report.timings["cluster"] == "local"


@pytest.mark.slow
@pytest.mark.parametrize("network", [False, True], ids=["streams", "one_network"])
def test_dendritic_workers_report_equals_the_single_run(tiny_lrf_dyn, network) -> None:
    """Stream networks checked block by block (copies side by side) or the one dendritic
    network: 2 workers merge into the single run's report."""
    from lrfdyn.sim.dendritic import simulate_dendritic
    from lrfdyn.sim.shard import simulate_sharded

    _, graph = tiny_lrf_dyn
    x = np.random.default_rng(0).integers(0, 256, (3, 14 * 14))
    y = np.arange(3) % 4
    one = simulate_dendritic(graph, x, y, copies=1, network=network)
    ticks: list[float] = []
    sharded = simulate_sharded("dendritic", graph, x, y, workers=2, copies=None,
                               on_tick=ticks.append, options={"network": network})
    a, b = one.to_dict(), sharded.to_dict()
    a.pop("timings"), b.pop("timings")
    assert a == b and one.mismatches == 0
    assert sum(ticks) == len(x)


# ---------------------------------------------------------------- the one dendritic network


def _comparable_dendritic(report) -> dict:
    d = report.to_dict()
    d.pop("timings")
    return d


def _faked_network_run(dn, x, **_):
    """A run of the one dendritic network that records what its reference computes, except
    the faults each sample asks for with a 255 in its first pixels: pixel 0, a value of the
    first group at a step other than its updates; pixel 1, a wrong update of that group."""
    from lrfdyn.loihi.dendritic_network import DESER
    from lrfdyn.sim.dendritic_network import NetworkRun, network_reference

    ref = network_reference(dn, x)
    phase, full = {}, {}
    for name in dn.groups:
        want = ref.hybrid.spikes[dn.repeats.get(name, name)]
        phase[name] = want.reshape(-1, want.shape[-1]).astype(np.int32)
    for plan in dn.streams:
        phase[plan.proc(DESER)] = ref.z[plan.name].astype(np.int32)
        for name, want in ref.streams[plan.name].items():
            lead = np.zeros((plan.sigma, want.shape[-1]), np.int32)
            full[name] = np.concatenate([lead, want.reshape(-1, want.shape[-1])])
    phase = {k: np.concatenate([v, np.zeros((1, v.shape[1]), np.int32)])
             for k, v in phase.items()}
    first = phase[next(iter(dn.groups))]
    for i, row in enumerate(np.asarray(x)):
        first[-1, 0] += int(row[0] == 255)  # one off-phase value
        if row[1] == 255:
            first[i * dn.timesteps, 1] = 1 - first[i * dn.timesteps, 1]
    counts = {"compartments": {p.name: p.block.k * p.block.d for p in dn.streams}}
    return NetworkRun(phase, full, {}, counts, 0.0, 0.0, len(x) * dn.sample_steps)


def test_merging_one_network_shards_gives_the_single_report(tiny_lrf_dyn, monkeypatch) -> None:
    """Issue 26: the one dendritic network's report, merged from shards, is the single
    run's: mismatch counts (off-phase values counted one by one, not as neurons that had
    any) and the first mismatch in the check's order (an update before an off-phase value
    of the same process, whatever shard each is in). Lava is replaced by a faked run."""
    from lrfdyn.sim import dendritic_network
    from lrfdyn.sim.shard import merge_dendritic
    from lrfdyn.sim.streams import lower_both

    monkeypatch.setattr(dendritic_network, "run_dendritic_network_lava", _faked_network_run)
    net, blocks = lower_both(tiny_lrf_dyn[1])
    x = np.random.default_rng(0).integers(0, 255, (3, net.input.size))
    x[0, 0] = x[1, 0] = 255  # off-phase values in samples 0 and 1 (one shard each)
    x[2, 1] = 255  # a wrong update in sample 2
    y = np.arange(3) % 4

    def run(a: int, b: int):
        return dendritic_network.simulate_network(net, blocks, x[a:b], y[a:b], copies=1)

    whole = run(0, 3)
    merged = merge_dendritic([run(0, 1), run(1, 3)], [0, 1])
    assert _comparable_dendritic(merged) == _comparable_dendritic(whole)
    group = next(iter(whole.network["mismatches_by_process"]))
    assert whole.network["mismatches_by_process"][group] == 3 == whole.mismatches
    m = whole.first_mismatch
    assert (m.process, m.sample, m.part) == (group, 2, "update")
    x[2, 1] = 0  # off-phase values alone: the first names the run's count at its neuron
    whole = run(0, 3)
    merged = merge_dendritic([run(0, 1), run(1, 3)], [0, 1])
    assert _comparable_dendritic(merged) == _comparable_dendritic(whole)
    m = whole.first_mismatch
    assert (m.process, m.sample, m.part, m.neuron, m.lava) == (group, -1, "off_phase", 0, 2)


@pytest.mark.slow
def test_one_network_shards_on_lava_merge_into_the_single_report(active_lrf_dyn) -> None:
    """Issue 26 on Lava: the one dendritic network with its deserializer one step early
    (every z off its phase, nothing carried into the next sample), run over 3 samples
    and as shards of 1 and 2; the merged report is the single run's, field by field."""
    from lrfdyn.sim.dendritic_network import simulate_network
    from lrfdyn.sim.shard import merge_dendritic
    from lrfdyn.sim.streams import lower_both

    net, blocks = lower_both(active_lrf_dyn)
    x = np.random.default_rng(0).integers(0, 256, (3, net.input.size))
    y = np.arange(3) % 4

    def run(a: int, b: int):
        return simulate_network(net, blocks, x[a:b], y[a:b], deser_shift=-1, copies=1)

    whole = run(0, 3)
    merged = merge_dendritic([run(0, 1), run(1, 3)], [0, 1])
    assert whole.mismatches > 0
    assert _comparable_dendritic(merged) == _comparable_dendritic(whole)
