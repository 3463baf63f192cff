"""The import graph of the package: no cycle, no upward import, no private import, no
module over 600 lines (issue 26).

Every module under ``lrfdyn/ train/ export/ loihi/ sim/`` is parsed with :mod:`ast`,
lazy imports inside functions included. The direction, bottom to top: lrfdyn's small
shared modules (``errors``, ``io``, ``nir_types``, ``registry``, and ``loihi/fixed.py``,
the one fixed-point module training also uses), then ``train`` → ``export`` → ``loihi``
→ ``sim``, then the rest of ``lrfdyn/`` (the command line, the pipeline). A module may
import its own stage or a lower one.
"""

from __future__ import annotations

import ast
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("train", "export", "loihi", "sim")
#: lrfdyn's shared modules, below every stage.
BASE = {"errors", "io", "nir_types", "registry"}
#: Bottom modules that live inside a stage folder.
SHARED = {"lrfdyn.loihi.fixed"}
MAX_LINES = 600

#: Modules still being split or cleaned up in parallel (issue 26): their private imports
#: and their length are tolerated until they are fixed; a cycle or an upward import never
#: is. Module names only. Empty this list as each one is fixed: the test below fails on
#: an entry that no longer violates anything.
KNOWN: set[str] = set()


@dataclass
class Graph:
    """The modules of a checkout, their import edges and what is wrong with them."""

    modules: dict[str, Path]
    edges: dict[str, set[str]] = field(default_factory=dict)
    #: ``path:line importer -> imported``, for an import from a higher stage.
    upward: list[tuple[str, str]] = field(default_factory=list)
    #: ``path:line importer -> module._name``.
    private: list[tuple[str, str]] = field(default_factory=list)
    #: ``module lines``, for a module over :data:`MAX_LINES`.
    long: list[tuple[str, str]] = field(default_factory=list)
    #: One closed path ``a -> b -> ... -> a`` per strongly connected component.
    cycles: list[list[str]] = field(default_factory=list)


def module_name(root: Path, path: Path) -> str:
    """``lrfdyn.<stage>.<module>`` of a file: the stage folders are ``lrfdyn``'s subpackages."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[0] != "lrfdyn":
        parts = ["lrfdyn", *parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def rank(mod: str) -> int:
    """0 for the shared bottom, 1..4 for train, export, loihi, sim, 5 for the rest of lrfdyn/."""
    parts = mod.split(".")
    if mod in SHARED or len(parts) < 2 or parts[1] in BASE or parts[1] == "__init__":
        return 0
    if parts[1] in STAGES:
        return 1 + STAGES.index(parts[1])
    return len(STAGES) + 1


def _resolve(mod: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _cycle_in(comp: list[str], edges: dict[str, set[str]]) -> list[str]:
    """A closed path through the first module of a strongly connected component."""
    members = set(comp)
    start = comp[0]
    parent: dict[str, str] = {}
    stack = [start]
    while stack:  # breadth-first from start, back to start
        nxt = []
        for v in stack:
            for w in sorted(edges[v] & members):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if w not in parent:
                    parent[w] = v
                    nxt.append(w)
        stack = nxt
    return comp  # pragma: no cover (a component of size > 1 always closes)


def analyze(root: Path) -> Graph:
    """Parse every module of the checkout at ``root`` and find what breaks the rules."""
    files = [p for d in ("lrfdyn", *STAGES) for p in sorted((root / d).rglob("*.py"))]
    g = Graph(modules={module_name(root, p): p for p in files})
    g.edges = {m: set() for m in g.modules}

    def target(name: str) -> str | None:
        while name and name not in g.modules:
            name = name.rpartition(".")[0]
        return name or None

    for mod, path in g.modules.items():
        text = path.read_text()
        lines = len(text.splitlines())
        if lines > MAX_LINES:
            g.long.append((mod, f"{path.relative_to(root)}: {lines} lines"))
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(text, str(path))):
            if isinstance(node, ast.Import):
                names = [(a.name, None) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                src = _resolve(mod, is_pkg, node)
                names = [(f"{src}.{a.name}", None) if f"{src}.{a.name}" in g.modules
                         else (src, a.name) for a in node.names]
            else:
                continue
            for name, attr in names:
                if not name.startswith("lrfdyn"):
                    continue
                t = target(name)
                if t is None or t == mod:
                    continue
                g.edges[mod].add(t)
                where = f"{path.relative_to(root)}:{node.lineno}"
                if attr and attr.startswith("_") and not attr.startswith("__"):
                    g.private.append((mod, f"{where} {mod} -> {t}.{attr}"))
                if rank(t) > rank(mod):
                    g.upward.append((mod, f"{where} {mod} -> {t}"))

    # Strongly connected components (Tarjan, iterative); each of size > 1 is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on: set[str] = set()
    stack: list[str] = []
    for root_mod in g.modules:
        if root_mod in index:
            continue
        work = [(root_mod, iter(sorted(g.edges[root_mod])))]
        index[root_mod] = low[root_mod] = len(index)
        stack.append(root_mod)
        on.add(root_mod)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(g.edges[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    g.cycles.append(_cycle_in(sorted(comp), g.edges))
    return g


def violations(g: Graph, known: Collection[str] = ()) -> list[str]:
    """Every broken rule as one line naming the edge (or the module), ``known`` tolerated
    for private imports and length only."""
    out = [f"cycle: {' -> '.join(c)}" for c in g.cycles]
    out += [f"upward import: {u}" for _, u in g.upward]
    out += [f"private import: {p}" for m, p in g.private if m not in known]
    out += [f"over {MAX_LINES} lines: {s}" for m, s in g.long if m not in known]
    return out


# ---------------------------------------------------------------- the checkout


@pytest.fixture(scope="module")
def graph() -> Graph:
    return analyze(ROOT)


def test_the_package_is_found(graph: Graph) -> None:
    for mod in ("lrfdyn.cli", "lrfdyn.errors", "lrfdyn.train.trainer", "lrfdyn.export.to_nir",
                "lrfdyn.loihi.lower", "lrfdyn.sim.simulate"):
        assert mod in graph.modules


def test_import_graph_follows_the_stages(graph: Graph) -> None:
    found = violations(graph, KNOWN)
    assert not found, "\n".join(found)


def test_known_list_is_not_stale(graph: Graph) -> None:
    guilty = {m for m, _ in graph.private} | {m for m, _ in graph.long}
    stale = sorted(KNOWN - guilty)
    assert not stale, f"{stale} no longer break a rule: remove them from KNOWN"


# ---------------------------------------------------------------- the checker itself


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


_CLEAN = {
    "lrfdyn/__init__.py": "",
    "lrfdyn/errors.py": "class LrfdynError(Exception):\n    pass\n",
    "lrfdyn/cli.py": "from lrfdyn.sim import run\nfrom lrfdyn.errors import LrfdynError\n",
    "train/__init__.py": "",
    "train/model.py": "from lrfdyn.loihi.fixed import WIDTH\nfrom lrfdyn import errors\n",
    "export/__init__.py": "",
    "export/to_nir.py": "from . import blocks\nfrom lrfdyn.train.model import *\n",
    "export/blocks.py": "def conv():\n    from lrfdyn.train import model\n",
    "loihi/__init__.py": "",
    "loihi/fixed.py": "WIDTH = 24\n",
    "sim/__init__.py": "",
    "sim/run.py": "from lrfdyn.loihi.fixed import WIDTH\nfrom lrfdyn.export.to_nir import *\n",
}


def test_a_clean_tree_passes(tmp_path: Path) -> None:
    g = analyze(_tree(tmp_path, _CLEAN))
    assert "lrfdyn.export.blocks" in g.edges["lrfdyn.export.to_nir"]  # relative import
    assert violations(g) == []


def test_a_lazy_cycle_is_reported_with_its_edges(tmp_path: Path) -> None:
    g = analyze(_tree(tmp_path, {
        **_CLEAN,
        "export/blocks.py": "def conv():\n    from lrfdyn.export.to_nir import GraphBuilder\n",
    }))
    assert violations(g) == [
        "cycle: lrfdyn.export.blocks -> lrfdyn.export.to_nir -> lrfdyn.export.blocks"]


def test_a_three_module_cycle_is_one_closed_path(tmp_path: Path) -> None:
    g = analyze(_tree(tmp_path, {
        **_CLEAN,
        "lrfdyn/io.py": "def read():\n    from lrfdyn import errors\n",
        "lrfdyn/errors.py": "from lrfdyn.registry import table\n",
        "lrfdyn/registry.py": "import lrfdyn.io\ntable = {}\n",
    }))
    assert violations(g) == [
        "cycle: lrfdyn.errors -> lrfdyn.registry -> lrfdyn.io -> lrfdyn.errors"]


def test_an_upward_import_is_reported_with_its_line(tmp_path: Path) -> None:
    g = analyze(_tree(tmp_path, {
        **_CLEAN,
        "lrfdyn/pipeline.py": "def demo():\n    pass\n",
        "train/model.py": "import os\n\n\ndef check():\n    from lrfdyn.pipeline import demo\n",
        "loihi/netx.py": "from lrfdyn.sim.run import WIDTH\n",
    }))
    assert violations(g) == [
        "upward import: train/model.py:5 lrfdyn.train.model -> lrfdyn.pipeline",
        "upward import: loihi/netx.py:1 lrfdyn.loihi.netx -> lrfdyn.sim.run",
    ]


def test_a_private_import_is_reported_and_known_tolerates_it(tmp_path: Path) -> None:
    g = analyze(_tree(tmp_path, {
        **_CLEAN,
        "sim/run.py": "from lrfdyn.loihi.fixed import WIDTH, _round, __version__\n",
    }))
    assert violations(g) == [
        "private import: sim/run.py:1 lrfdyn.sim.run -> lrfdyn.loihi.fixed._round"]
    assert violations(g, {"lrfdyn.sim.run"}) == []


def test_a_long_module_is_reported(tmp_path: Path) -> None:
    g = analyze(_tree(tmp_path, {**_CLEAN, "sim/run.py": "x = 1\n" * (MAX_LINES + 1)}))
    assert violations(g) == [f"over {MAX_LINES} lines: sim/run.py: {MAX_LINES + 1} lines"]
    g = analyze(_tree(tmp_path, {**_CLEAN, "sim/run.py": "x = 1\n" * MAX_LINES}))
    assert violations(g) == []


def test_known_never_tolerates_a_cycle_or_an_upward_import(tmp_path: Path) -> None:
    g = analyze(_tree(tmp_path, {
        **_CLEAN,
        "loihi/fixed.py": "from lrfdyn.train.model import x\n",
    }))
    found = violations(g, {"lrfdyn.loihi.fixed", "lrfdyn.train.model"})
    assert found == [
        "cycle: lrfdyn.loihi.fixed -> lrfdyn.train.model -> lrfdyn.loihi.fixed",
        "upward import: loihi/fixed.py:1 lrfdyn.loihi.fixed -> lrfdyn.train.model",
    ]
