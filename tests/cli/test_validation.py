"""Hardening: hostile names never become code, special output paths stay what they are,
non-finite values are refused by name, and outputs never overwrite inputs."""

from __future__ import annotations

import json
import os
import stat

import nir
import numpy as np
import pytest
import torch

from lrfdyn.cli import main
from lrfdyn.export.from_nir import nir_to_module, run_float
from lrfdyn.io import write_json, write_text

#: A name that is Python code in nirtorch 2.6's generated ``getattr(self, "<name>")``:
#: unescaped, it opens (creates) ``PWNED`` in the working folder.
HOSTILE = 'x", open("PWNED", "w") and "x'


def small_graph(**meta) -> nir.NIRGraph:
    """Input(1x8x8) -> Flatten -> Affine -> LIF(10) -> Output: digits-shaped, runs without Lava."""
    rng = np.random.default_rng(0)
    n = 10
    nodes = {
        "input": nir.Input(input_type={"input": np.array([1, 8, 8])}),
        "flat": nir.Flatten(start_dim=0, end_dim=-1,
                            input_type={"input": np.array([1, 8, 8])}),
        "fc": nir.Affine(weight=rng.normal(0, 0.05, (n, 64)), bias=np.full(n, 0.2)),
        "lif": nir.LIF(tau=np.full(n, 2e-3), r=np.ones(n), v_leak=np.zeros(n),
                       v_threshold=np.ones(n), v_reset=np.zeros(n)),
        "output": nir.Output(output_type={"output": np.array([n])}),
    }
    edges = [("input", "flat"), ("flat", "fc"), ("fc", "lif"), ("lif", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={
        "dt": 1e-3, "timesteps": 4, "input_levels": 255, "dataset": "digits", **meta})


def renamed(graph: nir.NIRGraph, old: str, new: str) -> nir.NIRGraph:
    nodes = {(new if k == old else k): v for k, v in graph.nodes.items()}
    edges = [tuple(new if e == old else e for e in edge) for edge in graph.edges]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=graph.metadata, type_check=False)


def one_error_line(code: int, err: str, *fragments: str) -> str:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("lrfdyn: error: ") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# ---------------------------------------------------------------- names never become code


@pytest.mark.parametrize("where", ["fc", "lif", "input", "output"])
def test_a_hostile_node_name_runs_no_code(tmp_path, monkeypatch, where) -> None:
    monkeypatch.chdir(tmp_path)
    graph = renamed(small_graph(), where, HOSTILE)
    images = np.full((2, 1, 8, 8), 200, np.uint8)
    out = run_float(graph, images)
    assert not (tmp_path / "PWNED").exists()
    # The renamed graph computes what the original does.
    assert np.array_equal(out, run_float(small_graph(), images))
    module = nir_to_module(graph)
    assert 'open("PWNED"' not in module.code
    assert all(n.isidentifier() for n, _ in module.named_children())


def test_a_hostile_name_in_a_file_through_the_cli_writes_no_file(tmp_path, monkeypatch,
                                                                 capsys) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.nir"
    nir.write(path, renamed(small_graph(), "lif", HOSTILE))
    code = main(["simulate", str(path), "--no-lava", "--samples", "2", "--json"])
    assert code == 0, capsys.readouterr().err
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("name", ["a\\b", "if", "forward", "a.b", "self", "ünï", "1x"])
def test_odd_but_printable_names_run(name) -> None:
    images = np.full((1, 1, 8, 8), 100, np.uint8)
    assert np.array_equal(run_float(renamed(small_graph(), "lif", name), images),
                          run_float(small_graph(), images))


@pytest.mark.parametrize("name", ["a\nb", "tab\there", "bell\x07"])
def test_control_characters_in_names_are_one_line(tmp_path, capsys, name) -> None:
    path = tmp_path / "g.nir"
    nir.write(path, renamed(small_graph(), "lif", name))
    code = main(["simulate", str(path), "--no-lava", "--samples", "1"])
    line = one_error_line(code, capsys.readouterr().err, "control characters")
    assert repr(name) in line


# ---------------------------------------------------------------- special output targets


def test_char_devices_are_written_not_replaced(tmp_path) -> None:
    before = os.stat("/dev/null")
    write_json("/dev/null", {"a": 1})
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_ino == before.st_ino


def test_a_symlink_stays_a_link_and_its_target_is_replaced(tmp_path) -> None:
    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    write_text(link, "new")
    assert link.is_symlink() and real.read_text() == "new"


def test_a_fifo_is_written_directly_and_one_without_reader_is_refused(tmp_path) -> None:
    import threading

    from lrfdyn.errors import OutputPathError

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(OutputPathError, match="no process reads"):
        write_text(fifo, "x")
    got: list[bytes] = []
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader, so the write may open it
    try:
        t = threading.Thread(target=write_text, args=(fifo, "hello\n"))
        t.start()
        t.join(10)
        os.set_blocking(fd, True)
        got.append(os.read(fd, 100))
    finally:
        os.close(fd)
    assert got == [b"hello\n"] and stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_report_to_dev_stdout_keeps_it_a_device(tmp_path, capsys) -> None:
    path = tmp_path / "g.nir"
    nir.write(path, small_graph())
    code = main(["simulate", str(path), "--no-lava", "--samples", "2", "--report", "/dev/null"])
    assert code == 0 and stat.S_ISCHR(os.stat("/dev/null").st_mode)


# ---------------------------------------------------------------- outputs never overwrite inputs


def test_outputs_that_are_inputs_are_refused_before_any_work(tmp_path, capsys,
                                                             digits_run) -> None:
    ckpt = tmp_path / "ck.pt"
    ckpt.write_bytes((digits_run / "checkpoint.pt").read_bytes())
    graph = tmp_path / "m.nir"
    nir.write(graph, small_graph())
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((4, 1, 8, 8)))
    link = tmp_path / "alias.nir"
    link.symlink_to(graph)
    saved = {p: p.read_bytes() for p in (ckpt, graph, x)}
    for argv in (["export", str(ckpt), "-o", str(ckpt)],
                 ["simulate", str(graph), "--report", str(graph)],
                 ["simulate", str(graph), "--report", str(link)],
                 ["simulate", str(graph), "--float", "--input", str(x), "--output", str(x)],
                 ["simulate", str(graph), "--float", "--input", str(x), "--output",
                  str(graph)]):
        one_error_line(main(argv), capsys.readouterr().err, "input")
    assert all(p.read_bytes() == b for p, b in saved.items())


# ---------------------------------------------------------------- non-finite values by name


@pytest.mark.parametrize("field,value", [("weight", np.nan), ("bias", np.inf),
                                         ("v_threshold", np.inf), ("tau", np.nan)])
def test_non_finite_graph_parameters_are_refused_by_name(tmp_path, capsys, field,
                                                         value) -> None:
    g = small_graph()
    node = g.nodes["fc"] if field in ("weight", "bias") else g.nodes["lif"]
    arr = np.array(getattr(node, field), dtype=float)
    arr.flat[0] = value
    setattr(node, field, arr)
    path = tmp_path / "g.nir"
    nir.write(path, g)
    out = tmp_path / "y.npy"
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((4, 1, 8, 8)))
    code = main(["simulate", str(path), "--float", "--input", str(x), "--output", str(out)])
    one_error_line(code, capsys.readouterr().err, field)
    assert not out.exists()


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_are_refused(tmp_path, capsys, value) -> None:
    path = tmp_path / "g.nir"
    nir.write(path, small_graph())
    x = np.zeros((4, 1, 8, 8))
    x[2, 0, 1, 5] = value
    np.save(tmp_path / "x.npy", x)
    code = main(["simulate", str(path), "--float", "--input", str(tmp_path / "x.npy")])
    one_error_line(code, capsys.readouterr().err, "NaN or infinite")


def test_nan_weights_in_a_checkpoint_are_refused(tmp_path, capsys, digits_run) -> None:
    payload = torch.load(digits_run / "checkpoint.pt", weights_only=True)
    key = next(iter(payload["state_dict"]))
    payload["state_dict"][key] = payload["state_dict"][key].clone()
    payload["state_dict"][key].view(-1)[0] = float("nan")
    torch.save(payload, tmp_path / "ck.pt")
    out = tmp_path / "m.nir"
    code = main(["export", str(tmp_path / "ck.pt"), "-o", str(out)])
    one_error_line(code, capsys.readouterr().err, repr(key), "NaN")
    assert not out.exists()


def test_absurd_timesteps_are_refused_at_once_with_an_estimate(tmp_path, capsys) -> None:
    import time

    path = tmp_path / "g.nir"
    nir.write(path, small_graph(timesteps=10**7))
    t0 = time.perf_counter()
    code = main(["simulate", str(path), "--no-lava"])
    line = one_error_line(code, capsys.readouterr().err, "GB", " h ")
    assert time.perf_counter() - t0 < 5, line


def test_a_header_claiming_4e12_values_is_refused_without_reading(tmp_path, capsys) -> None:
    from numpy.lib import format as npformat

    path = tmp_path / "g.nir"
    nir.write(path, small_graph())
    x = tmp_path / "huge.npy"
    with open(x, "wb") as f:
        npformat.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False,
                                            "shape": (62_500_000_000, 1, 8, 8)})
    code = main(["simulate", str(path), "--float", "--input", str(x)])
    one_error_line(code, capsys.readouterr().err, "4e+12", "claims")


# ---------------------------------------------------------------- the CLI the issues named


def test_train_help_lists_attention_and_arch_choices(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for word in ("ssa", "lrf_ssa", "lrf_dyn", "statten", "a2os2a", "{mlp,spikformer}",
                 "--token", "--gate", "example:"):
        assert word in out, word


@pytest.mark.parametrize("command", ["train", "analyze", "export", "simulate", "deploy",
                                     "profile", "demo"])
def test_every_command_help_shows_an_example(capsys, command) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    assert f"example:\n  lrfdyn {command}" in out


def test_attention_flags_select_the_spikformer_and_its_options(tmp_path, capsys) -> None:
    out = tmp_path / "dyn"
    code = main(["train", "--data", "digits", "--attention", "lrf_dyn", "--token", "kv",
                 "--gate", "q", "--epochs", "0", "--out", str(out), "--json"])
    assert code == 0, capsys.readouterr().err
    cfg = json.loads((out / "train_config.json").read_text())
    assert cfg["arch"] == "spikformer"
    assert {k: cfg["model"][k] for k in ("attention", "token", "gate")} == {
        "attention": "lrf_dyn", "token": "kv", "gate": "q"}


@pytest.mark.parametrize("argv,fragment", [
    (["--attention", "ssa", "--token", "kv"], "LRF-Dyn's options"),
    (["--gate", "q"], "--attention lrf_dyn"),
    (["--arch", "mlp", "--attention", "ssa"], "selects a Spikformer"),
])
def test_attention_flag_conflicts_are_one_line(tmp_path, capsys, argv, fragment) -> None:
    out = tmp_path / "run"
    code = main(["train", "--data", "digits", "--epochs", "0", "--out", str(out), *argv])
    one_error_line(code, capsys.readouterr().err, fragment)
    assert not out.exists()


def test_calibrate_without_fixed_is_one_line(tmp_path, capsys, hand_graph) -> None:
    import nir

    graph = tmp_path / "g.nir"
    nir.write(graph, hand_graph)
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((4, 2), np.float32))
    code = main(["simulate", str(graph), "--float", "--input", str(x), "--calibrate"])
    one_error_line(code, capsys.readouterr().err, "--calibrate", "use it with --fixed")


def test_a_usage_error_is_one_line(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--samples", "0", "g.nir"])
    one_error_line(exc.value.code, capsys.readouterr().err, "--samples", "at least 1")


def test_analyze_into_a_file_as_folder_is_one_line(tmp_path, capsys, digits_run) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = main(["analyze", str(digits_run / "checkpoint.pt"), "--out", str(blocker / "sub")])
    one_error_line(code, capsys.readouterr().err, "is a file, not a folder")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_one_line(tmp_path, capsys) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    path = tmp_path / "g.nir"
    nir.write(path, small_graph())
    try:
        code = main(["simulate", str(path), "--no-lava", "--report", str(ro / "r.json")])
        one_error_line(code, capsys.readouterr().err, "not writable")
    finally:
        ro.chmod(0o700)


TINY = {"dim": 8, "depth": 1, "heads": 2, "timesteps": 2, "mlp_ratio": 2.0,
        "stem_strides": [1, 2], "k_dendrites": 2, "lrf_dilations": [1]}


@pytest.mark.slow
@pytest.mark.parametrize("attention", ["ssa", "lrf_ssa", "lrf_dyn", "statten", "a2os2a"])
def test_train_with_each_attention_trains_and_reports(tmp_path, capsys, attention) -> None:
    """`train --attention X --epochs 1` on digits: the variants that export report a
    Loihi-integer accuracy, the others (PRODUCT_BLOCKS) report it as unavailable; all
    exit 0."""
    from lrfdyn.export.transformer import PRODUCT_BLOCKS

    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps({"model": TINY}))
    out = tmp_path / attention
    code = main(["train", "--config", str(cfg), "--data", "digits", "--attention", attention,
                 "--epochs", "1", "--out", str(out), "--json"])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert json.loads((out / "train_config.json").read_text())["model"]["attention"] == attention
    if attention not in PRODUCT_BLOCKS:
        assert 0 <= metrics["quantized_accuracy"] <= 1
    else:
        assert metrics["quantized_accuracy"] is None
        assert metrics["quantized_accuracy_note"].startswith("not available: ")
