"""``lrfdyn profile``: Lava and reference counts agree, SynOps match a hand count, files exist."""

from __future__ import annotations

import json
import multiprocessing

import numpy as np
import pytest

from lrfdyn.errors import ValidationError
from lrfdyn.loihi.lower import lower
from lrfdyn.sim import energy
from lrfdyn.sim.profile import BACKEND_LAVA, BACKEND_REFERENCE, profile, write_profile
from lrfdyn.sim.reference import run_reference
from lrfdyn.sim.report import memory_bits
from lrfdyn.sim.simulate import read_graph

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def digits_net(digits_run):
    from lrfdyn.train.data import load_dataset

    net = lower(read_graph(digits_run / "model.nir"))
    ds = load_dataset("digits")
    return net, ds.x_test[:4].reshape(4, -1).astype(np.int64), ds.y_test[:4]


def _counts(report) -> dict:
    d = report.to_dict()
    for key in ("backend", "timings"):
        d.pop(key)
    return d


def test_lava_and_fast_give_identical_counts(digits_net) -> None:
    net, x, y = digits_net
    ticks: list[int] = []
    lava = profile(net, x, y, fast=False, on_sample=ticks.append)
    fast = profile(net, x, y, fast=True)
    assert lava.backend == BACKEND_LAVA and fast.backend == BACKEND_REFERENCE
    assert ticks == list(range(len(x)))  # the progress callback saw every sample
    assert _counts(lava) == _counts(fast)
    for g in net.groups:
        assert np.array_equal(lava.spike_trains[g], fast.spike_trains[g]), g
    # Non-vacuous: every layer spiked and received SynOps.
    assert all(la.spikes > 0 and la.synops_in > 0 for la in fast.layers), fast.layers
    assert multiprocessing.active_children() == []


def test_synops_macs_and_memory_equal_a_hand_count(hand_graph) -> None:
    net = lower(hand_graph)
    x = np.array([[200, 0], [0, 0]])
    rep = profile(net, x, np.array([0, 1]), fast=True)
    layers = {la.name: la for la in rep.layers}
    # Input 0 is non-zero in sample 0 only, for 4 steps, with fan-out 2 (l's neurons 0, 1).
    assert layers["l"].synops_in == 4 * 2
    # Each spike of l's neuron j costs the non-zero weights in column j of b: [1, 2, 1].
    l_counts = run_reference(net, x)["l"][:, :4].sum(axis=(0, 1))
    assert l_counts[0] > 0 and l_counts[1] > 0 and l_counts[2] == 0
    assert layers["m"].synops_in == int(l_counts @ np.array([1, 2, 1]))
    assert rep.synops == 8 + layers["m"].synops_in
    # Dense MACs count every weight at every step: (3·2 + 2·3) · T=4 · 2 samples.
    assert rep.dense_macs == (6 + 6) * 4 * 2 and rep.first_layer_macs == 6 * 4 * 2
    assert rep.neuron_updates == (3 + 2) * 4 * 2
    assert layers["l"].firing_rate == pytest.approx(l_counts.sum() / (3 * 4 * 2))
    assert (rep.state_memory_bits, rep.synaptic_memory_bits) == memory_bits(net)
    assert rep.per_sample()["synops"] == rep.synops / 2


def test_energy_uses_the_stated_constants(digits_net) -> None:
    net, x, y = digits_net
    rep = profile(net, x, y, fast=True)
    graded = sum(s.synops for s in rep.synapses if s.graded)
    assert 0 < graded < rep.synops
    st = rep.energy["spiking_transformer_45nm"]
    assert st.total_pj == pytest.approx(4.6 * rep.first_layer_macs + 0.9 * (rep.synops - graded))
    lo = rep.energy["loihi"]
    assert lo.total_pj == pytest.approx(
        23.6 * rep.synops + 52.0 * rep.neuron_updates + 1.7 * rep.spikes)
    assert rep.energy["dense_ann_45nm"].total_pj == pytest.approx(4.6 * rep.dense_macs)
    assert lo.per_sample_pj == pytest.approx(lo.total_pj / len(x))
    for est in rep.to_dict()["energy_estimates"].values():
        assert est["kind"] == "estimate" and "estimate" in est["caveat"]
        for term in est["terms"]:
            assert term["constant"]["pj"] > 0 and term["constant"]["source"]
    assert "Loihi 1 published figure" in energy.E_LOIHI1_SYNOP.note
    with pytest.raises(ValidationError, match="non-negative"):
        energy.loihi_estimate(-1, 0, 0, 1)


def test_written_files_are_complete_and_atomic(digits_net, tmp_path) -> None:
    net, x, y = digits_net
    rep = profile(net, x, y, fast=True)
    files = write_profile(rep, tmp_path / "prof", sample=1, model="digits")
    for kind in ("raster", "firing_rate", "synops", "memory"):
        data = files[kind].read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, kind
    md = files["markdown"].read_text()
    for name in ("raster.png", "firing_rate.png", "synops.png", "memory.png"):
        assert f"]({name})" in md, name
    assert "estimate" in md and "4.6 pJ" in md and "23.6 pJ" in md and "Loihi 2 cores" in md
    saved = json.loads(files["json"].read_text())
    assert saved["version"] == 1 and saved["samples"] == len(x)
    assert saved["totals"]["synops"] == rep.synops
    assert saved["loihi2_resources"]["cores"] == len(net.groups)
    # sources are labels in the files: a bias source reads "bias" or "bias@k"
    srcs = {s["src"] for s in saved["synapses"]}
    assert all(isinstance(v, str) for v in srcs) and "bias" in srcs
    assert not list((tmp_path / "prof").glob(".*.tmp"))  # no temporary left behind
    with pytest.raises(ValidationError, match="--sample 9 is out of range"):
        write_profile(rep, tmp_path / "other", sample=9)


def test_profile_command_writes_beside_the_nir_file(capsys, digits_run, tmp_path) -> None:
    import shutil

    from lrfdyn.cli import main

    nir_file = tmp_path / "net.nir"
    shutil.copy(digits_run / "model.nir", nir_file)
    code = main(["profile", str(nir_file), "--samples", "3", "--fast", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["samples"] == 3 and out["backend"] == BACKEND_REFERENCE
    assert (tmp_path / "net_profile" / "profile.md").is_file()
    assert out["energy_estimates"]["loihi"]["kind"] == "estimate"
