"""The resource guard (issue 17): runs that cannot fit are refused before they start, in
one line with the estimate, and ``--max-memory`` moves the budget."""

from __future__ import annotations

import time

import nir
import numpy as np
import pytest

from lrfdyn.cli import main
from lrfdyn.errors import ResourceError, ValidationError
from lrfdyn.loihi.lower import lower
from lrfdyn.sim import budget
from lrfdyn.sim.budget import GIB, check, estimate, parse_size


@pytest.mark.parametrize("text, size", [("16G", 16 * GIB), ("512M", 512 << 20),
                                        ("1.5T", int(1.5 * (1 << 40))), ("2GiB", 2 * GIB),
                                        ("100", 100), ("64k", 64 << 10), (" 8 gb ", 8 * GIB)])
def test_sizes_parse(text, size) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "abc", "0", "-1G", "1X", "nan", "1e400G", "G"])
def test_bad_sizes_are_one_clear_error(text) -> None:
    with pytest.raises(ValidationError, match="--max-memory"):
        parse_size(text)


def test_estimate_grows_with_samples_and_steps(make_shortcut_graph) -> None:
    graph = make_shortcut_graph()
    small = estimate(lower(graph), 10)
    assert estimate(lower(graph), 100).total_bytes > small.total_bytes
    graph.metadata["timesteps"] = 600
    longer = estimate(lower(graph), 10)
    assert longer.steps > small.steps and longer.total_bytes > small.total_bytes
    assert longer.total_s > small.total_s > 0
    # No Lava: no workers, less memory.
    assert estimate(lower(graph), 10, lava=False).total_bytes < small.total_bytes


def test_reference_estimate_covers_what_the_reference_allocates(make_shortcut_graph) -> None:
    """Not a number checked against itself: the recorded arrays run_reference returns."""
    from lrfdyn.sim.reference import run_reference

    net = lower(make_shortcut_graph())
    x = np.random.default_rng(0).integers(0, 256, (40, 12))
    out = run_reference(net, x, net.steps_per_sample())
    actual = sum(a.nbytes for a in out.values())
    est = estimate(net, 40, lava=False).reference_bytes
    assert actual <= est <= 50 * actual + (1 << 20)


def test_absurd_timesteps_are_refused_within_a_second(make_shortcut_graph) -> None:
    graph = make_shortcut_graph()
    graph.metadata["timesteps"] = 10**9
    t0 = time.perf_counter()
    net = lower(graph)
    with pytest.raises(ResourceError) as err:
        check(net, 100)
    assert time.perf_counter() - t0 < 1.0
    msg = str(err.value)
    assert "\n" not in msg
    assert "needs about" in msg and "TiB" in msg and "100 samples" in msg
    assert "--max-memory" in msg and "over the memory budget of 8.0 GiB" in msg


def test_the_budget_is_the_command_s_and_only_inside_it(make_shortcut_graph) -> None:
    net = lower(make_shortcut_graph())
    need = estimate(net, 20).total_bytes
    check(net, 20)  # small: fits the default
    with budget.limit(f"{need // 2}"):
        with pytest.raises(ResourceError, match=r"raise the budget with --max-memory \d+G"):
            check(net, 20)
    check(net, 20)
    with budget.limit(None):
        assert budget.max_memory() == budget.DEFAULT_MAX_MEMORY


@pytest.fixture()
def mlp_nir(tmp_path):
    import torch

    from lrfdyn.export.to_nir import model_to_nir, write_nir
    from lrfdyn.train.models import build_model

    torch.manual_seed(0)
    graph = model_to_nir(build_model("mlp", {"hidden": [16]}).eval(), (1, 8, 8), 4)
    graph.metadata["dataset"] = "digits"

    def write(timesteps: int | None = None):
        if timesteps is not None:
            graph.metadata["timesteps"] = timesteps
        return str(write_nir(graph, tmp_path / f"m{timesteps}.nir"))

    return write


def test_cli_refuses_absurd_timesteps_in_one_line(mlp_nir, tmp_path, capsys) -> None:
    from lrfdyn.train.data import load_dataset

    load_dataset("digits")  # imported up front (sklearn): the time measured is the refusal's

    path = mlp_nir(10**6)  # under the step cap of validation, far over the memory budget
    t0 = time.perf_counter()
    rc = main(["simulate", path, "--samples", "360", "--report", str(tmp_path / "r.json")])
    took = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert rc == 2 and took < 5.0, (rc, took)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lrfdyn: error: this run needs about")
    assert "1,000,00" in lines[0] and "360 samples" in lines[0]
    assert not (tmp_path / "r.json").exists()


def test_cli_max_memory_lowers_and_raises_the_budget(mlp_nir, tmp_path, capsys) -> None:
    path = mlp_nir()
    rc = main(["simulate", path, "--samples", "3", "--no-lava", "--max-memory", "1K"])
    err = capsys.readouterr().err
    assert rc == 2 and "over the memory budget of 1.0 KiB" in err, err
    rc = main(["simulate", path, "--samples", "3", "--no-lava", "--max-memory", "2G", "--json"])
    assert rc == 0
    rc = main(["profile", path, "--samples", "3", "--fast", "--max-memory", "1K",
               "--out", str(tmp_path / "p")])
    assert rc == 2 and "over the memory budget of 1.0 KiB" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()
    rc = main(["simulate", path, "--max-memory", "lots"])
    assert rc == 2 and "--max-memory 'lots' is not a size" in capsys.readouterr().err


def test_float_array_run_is_guarded(tmp_path, capsys, make_shortcut_graph) -> None:
    graph = make_shortcut_graph()
    path = tmp_path / "s.nir"
    nir.write(path, graph)
    np.save(tmp_path / "x.npy", np.zeros((5, 2, 12)))
    rc = main(["simulate", str(path), "--float", "--input", str(tmp_path / "x.npy"),
               "--max-memory", "10K", "--output", str(tmp_path / "y.npy")])
    assert rc == 2 and "over the memory budget" in capsys.readouterr().err
    assert not (tmp_path / "y.npy").exists()
