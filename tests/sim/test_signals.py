"""Ctrl-C, SIGTERM, a dead or a hung Lava worker: lrfdyn ends in seconds, says so in one
line, writes nothing, and leaves no process behind (issue 17).

A terminal's Ctrl-C sends SIGINT to the whole foreground process group: lrfdyn and every
Lava worker it forked. So each test starts a real ``lrfdyn`` in its own session, waits
until Lava's workers run, and signals the whole group, as a terminal does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

#: Seconds lrfdyn may take to exit after the signal (the issue's bound).
EXIT_WITHIN_S = 15.0


def _session_pids(sid: int) -> list[int]:
    """Live (non-zombie) processes of session ``sid``, read off /proc."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # state, ppid, pgrp, session, ...
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry))
    return pids


def _children(pid: int) -> list[int]:
    """Direct children of ``pid``, oldest first."""
    kids = []
    for p in _session_pids(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append((int(fields[19]), p))  # start time, in clock ticks
    return [p for _, p in sorted(kids)]


@pytest.fixture(scope="module")
def mlp_nir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained digits MLP (64-32-10) as NIR: no training, fast to lower; T = 48, so
    that 360 samples keep Lava busy for many seconds, whatever the machine."""
    import torch

    from lrfdyn.export.to_nir import model_to_nir, write_nir
    from lrfdyn.train.models import build_model

    torch.manual_seed(0)
    model = build_model("mlp", {"hidden": [32]}).eval()
    graph = model_to_nir(model, (1, 8, 8), 48)
    graph.metadata["dataset"] = "digits"
    path = tmp_path_factory.mktemp("signals") / "m.nir"
    write_nir(graph, path)
    return path


def _start(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.Popen:
    lrfdyn = Path(sys.executable).with_name("lrfdyn")
    return subprocess.Popen([str(lrfdyn), *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, **(env or {})})


def _wait_for_lava(proc: subprocess.Popen, workers: int = 6, limit: float = 240.0) -> None:
    """Until Lava's workers have forked (and one second more, so that it runs)."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"lrfdyn ended before Lava ran: rc {proc.returncode}\n{err[-2000:]}")
        if len(_session_pids(proc.pid)) >= workers:
            time.sleep(1.0)
            return
        time.sleep(0.2)
    _kill_session(proc)
    pytest.fail("Lava never started")


def _kill_session(proc: subprocess.Popen) -> None:
    for p in _session_pids(proc.pid):
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def _ended(proc: subprocess.Popen, t_signal: float) -> tuple[int, str, float]:
    try:
        _, err = proc.communicate(timeout=EXIT_WITHIN_S + 30)
    except subprocess.TimeoutExpired:
        _kill_session(proc)
        pytest.fail("lrfdyn did not exit after the signal")
    took = time.monotonic() - t_signal
    # Nothing of the session survives lrfdyn (the resource tracker exits with it).
    end = time.monotonic() + 10
    while _session_pids(proc.pid) and time.monotonic() < end:
        time.sleep(0.2)
    left = _session_pids(proc.pid)
    if left:
        _kill_session(proc)
    assert left == [], f"processes left behind: {left}"
    return proc.returncode, err, took


def _assert_one_line(err: str, expected: str) -> None:
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == [expected] or (len(lines) == 1 and lines[0].startswith(expected)), lines


#: What lrfdyn must print and return for each signal.
_EXPECTED = {signal.SIGINT: (130, "lrfdyn: interrupted (SIGINT)"),
             signal.SIGTERM: (143, "lrfdyn: terminated (SIGTERM)")}


def _signalled(proc: subprocess.Popen, sig: int, *, limit: float = 240.0) -> None:
    """Once Lava runs, send ``sig`` to the whole process group (as a terminal's Ctrl-C
    does); lrfdyn must exit with its code and one line, in time, leaving nothing behind."""
    _wait_for_lava(proc, limit=limit)
    t0 = time.monotonic()
    os.killpg(proc.pid, sig)
    rc, err, took = _ended(proc, t0)
    code, line = _EXPECTED[sig]
    assert rc == code, err[-3000:]
    _assert_one_line(err, line)
    assert took < EXIT_WITHIN_S, took


def _no_output(folder: Path, *names: str) -> None:
    for name in names:
        assert not (folder / name).exists(), name
    assert not list(folder.glob(".*.tmp")), list(folder.glob(".*.tmp"))


@pytest.mark.parametrize("sig", [
    signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)])
def test_simulate_signal_to_the_process_group(mlp_nir, tmp_path, sig) -> None:
    proc = _start(["simulate", str(mlp_nir), "--samples", "360", "--json",
                   "--report", str(tmp_path / "r.json")], tmp_path)
    _signalled(proc, sig)
    _no_output(tmp_path, "r.json")


@pytest.mark.slow
def test_float_array_run_sigint(mlp_nir, tmp_path) -> None:
    x = np.random.default_rng(0).random((48, 200, 1, 8, 8))
    np.save(tmp_path / "x.npy", x)
    proc = _start(["simulate", str(mlp_nir), "--float", "--input", str(tmp_path / "x.npy"),
                   "--output", str(tmp_path / "y.npy"), "--json"], tmp_path)
    _signalled(proc, signal.SIGINT)
    _no_output(tmp_path, "y.npy")


@pytest.mark.slow
def test_profile_sigterm(mlp_nir, tmp_path) -> None:
    out = tmp_path / "prof"
    proc = _start(["profile", str(mlp_nir), "--samples", "360", "--out", str(out), "--json"],
                  tmp_path)
    _signalled(proc, signal.SIGTERM)
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.slow
def test_demo_sigint_during_lava(tmp_path) -> None:
    out = tmp_path / "demo"
    proc = _start(["demo", "--out", str(out), "--epochs", "1", "--samples", "360", "--json"],
                  tmp_path)
    _signalled(proc, signal.SIGINT, limit=600)
    _no_output(out, "report.json")


@pytest.mark.slow
def test_a_killed_worker_ends_the_run_in_one_line(mlp_nir, tmp_path) -> None:
    """A Lava worker that dies (here: SIGKILL) is seen by the watchdog: exit 2, one line."""
    proc = _start(["simulate", str(mlp_nir), "--samples", "360", "--json",
                   "--report", str(tmp_path / "r.json")], tmp_path)
    _wait_for_lava(proc)
    t0 = time.monotonic()
    os.kill(_children(proc.pid)[-1], signal.SIGKILL)  # the newest: a worker, not the manager
    rc, err, took = _ended(proc, t0)
    assert rc == 2, err[-3000:]
    _assert_one_line(err, "lrfdyn: error: Lava failed on sample")
    assert "exited (exit code -9)" in err
    assert took < EXIT_WITHIN_S, took
    _no_output(tmp_path, "r.json")


@pytest.mark.slow
def test_a_hung_worker_times_out_in_one_line(mlp_nir, tmp_path) -> None:
    """A worker that stops (SIGSTOP) hangs the run; the watchdog's timeout ends it."""
    proc = _start(["simulate", str(mlp_nir), "--samples", "360", "--json"], tmp_path,
                  env={"LRFDYN_LAVA_TIMEOUT": "8"})
    _wait_for_lava(proc)
    t0 = time.monotonic()
    os.kill(_children(proc.pid)[-1], signal.SIGSTOP)
    rc, err, took = _ended(proc, t0)
    assert rc == 2, err[-3000:]
    _assert_one_line(err, "lrfdyn: error: Lava failed on sample")
    assert "no progress for 8 s" in err
    assert took < 8 + EXIT_WITHIN_S, took


def test_the_watchdog_bound_grows_with_the_first_sample() -> None:
    """A network whose samples outlast the minimum must not be called hung at its second
    sample: the first run call (compilation included) bounds the later ones."""
    from lrfdyn.sim.lava_run import _Guard, _MIN_TIMEOUT_S

    guard = _Guard()
    guard.ran(80.0)  # the first sample of a big network, compilation included
    assert guard.run_timeout() >= 20 * 80.0
    small = _Guard()
    small.ran(0.5)
    assert small.run_timeout() == _MIN_TIMEOUT_S
