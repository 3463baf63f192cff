"""``make mutation`` covers every module of loihi/ and sim/: each has a test selection in
tests/mutation_run.py, every selection names tests that exist, and ``--only`` picks
modules by stem, path or dotted name. No mutation is run here."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import mutation_run as mr  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: Package markers only: they hold no code to mutate (loihi/processes/__init__.py holds
#: cpu_models, so it is in).
LEFT_OUT = {"loihi/__init__.py", "sim/__init__.py"}


def _modules() -> set[str]:
    return {p.relative_to(ROOT).as_posix() for d in ("loihi", "sim")
            for p in (ROOT / d).rglob("*.py") if "__pycache__" not in p.parts} - LEFT_OUT


def test_every_module_of_loihi_and_sim_has_a_selection():
    assert set(mr.TARGETS) == _modules()
    assert set(mr.UNITS) == set(mr.TARGETS)
    for d in LEFT_OUT:  # what is left out really is a package marker without logic
        src = (ROOT / d).read_text()
        assert not re.search(r"^\s*(def|class|if|for|while) ", src, re.M), d


def test_every_selected_test_exists():
    for module in mr.TARGETS:
        for kind in ("unit", "broad"):
            for node in mr.selection(module, kind):
                path, _, name = node.partition("::")
                assert (ROOT / path).is_file(), (module, node)
                if name:
                    func = re.sub(r"\[.*\]$", "", name.split("::")[-1])
                    assert re.search(rf"^def {re.escape(func)}\(", (ROOT / path).read_text(),
                                     re.M), (module, node)


def test_a_run_without_only_covers_every_module():
    assert mr.chosen(None) == list(mr.TARGETS) == mr.chosen("")


def test_only_takes_stems_paths_and_dotted_names():
    assert mr.chosen("report") == ["sim/report.py"]
    assert mr.chosen("sim/dendritic.py") == ["sim/dendritic.py"]
    assert mr.chosen("loihi.dendritic") == ["loihi/dendritic.py"]
    assert mr.chosen("loihi/processes/conv") == ["loihi/processes/conv.py"]
    # a stem two modules share names both, in TARGETS order
    both = mr.chosen("dendritic")
    assert sorted(both) == ["loihi/dendritic.py", "sim/dendritic.py"]
    assert mr.chosen(" ir , bits ") == [m for m in mr.TARGETS
                                         if m in ("loihi/ir.py", "sim/bits.py")]


def test_an_unknown_name_is_refused_before_anything_runs():
    with pytest.raises(SystemExit, match="no module lowr"):
        mr.chosen("lower,lowr")


def test_each_module_has_its_own_database():
    names = [mr.db_name(m) for m in mr.TARGETS]
    assert len(set(names)) == len(names)
    assert mr.db_name("sim/dendritic.py") == "sim.dendritic"
    assert mr.db_name("loihi/processes/conv.py") == "loihi.processes.conv"
