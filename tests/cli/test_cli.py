"""The command line: JSON results, and one clear line for every kind of bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import nir
import numpy as np
import torch

from lrfdyn.sim.simulate import read_graph
from lrfdyn.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_simulate_json_reports_zero_mismatches(capsys, digits_run) -> None:
    code, out, _ = run(capsys, "simulate", str(digits_run / "model.nir"), "--samples", "4",
                       "--json")
    report = json.loads(out)
    assert code == 0 and report["mismatches"] == 0
    for key in ("lava_accuracy", "reference_accuracy", "float_accuracy", "synops", "neurons",
                "state_memory_bits", "synaptic_memory_bits", "layers", "quantization"):
        assert key in report, key
    assert report["lava_accuracy"] == report["reference_accuracy"]
    assert report["neurons"] == 48 + 32 + 10 and report["synops"] > 0


def test_demo_json_keeps_the_test_split_accuracy_apart_from_the_lava_samples(
        capsys, tmp_path) -> None:
    code, out, _ = run(capsys, "demo", "--epochs", "1", "--samples", "3", "--out",
                       str(tmp_path / "d"), "--json")
    printed = json.loads(out)
    history = torch.load(tmp_path / "d" / "checkpoint.pt", weights_only=True)["extra"]["history"]
    assert code == 0 and printed["samples"] == 3 and printed["mismatches"] == 0
    # the 360-image test split, as training measured it; not the 3 samples' accuracy
    assert printed["test_float_accuracy"] == history[-1]["test_acc"]
    assert printed["float_accuracy"] in (0, 1 / 3, 2 / 3, 1)
    assert printed["test_quantized_accuracy"] == printed["quantized_accuracy"]
    assert 0 < printed["test_quantized_accuracy"] < 1  # 1 epoch: neither 0 nor perfect


def test_export_writes_a_nir_file(capsys, digits_run, tmp_path) -> None:
    dest = tmp_path / "again.nir"
    code, out, _ = run(capsys, "export", str(digits_run / "checkpoint.pt"), "-o", str(dest))
    assert code == 0 and "wrote" in out
    assert isinstance(read_graph(dest), nir.NIRGraph)


def _one_error_line(code: int, err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("lrfdyn: error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_missing_nir_file(capsys, tmp_path) -> None:
    code, _, err = run(capsys, "simulate", str(tmp_path / "nope.nir"))
    _one_error_line(code, err, "no such NIR file", "lrfdyn export")


def test_malformed_nir_file(capsys, tmp_path) -> None:
    bad = tmp_path / "bad.nir"
    bad.write_bytes(b"this is not HDF5")
    code, _, err = run(capsys, "simulate", str(bad))
    _one_error_line(code, err, "not a readable NIR file", "re-export")


def test_checkpoint_that_is_not_a_checkpoint(capsys, tmp_path) -> None:
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"\x80\x04garbage")
    out = tmp_path / "m.nir"
    code, _, err = run(capsys, "export", str(bad), "-o", str(out))
    _one_error_line(code, err, "not a loadable checkpoint")
    assert not out.exists()


def test_checkpoint_with_code_is_refused_not_executed(capsys, tmp_path) -> None:
    # weights_only=True: a pickle that would construct an arbitrary object is rejected.
    bad = tmp_path / "evil.pt"
    torch.save({"format": "lrfdyn-checkpoint", "obj": subprocess.Popen}, bad)
    code, _, err = run(capsys, "export", str(bad), "-o", str(tmp_path / "m.nir"))
    _one_error_line(code, err, "not a loadable checkpoint")


def _graph_file(tmp_path, nodes, edges, name="g.nir"):
    graph = nir.NIRGraph(nodes=nodes, edges=edges,
                         metadata={"dt": 1e-3, "timesteps": 4, "input_levels": 255})
    path = tmp_path / name
    nir.write(path, graph)
    return path


def test_unsupported_nodes_are_listed_all_at_once(capsys, tmp_path, monkeypatch) -> None:
    from lrfdyn.loihi.neurons import NEURON_LOWERINGS

    # lrfdyn lowers every nir 1.0.8 node type, so two of them play unsupported ones.
    monkeypatch.delitem(NEURON_LOWERINGS, nir.CubaLIF)
    monkeypatch.delitem(NEURON_LOWERINGS, nir.I)
    nodes = {
        "input": nir.Input(input_type={"input": np.array([4])}),
        "cuba": nir.CubaLIF(tau_syn=np.ones(4), tau_mem=np.ones(4), r=np.ones(4),
                            v_leak=np.zeros(4), v_threshold=np.ones(4)),
        "rnn": nir.I(r=np.ones(4)),
        "output": nir.Output(output_type={"output": np.array([4])}),
    }
    path = _graph_file(tmp_path, nodes, [("input", "cuba"), ("cuba", "rnn"), ("rnn", "output")])
    code, _, err = run(capsys, "simulate", str(path), "--samples", "1")
    _one_error_line(code, err, "CubaLIF (cuba)", "I (rnn)")


def test_value_out_of_loihi_range(capsys, tmp_path) -> None:
    n = 10
    nodes = {
        "input": nir.Input(input_type={"input": np.array([64])}),
        "a": nir.Affine(weight=np.full((n, 64), 0.1), bias=np.zeros(n)),
        # tau of exactly one step needs dv = 4096: one more than Loihi's 12 bits hold.
        "l": nir.LIF(tau=np.full(n, 1e-3), r=np.ones(n), v_leak=np.zeros(n),
                     v_threshold=np.ones(n), v_reset=np.zeros(n)),
        "output": nir.Output(output_type={"output": np.array([n])}),
    }
    path = _graph_file(tmp_path, nodes, [("input", "a"), ("a", "l"), ("l", "output")])
    code, _, err = run(capsys, "simulate", str(path), "--samples", "1")
    _one_error_line(code, err, "outside Loihi's 12-bit range")


def test_deploy_without_hardware_fails_fast_with_the_reason(capsys, tmp_path) -> None:
    code, _, err = run(capsys, "deploy", str(tmp_path / "m.nir"))
    _one_error_line(code, err, "lava-loihi")


def test_console_script_prints_no_traceback_but_debug_does(tmp_path) -> None:
    cmd = [sys.executable, "-m", "lrfdyn", "simulate", str(tmp_path / "none.nir")]
    plain = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    debug = subprocess.run([*cmd, "--debug"], capture_output=True, text=True, timeout=120)
    assert debug.returncode != 0 and "Traceback" in debug.stderr
