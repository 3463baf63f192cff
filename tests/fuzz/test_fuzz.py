"""A generated, seeded corpus of malformed inputs, run through the real CLI entry point.

Every case is a bad checkpoint, training config, NIR file, input array, output path or
argument set, and every one must end the same way: exit 2, exactly one stderr line
``lrfdyn: error: ...``, no traceback, no output file (not even a partial or temporary
one), every input file byte-for-byte unchanged, and no child process left behind.

Most cases call :func:`lrfdyn.cli.main` in-process (fast); a few go through
``python -m lrfdyn`` to check the console path too (the long tail of those is ``slow``).
The corpus is built from :data:`SEED`; ``python tests/fuzz/test_fuzz.py`` runs it all
and prints the counts by category and by kind of failure.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import pickle
import random
import re
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nir
import numpy as np
import pytest

SEED = 17
LONG = "n" * 300  # longer than any file system's 255-byte names


# ---------------------------------------------------------------- valid bases


def base_graph(**meta) -> nir.NIRGraph:
    """A digits-shaped graph that `simulate --no-lava` and `--float --input` both run."""
    rng = np.random.default_rng(0)
    n = 10
    nodes = {
        "input": nir.Input(input_type={"input": np.array([1, 8, 8])}),
        "flat": nir.Flatten(start_dim=0, end_dim=-1, input_type={"input": np.array([1, 8, 8])}),
        "fc": nir.Affine(weight=rng.normal(0, 0.05, (n, 64)), bias=np.full(n, 1.5)),
        "lif": nir.LIF(tau=np.full(n, 2e-3), r=np.ones(n), v_leak=np.zeros(n),
                       v_threshold=np.ones(n), v_reset=np.zeros(n)),
        "output": nir.Output(output_type={"output": np.array([n])}),
    }
    edges = [("input", "flat"), ("flat", "fc"), ("fc", "lif"), ("lif", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={
        "dt": 1e-3, "timesteps": 4, "input_levels": 255, "dataset": "digits", **meta})


_CACHE: dict[str, object] = {}


def base_payload() -> dict:
    """A valid checkpoint payload of a tiny MLP (in memory; a fresh copy each call)."""
    import copy

    if "payload" not in _CACHE:
        _CACHE["payload"] = _build_payload()
    return copy.deepcopy(_CACHE["payload"])


def _build_payload() -> dict:
    import torch

    from lrfdyn.train.models import build_model, model_config

    torch.manual_seed(0)
    model = build_model("mlp", {"in_features": 64, "hidden": [8], "timesteps": 4})
    return {"format": "lrfdyn-checkpoint", "format_version": 1, "arch": "mlp",
            "config": model_config(model),
            "state_dict": {k: v.clone() for k, v in model.state_dict().items()},
            "extra": {"data": "digits", "seed": 0, "split_seed": 0, "image_shape": [1, 8, 8],
                      "epoch": 1, "trained": True}}


def base_config() -> dict:
    return {"data": "digits", "arch": "mlp", "epochs": 0, "model": {"hidden": [8]}}


def base_input() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 2, (4, 1, 8, 8)).astype(np.float64)


# ---------------------------------------------------------------- the corpus


@dataclass
class Setup:
    """What one case runs and what must hold afterwards."""

    argv: list[str]
    inputs: list[Path] = field(default_factory=list)   # must be unchanged
    outputs: list[Path] = field(default_factory=list)  # must not exist


@dataclass
class Case:
    id: str
    category: str
    make: Callable[[Path], Setup]
    slow: bool = False


def _save_ckpt(path: Path, payload) -> Path:
    import torch

    torch.save(payload, path)
    return path


def _write_graph(path: Path, graph: nir.NIRGraph) -> Path:
    nir.write(path, graph)
    return path


def _valid_files(d: Path) -> tuple[Path, Path, Path]:
    """A valid checkpoint, NIR graph and input array in ``d`` (bytes made once)."""
    if "files" not in _CACHE:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            t = Path(tmp)
            _save_ckpt(t / "ck.pt", base_payload())
            _write_graph(t / "g.nir", base_graph())
            np.save(t / "x.npy", base_input())
            _CACHE["files"] = {n: (t / n).read_bytes() for n in ("ck.pt", "g.nir", "x.npy")}
    files = _CACHE["files"]
    for name, data in files.items():  # type: ignore[union-attr]
        (d / name).write_bytes(data)
    return d / "ck.pt", d / "g.nir", d / "x.npy"


def checkpoint_cases(rng: random.Random) -> list[Case]:
    cases: list[Case] = []

    def add(name: str, mutate: Callable[[dict], object]) -> None:
        def make(d: Path, mutate=mutate) -> Setup:
            p = base_payload()
            result = mutate(p)
            ck = _save_ckpt(d / "ck.pt", p if result is None else result)
            return Setup(["export", str(ck), "-o", str(d / "m.nir")], [ck], [d / "m.nir"])
        cases.append(Case(f"ckpt-{name}", "checkpoint", make))

    for key in ("arch", "config", "state_dict", "format", "format_version"):
        add(f"no-{key}", lambda p, key=key: p.pop(key) and None)
    for i, v in enumerate([None, 5, ["mlp"], "resnet", ""]):
        add(f"arch-{i}", lambda p, v=v: p.__setitem__("arch", v))
    for i, v in enumerate([None, [], "x", 5]):
        add(f"config-{i}", lambda p, v=v: p.__setitem__("config", v))
    bad_ints = ["4", 2.5, 0, -1, None, True, 10**9, [4]]
    bad_floats = ["x", 0, -1.0, math.nan, math.inf, None, True, 0.5]
    for key in ("in_features", "num_classes", "timesteps"):
        for i, v in enumerate(bad_ints):
            add(f"cfg-{key}-{i}", lambda p, key=key, v=v: p["config"].__setitem__(key, v))
    for key in ("tau", "v_th", "init_gain"):
        for i, v in enumerate(bad_floats):
            if key != "tau" and v == 0.5:
                continue  # a threshold or gain of 0.5 is legitimate
            add(f"cfg-{key}-{i}", lambda p, key=key, v=v: p["config"].__setitem__(key, v))
    for i, v in enumerate(["x", [0], [-1], [1.5], 5, [None], [8, 8]]):
        add(f"cfg-hidden-{i}", lambda p, v=v: p["config"].__setitem__("hidden", v))
    add("cfg-unknown-key", lambda p: p["config"].__setitem__("bogus", 1))
    for i, v in enumerate([None, "x", [1], 5]):
        add(f"extra-{i}", lambda p, v=v: p.__setitem__("extra", v))
    for i, v in enumerate([[1, 8], [1, 8, 9], "x", [0, 8, 8], [1, 8, 8.5], [-1, 8, 8],
                           [3, 8, 8], [True, 8, 8]]):
        add(f"image-shape-{i}", lambda p, v=v: p["extra"].__setitem__("image_shape", v))
    for i, (k, v) in enumerate([("seed", -1), ("seed", "x"), ("split_seed", 2**63),
                                ("split_seed", 1.5), ("data", 5), ("data", None)]):
        add(f"extra-{k}-{i}", lambda p, k=k, v=v: p["extra"].__setitem__(k, v))
    for i, v in enumerate([2, "1", None, 0]):
        add(f"version-{i}", lambda p, v=v: p.__setitem__("format_version", v))

    import torch

    def sd(fn):
        def mutate(p):
            fn(p["state_dict"])
        return mutate

    keys = list(base_payload()["state_dict"])
    for k in (keys[0], keys[-1]):
        add(f"sd-drop-{k}", sd(lambda s, k=k: s.pop(k)))
    add("sd-extra-key", sd(lambda s: s.__setitem__("layers.9.weight", torch.zeros(2))))
    add("sd-int-key", sd(lambda s: s.__setitem__(5, torch.zeros(2))))
    w = next(k for k in keys if k.endswith("weight"))
    add("sd-transposed", sd(lambda s: s.__setitem__(w, s[w].T.contiguous())))
    add("sd-wrong-shape", sd(lambda s: s.__setitem__(w, torch.zeros(3, 3))))
    add("sd-scalar", sd(lambda s: s.__setitem__(w, torch.tensor(1.0))))
    for i, v in enumerate([[1.0, 2.0], "w", 3, None, {"a": torch.zeros(1)}]):
        add(f"sd-non-tensor-{i}", sd(lambda s, v=v: s.__setitem__(w, v)))
    for i, v in enumerate([math.nan, math.inf, -math.inf]):
        for k in rng.sample(keys, 2):
            def poison(s, k=k, v=v, at=rng.randrange(10**6)):
                t = s[k].clone()
                t.view(-1)[at % t.numel()] = v
                s[k] = t
            add(f"sd-nonfinite-{i}-{k}", sd(poison))
    add("sd-complex", sd(lambda s: s.__setitem__(w, s[w].to(torch.complex64))))
    add("sd-not-dict", lambda p: p.__setitem__("state_dict", [1, 2]))

    # Files that are not checkpoints at all.
    def raw(name: str, content: Callable[[Path], bytes]) -> None:
        def make(d: Path, content=content) -> Setup:
            ck = d / "ck.pt"
            ck.write_bytes(content(d))
            return Setup(["export", str(ck), "-o", str(d / "m.nir")], [ck], [d / "m.nir"])
        cases.append(Case(f"ckpt-file-{name}", "checkpoint", make))

    def real_bytes(d: Path) -> bytes:
        return _save_ckpt(d / "real.pt", base_payload()).read_bytes()

    raw("empty", lambda d: b"")
    for i in range(4):
        raw(f"random-{i}", lambda d, n=rng.randrange(1, 5000), s=rng.randrange(2**31):
            random.Random(s).randbytes(n))
    for frac in (0.1, 0.5, 0.9):
        raw(f"truncated-{frac}", lambda d, frac=frac: real_bytes(d)[: int(len(real_bytes(d))
                                                                          * frac)])
    raw("text", lambda d: b"hello world\n")
    raw("pickle-code", lambda d: pickle.dumps(os.system, protocol=4))

    def zip_garbage(d: Path) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("archive/data.pkl", b"\x80\x02garbage")
        return buf.getvalue()

    raw("zip-garbage", zip_garbage)

    def saved(obj) -> Callable[[Path], bytes]:
        def content(d: Path) -> bytes:
            return _save_ckpt(d / "tmp.pt", obj).read_bytes()
        return content

    raw("list", saved([1, 2, 3]))
    raw("tensor", saved(torch.zeros(3)))
    raw("dict-no-format", saved({"arch": "mlp"}))
    raw("format-wrong", saved({"format": "other"}))

    def path_case(name: str, where: Callable[[Path], str]) -> None:
        def make(d: Path, where=where) -> Setup:
            return Setup(["export", where(d), "-o", str(d / "m.nir")], [], [d / "m.nir"])
        cases.append(Case(f"ckpt-path-{name}", "checkpoint", make))

    path_case("missing", lambda d: str(d / "none.pt"))
    path_case("folder", lambda d: str(d))
    path_case("empty", lambda d: "")
    return cases


def config_cases(rng: random.Random) -> list[Case]:
    cases: list[Case] = []

    def add(name: str, mutate: Callable[[dict], object], fmt: str = "json") -> None:
        def make(d: Path, mutate=mutate, fmt=fmt) -> Setup:
            cfg = base_config()
            result = mutate(cfg)
            cfg = cfg if result is None else result
            path = d / f"cfg.{fmt}"
            if fmt == "json":
                path.write_text(json.dumps(cfg))
            else:
                import yaml

                path.write_text(yaml.safe_dump(cfg))
            return Setup(["train", "--config", str(path), "--out", str(d / "run")], [path],
                         [d / "run"])
        cases.append(Case(f"config-{name}", "config", make))

    def setter(key, value):
        return lambda c: c.__setitem__(key, value)

    def model(key, value):
        return lambda c: c["model"].__setitem__(key, value)

    table = {
        "epochs": ["3", 1.5, None, -1, True, [1], 10**7],
        "lr": ["x", math.nan, math.inf, 0, -1e-3, None, True],
        "batch_size": [0, -1, "8", 2.5],
        "weight_decay": [-1, math.nan, "x"],
        "seed": ["1", -1, 2**63, 1.5, None],
        "split_seed": [-1, "x", 2**40],
        "arch": [["mlp"], 5, None, "resnet", ""],
        "data": ["bogus", 5, None, ""],
        "qat_epochs": [-1, "x", 3],
        "logit_scale": [0, "x", math.inf],
        "data_dir": [5, ""],
        "model": [[], "x", 5, None],
    }
    for key, values in table.items():
        for i, v in enumerate(values):
            add(f"{key}-{i}", setter(key, v))
    mlp = {"hidden": [[0], [-4], "x", [1.5], 7, [None]], "timesteps": [0, "4", 10**8],
           "tau": [0, -1, 0.5, math.nan], "v_th": [0, math.nan, "x"], "num_classes": [0],
           "in_features": [0, 63], "bogus": [1]}
    for key, values in mlp.items():
        for i, v in enumerate(values):
            add(f"mlp-{key}-{i}", model(key, v))
    spik = {"dim": 0, "heads": 0, "attention": "bogus", "token": "x", "stem_strides": [0],
            "depth": -1, "rpe": "yes", "mlp_ratio": 0, "gate": 5, "lrf_dilations": [0]}

    def spikformer(key, value):
        def mutate(c):
            c["arch"] = "spikformer"
            c["model"] = {"dim": 16, "depth": 1, "heads": 2, "timesteps": 2,
                          "attention": "lrf_dyn", key: value}
        return mutate

    for key, v in spik.items():
        add(f"spikformer-{key}", spikformer(key, v))
    add("unknown-key", setter("bogus", 1))
    add("yaml-epochs", setter("epochs", "three"), fmt="yaml")
    add("yaml-lr", setter("lr", [1]), fmt="yaml")
    add("list", lambda c: [c])
    add("string", lambda c: "epochs: 3")
    add("number", lambda c: 5)

    def raw(name: str, text: bytes, suffix: str = "json") -> None:
        def make(d: Path, text=text, suffix=suffix) -> Setup:
            path = d / f"cfg.{suffix}"
            path.write_bytes(text)
            return Setup(["train", "--config", str(path), "--out", str(d / "run")], [path],
                         [d / "run"])
        cases.append(Case(f"config-file-{name}", "config", make))

    raw("bad-json", b"{epochs: 3")
    raw("bad-yaml", b"epochs: [3\n", "yaml")
    raw("empty-json", b"")
    raw("empty-yaml", b"", "yaml")
    raw("binary", random.Random(rng.randrange(2**31)).randbytes(300))
    raw("nan-json", b'{"epochs": NaN}')

    def missing(d: Path) -> Setup:
        return Setup(["train", "--config", str(d / "none.json"), "--out", str(d / "run")], [],
                     [d / "run"])

    def folder(d: Path) -> Setup:
        return Setup(["train", "--config", str(d), "--out", str(d / "run")], [], [d / "run"])

    cases.append(Case("config-missing", "config", missing))
    cases.append(Case("config-folder", "config", folder))
    return cases


def _array_of(graph: nir.NIRGraph, node: str, field_name: str) -> np.ndarray:
    return np.array(getattr(graph.nodes[node], field_name), dtype=np.float64)


def nir_cases(rng: random.Random) -> list[Case]:
    cases: list[Case] = []

    def add(name: str, mutate: Callable[[nir.NIRGraph], object], both: bool = False) -> None:
        def graph_file(d: Path, mutate=mutate) -> Path:
            g = base_graph()
            result = mutate(g)
            g = g if result is None else result
            return _write_graph(d / "g.nir", g)

        def sim(d: Path) -> Setup:
            g = graph_file(d)
            return Setup(["simulate", str(g), "--no-lava", "--samples", "2", "--report",
                          str(d / "r.json")], [g], [d / "r.json"])
        cases.append(Case(f"nir-{name}", "nir", sim))
        if both:
            def arr(d: Path) -> Setup:
                g = graph_file(d)
                x = d / "x.npy"
                np.save(x, base_input())
                return Setup(["simulate", str(g), "--float", "--input", str(x), "--output",
                              str(d / "y.npy")], [g, x], [d / "y.npy"])
            cases.append(Case(f"nir-float-{name}", "nir", arr))

    def set_param(node: str, name: str, value, at: int | None = None):
        def mutate(g):
            a = _array_of(g, node, name).astype(np.result_type(np.float64, type(value)))
            a.flat[at if at is not None else rng.randrange(a.size)] = value
            setattr(g.nodes[node], name, a)
        return mutate

    for node, fields in (("fc", ("weight", "bias")),
                         ("lif", ("tau", "r", "v_leak", "v_threshold", "v_reset"))):
        for name in fields:
            for i, v in enumerate([math.nan, math.inf, -math.inf]):
                add(f"{node}-{name}-nonfinite-{i}", set_param(node, name, v), both=(i == 0))
            add(f"{node}-{name}-complex", set_param(node, name, 1 + 2j), both=(name == "weight"))
    add("tau-zero", set_param("lif", "tau", 0.0))
    add("tau-negative", set_param("lif", "tau", -1e-3))

    def drop(*names):
        def mutate(g):
            nodes = {k: v for k, v in g.nodes.items() if k not in names}
            edges = [e for e in g.edges if e[0] not in names and e[1] not in names]
            return nir.NIRGraph(nodes=nodes, edges=edges, metadata=g.metadata, type_check=False)
        return mutate

    add("no-input", drop("input"), both=True)
    add("no-output", drop("output"), both=True)
    add("no-input-no-output", drop("input", "output"))

    def bias_len(n):
        def mutate(g):
            g.nodes["fc"].bias = np.zeros(n)
        return mutate

    add("bias-short", bias_len(9), both=True)
    add("bias-long", bias_len(11))
    meta = {"dt": [0.0, -1e-3, math.nan, math.inf, np.array([1e-3, 1e-3]), "x"],
            "timesteps": [0, -1, 2.5, "4", 10**7, 10**12, np.array([4, 4]), math.nan],
            "split_seed": ["x", -1, 1.5, 2**40],
            "input_levels": [0, -1, "x", math.nan],
            "dataset": [5]}
    for key, values in meta.items():
        for i, v in enumerate(values):
            add(f"meta-{key}-{i}", lambda g, key=key, v=v: g.metadata.__setitem__(key, v),
                both=(key == "dt" and i < 2))
    for i, name in enumerate(["a\nb", "tab\there", "\x1b[31mred", "del\x7fx"]):
        def rename(g, name=name):
            nodes = {(name if k == "lif" else k): v for k, v in g.nodes.items()}
            edges = [tuple(name if e == "lif" else e for e in edge) for edge in g.edges]
            return nir.NIRGraph(nodes=nodes, edges=edges, metadata=g.metadata,
                                type_check=False)
        add(f"name-control-{i}", rename)

    def raw(name: str, content: Callable[[Path], bytes]) -> None:
        def make(d: Path, content=content) -> Setup:
            g = d / "g.nir"
            g.write_bytes(content(d))
            return Setup(["simulate", str(g), "--no-lava", "--samples", "2", "--report",
                          str(d / "r.json")], [g], [d / "r.json"])
        cases.append(Case(f"nir-file-{name}", "nir", make))

    def real(d: Path) -> bytes:
        return _write_graph(d / "real.nir", base_graph()).read_bytes()

    raw("empty", lambda d: b"")
    for i in range(4):
        raw(f"random-{i}", lambda d, n=rng.randrange(1, 4000), s=rng.randrange(2**31):
            random.Random(s).randbytes(n))
    for frac in (0.2, 0.6, 0.95):
        raw(f"truncated-{frac}", lambda d, frac=frac: real(d)[: int(len(real(d)) * frac)])
    raw("text", lambda d: b"not hdf5 at all\n")

    def empty_h5(d: Path) -> bytes:
        import h5py

        with h5py.File(d / "e.h5", "w") as f:
            f.create_dataset("x", data=np.zeros(3))
        return (d / "e.h5").read_bytes()

    raw("hdf5-without-graph", empty_h5)

    def npy(d: Path) -> bytes:
        np.save(d / "a.npy", np.zeros(3))
        return (d / "a.npy").read_bytes()

    raw("npy", npy)

    def path_case(name: str, where: Callable[[Path], str]) -> None:
        def make(d: Path, where=where) -> Setup:
            return Setup(["simulate", where(d), "--no-lava", "--report", str(d / "r.json")], [],
                         [d / "r.json"])
        cases.append(Case(f"nir-path-{name}", "nir", make))

    path_case("missing", lambda d: str(d / "none.nir"))
    path_case("folder", lambda d: str(d))
    path_case("empty", lambda d: "")
    return cases


def array_cases(rng: random.Random) -> list[Case]:
    cases: list[Case] = []

    def add(name: str, write: Callable[[Path], None], extra: tuple[str, ...] = ("--float",)
            ) -> None:
        def make(d: Path, write=write, extra=extra) -> Setup:
            g = _write_graph(d / "g.nir", base_graph())
            x = d / "x.npy"
            write(x)
            inputs = [g] + ([x] if x.exists() else [])
            return Setup(["simulate", str(g), *extra, "--input", str(x), "--output",
                          str(d / "y.npy")], inputs, [d / "y.npy"])
        cases.append(Case(f"array-{name}", "array", make))

    def saved(fn: Callable[[], np.ndarray], allow_pickle: bool = False):
        return lambda p: np.save(p, fn(), allow_pickle=allow_pickle)

    for i, v in enumerate([math.nan, math.inf, -math.inf]):
        for j in range(2):
            def poisoned(v=v, at=rng.randrange(4 * 64)):
                x = base_input()
                x.flat[at] = v
                return x
            add(f"nonfinite-{i}-{j}", saved(poisoned))
    add("float16-inf", saved(lambda: np.full((4, 1, 8, 8), np.inf, np.float16)))
    add("float32-nan", saved(lambda: np.full((4, 1, 8, 8), np.nan, np.float32)))
    add("complex64", saved(lambda: base_input().astype(np.complex64)))
    add("complex128", saved(lambda: base_input() + 1j))
    add("strings", saved(lambda: np.full((4, 1, 8, 8), "a")))
    add("bytes", saved(lambda: np.full((4, 1, 8, 8), b"a")))
    add("datetime", saved(lambda: np.full((4, 1, 8, 8), np.datetime64("2020-01-01"))))
    add("timedelta", saved(lambda: np.full((4, 1, 8, 8), np.timedelta64(1, "s"))))
    add("structured", saved(lambda: np.zeros((4, 1, 8, 8), dtype=[("a", "f8"), ("b", "i4")])))
    add("object", saved(lambda: np.full((4, 1, 8, 8), None, dtype=object), allow_pickle=True))
    add("void", saved(lambda: np.zeros((4, 1, 8, 8), dtype="V4")))
    add("zero-steps", saved(lambda: np.zeros((0, 1, 8, 8))))
    add("zero-batch", saved(lambda: np.zeros((4, 0, 1, 8, 8))))
    add("zero-values", saved(lambda: np.zeros((4, 1, 0, 8))))
    add("one-axis", saved(lambda: np.zeros(64)))
    add("scalar", saved(lambda: np.array(1.0)))
    add("wrong-shape", saved(lambda: np.zeros((4, 63))))
    add("wrong-shape-batched", saved(lambda: np.zeros((4, 2, 1, 8, 9))))
    add("fixed-fractional", saved(lambda: base_input() + 0.5), extra=("--fixed",))
    add("fixed-negative", saved(lambda: base_input() - 1), extra=("--fixed",))
    add("fixed-too-big", saved(lambda: base_input() * 300), extra=("--fixed",))

    def header(shape, descr="<f8", data=b""):
        def write(p: Path):
            from numpy.lib import format as npformat

            with open(p, "wb") as f:
                npformat.write_array_header_1_0(f, {"descr": descr, "fortran_order": False,
                                                    "shape": shape})
                f.write(data)
        return write

    add("header-4e12", header((62_500_000_000, 1, 8, 8)))
    add("header-huge-batch", header((4, 10**9, 1, 8, 8)))
    add("truncated-data", header((4, 1, 8, 8), data=b"\x00" * 100))
    add("empty-file", lambda p: p.write_bytes(b""))
    add("garbage", lambda p, s=rng.randrange(2**31): p.write_bytes(
        random.Random(s).randbytes(500)))
    add("bad-magic", lambda p: p.write_bytes(b"\x93NUMPX\x01\x00" + b" " * 100))
    add("bad-header", lambda p: p.write_bytes(b"\x93NUMPY\x01\x00\x10\x00{'descr': 1}    \n"))
    add("npz", lambda p: (np.savez(p.with_suffix(".tmpz"), a=np.zeros(3)),
                          p.write_bytes(p.with_suffix(".tmpz.npz").read_bytes()),
                          p.with_suffix(".tmpz.npz").unlink()))
    add("missing", lambda p: None)
    add("folder", lambda p: p.mkdir())
    return cases


def output_cases(rng: random.Random) -> list[Case]:
    """Output paths that cannot be written, or that are the command's own inputs."""
    cases: list[Case] = []
    bad_files: dict[str, Callable[[Path], tuple[str, list[Path]]]] = {
        "empty": lambda d: ("", []),
        "folder": lambda d: (str(d), []),
        "trailing-slash": lambda d: (str(d / "new") + "/", [d / "new"]),
        "too-long": lambda d: (str(d / LONG), []),
        "parent-is-file": lambda d: ((d / "blocker").write_text("x") and str(d / "blocker" / "o"),
                                     []),
        "deep-under-file": lambda d: ((d / "blocker").write_text("x")
                                      and str(d / "blocker" / "a" / "b" / "o"), []),
        "proc": lambda d: ("/proc/self/lrfdyn-out", []),
        "proc-file": lambda d: ("/proc/version", []),
        "sys": lambda d: ("/sys/lrfdyn-out", []),
        "dev-full": lambda d: ("/dev/full", []),
    }
    if os.geteuid() != 0:  # root writes into read-only folders and files anyway
        def read_only_dir(d: Path):
            (d / "ro").mkdir()
            (d / "ro").chmod(0o500)
            return str(d / "ro" / "o"), [d / "ro" / "o"]

        def read_only_file(d: Path):
            (d / "ro.out").write_text("keep")
            (d / "ro.out").chmod(0o400)
            return str(d / "ro.out"), []

        bad_files["read-only-folder"] = read_only_dir
        bad_files["read-only-file"] = read_only_file

    for name, where in bad_files.items():
        def export(d: Path, where=where) -> Setup:
            ck, _, _ = _valid_files(d)
            path, more = where(d)
            return Setup(["export", str(ck), "-o", path], [ck], more)

        def report(d: Path, where=where) -> Setup:
            _, g, _ = _valid_files(d)
            path, more = where(d)
            return Setup(["simulate", str(g), "--no-lava", "--samples", "2", "--report", path],
                         [g], more)

        def output(d: Path, where=where) -> Setup:
            _, g, x = _valid_files(d)
            path, more = where(d)
            return Setup(["simulate", str(g), "--float", "--input", str(x), "--output", path],
                         [g, x], more)

        # /dev/full refuses only the write, after the work: the long tail.
        cases += [Case(f"out-export-{name}", "output", export, slow=name == "dev-full"),
                  Case(f"out-report-{name}", "output", report, slow=name == "dev-full")]
        if name != "dev-full":  # /dev/full fails only once written: after the Lava run
            cases.append(Case(f"out-output-{name}", "output", output))

    # An output that is (or resolves to) an input of the same command.
    def same(name: str, build: Callable[[Path], Setup]) -> None:
        cases.append(Case(f"out-is-input-{name}", "output", build))

    def files(d):
        return _valid_files(d)

    same("export-ck", lambda d: (lambda ck, g, x: Setup(
        ["export", str(ck), "-o", str(ck)], [ck]))(*files(d)))
    same("export-ck-relative", lambda d: (lambda ck, g, x: Setup(
        ["export", str(ck), "-o", str(d / "." / ".." / d.name / "ck.pt")], [ck]))(*files(d)))

    def link_to(d: Path, target: Path) -> Path:
        link = d / "alias"
        link.symlink_to(target)
        return link

    def hard_to(d: Path, target: Path) -> Path:
        link = d / "hard"
        os.link(target, link)
        return link

    same("export-symlink", lambda d: (lambda ck, g, x: Setup(
        ["export", str(ck), "-o", str(link_to(d, ck))], [ck]))(*files(d)))
    same("export-hardlink", lambda d: (lambda ck, g, x: Setup(
        ["export", str(ck), "-o", str(hard_to(d, ck))], [ck]))(*files(d)))
    same("report-nir", lambda d: (lambda ck, g, x: Setup(
        ["simulate", str(g), "--no-lava", "--report", str(g)], [g]))(*files(d)))
    same("report-symlink", lambda d: (lambda ck, g, x: Setup(
        ["simulate", str(g), "--no-lava", "--report", str(link_to(d, g))], [g]))(*files(d)))
    same("output-input", lambda d: (lambda ck, g, x: Setup(
        ["simulate", str(g), "--float", "--input", str(x), "--output", str(x)], [g, x]))(
        *files(d)))
    same("output-nir", lambda d: (lambda ck, g, x: Setup(
        ["simulate", str(g), "--float", "--input", str(x), "--output", str(g)], [g, x]))(
        *files(d)))
    same("report-input", lambda d: (lambda ck, g, x: Setup(
        ["simulate", str(g), "--float", "--input", str(x), "--report", str(x)], [g, x]))(
        *files(d)))
    same("report-equals-output", lambda d: (lambda ck, g, x: Setup(
        ["simulate", str(g), "--float", "--input", str(x), "--report", str(d / "o"),
         "--output", str(d / "o")], [g, x], [d / "o"]))(*files(d)))

    def config_in_out(d: Path) -> Setup:
        run = d / "run"
        run.mkdir()
        cfg = run / "metrics.json"
        cfg.write_text(json.dumps(base_config()))
        return Setup(["train", "--config", str(cfg), "--out", str(run)], [cfg],
                     [run / "checkpoint.pt"])

    same("train-config-in-out", config_in_out)

    def profile_over_input(d: Path) -> Setup:
        out = d / "prof"
        out.mkdir()
        g = _write_graph(out / "profile.json", base_graph())
        return Setup(["profile", str(g), "--fast", "--out", str(out)], [g], [out / "profile.md"])

    same("profile-over-input", profile_over_input)

    # Output folders: train --out, profile --out, demo --out, analyze --out.
    bad_dirs: dict[str, Callable[[Path], str]] = {
        "empty": lambda d: "",
        "is-file": lambda d: (d / "f").write_text("x") and str(d / "f"),
        "parent-is-file": lambda d: (d / "f").write_text("x") and str(d / "f" / "sub"),
        "proc": lambda d: "/proc/self/lrfdyn-run",
        "too-long": lambda d: str(d / LONG),
        "dev-null": lambda d: "/dev/null",
    }
    for name, where in bad_dirs.items():
        def train(d: Path, where=where) -> Setup:
            cfg = d / "cfg.json"
            cfg.write_text(json.dumps(base_config()))
            return Setup(["train", "--config", str(cfg), "--out", where(d)], [cfg])

        def profile(d: Path, where=where) -> Setup:
            _, g, _ = _valid_files(d)
            return Setup(["profile", str(g), "--fast", "--samples", "1", "--out", where(d)], [g])

        def demo(d: Path, where=where) -> Setup:
            return Setup(["demo", "--epochs", "1", "--samples", "1", "--out", where(d)])

        def analyze(d: Path, where=where) -> Setup:
            ck, _, _ = _valid_files(d)
            return Setup(["analyze", str(ck), "--out", where(d)], [ck])

        cases += [Case(f"outdir-train-{name}", "output", train),
                  Case(f"outdir-profile-{name}", "output", profile),
                  Case(f"outdir-demo-{name}", "output", demo),
                  Case(f"outdir-analyze-{name}", "output", analyze)]
    return cases


def argument_cases(rng: random.Random) -> list[Case]:
    cases: list[Case] = []

    def add(name: str, argv: Callable[[Path, Path, Path, Path], list[str]]) -> None:
        def make(d: Path, argv=argv) -> Setup:
            ck, g, x = _valid_files(d)
            return Setup(argv(d, ck, g, x), [ck, g, x], [d / "o"])
        cases.append(Case(f"args-{name}", "arguments", make))

    add("none", lambda d, ck, g, x: [])
    add("unknown-command", lambda d, ck, g, x: ["frobnicate"])
    add("unknown-flag", lambda d, ck, g, x: ["simulate", str(g), "--frob"])
    add("simulate-no-file", lambda d, ck, g, x: ["simulate"])
    add("export-no-output", lambda d, ck, g, x: ["export", str(ck)])
    add("export-format", lambda d, ck, g, x: ["export", str(ck), "-o", str(d / "o"),
                                              "--format", "onnx"])
    for v in ("0", "-1", "x", "1e3", ""):
        add(f"samples-{v or 'empty'}", lambda d, ck, g, x, v=v: [
            "simulate", str(g), "--no-lava", "--samples", v, "--report", str(d / "o")])
    for v in ("0", "-1", "nan", "inf", "x", "-inf"):
        add(f"dt-{v}", lambda d, ck, g, x, v=v: [
            "simulate", str(g), "--float", "--input", str(x), "--dt", v, "--output",
            str(d / "o")])
    for v in ("-1", "x", "1.5", ""):
        add(f"epochs-{v or 'empty'}", lambda d, ck, g, x, v=v: [
            "train", "--epochs", v, "--out", str(d / "o")])
    for v in ("-1", str(2**63), "x"):
        add(f"seed-{v[:6]}", lambda d, ck, g, x, v=v: [
            "train", "--epochs", "0", "--seed", v, "--out", str(d / "o")])
    add("qat-negative", lambda d, ck, g, x: ["train", "--epochs", "0", "--qat-epochs", "-1",
                                             "--out", str(d / "o")])
    add("qat-over-epochs", lambda d, ck, g, x: ["train", "--epochs", "0", "--qat-epochs", "2",
                                                "--out", str(d / "o")])
    add("attention-bogus", lambda d, ck, g, x: ["train", "--attention", "bogus", "--epochs",
                                                "0", "--out", str(d / "o")])
    add("token-bogus", lambda d, ck, g, x: ["train", "--attention", "lrf_dyn", "--token", "q",
                                            "--epochs", "0", "--out", str(d / "o")])
    add("gate-bogus", lambda d, ck, g, x: ["train", "--attention", "lrf_dyn", "--gate", "kv",
                                           "--epochs", "0", "--out", str(d / "o")])
    add("arch-bogus", lambda d, ck, g, x: ["train", "--arch", "resnet", "--epochs", "0",
                                           "--out", str(d / "o")])
    add("token-without-attention", lambda d, ck, g, x: ["train", "--token", "kv", "--epochs",
                                                        "0", "--out", str(d / "o")])
    add("token-with-ssa", lambda d, ck, g, x: ["train", "--attention", "ssa", "--token", "kv",
                                               "--epochs", "0", "--out", str(d / "o")])
    add("gate-with-statten", lambda d, ck, g, x: ["train", "--attention", "statten", "--gate",
                                                  "q", "--epochs", "0", "--out", str(d / "o")])
    add("mlp-with-attention", lambda d, ck, g, x: ["train", "--arch", "mlp", "--attention",
                                                   "ssa", "--epochs", "0", "--out",
                                                   str(d / "o")])
    add("data-bogus", lambda d, ck, g, x: ["train", "--data", "bogus", "--epochs", "0",
                                           "--out", str(d / "o")])
    add("resume-epochs-0", lambda d, ck, g, x: ["train", "--resume", "--epochs", "0", "--out",
                                                str(d / "o")])
    add("mode-bogus", lambda d, ck, g, x: ["simulate", str(g), "--mode", "bogus"])
    add("device-bogus", lambda d, ck, g, x: ["simulate", str(g), "--device", "tpu"])
    add("convention-bogus", lambda d, ck, g, x: ["simulate", str(g), "--float", "--input",
                                                 str(x), "--convention", "bogus", "--output",
                                                 str(d / "o")])
    add("float-without-input", lambda d, ck, g, x: ["simulate", str(g), "--float", "--output",
                                                    str(d / "o")])
    add("input-without-mode", lambda d, ck, g, x: ["simulate", str(g), "--input", str(x),
                                                   "--output", str(d / "o")])
    add("float-and-fixed", lambda d, ck, g, x: ["simulate", str(g), "--float", "--fixed",
                                                "--input", str(x)])
    add("dendritic-on-mlp", lambda d, ck, g, x: ["simulate", str(g), "--mode", "dendritic",
                                                 "--no-lava", "--report", str(d / "o")])
    add("profile-sample-negative", lambda d, ck, g, x: ["profile", str(g), "--sample", "-1",
                                                        "--out", str(d / "o")])
    add("profile-samples-0", lambda d, ck, g, x: ["profile", str(g), "--samples", "0",
                                                  "--out", str(d / "o")])
    add("deploy-no-hardware", lambda d, ck, g, x: ["deploy", str(g)])
    add("deploy-dry-run-missing", lambda d, ck, g, x: ["deploy", "--dry-run",
                                                       str(d / "none.nir")])
    add("demo-samples-0", lambda d, ck, g, x: ["demo", "--samples", "0", "--out", str(d / "o")])
    add("demo-epochs-0", lambda d, ck, g, x: ["demo", "--epochs", "0", "--out", str(d / "o")])
    add("analyze-samples-0", lambda d, ck, g, x: ["analyze", str(ck), "--samples", "0",
                                                  "--out", str(d / "o")])
    add("analyze-mlp", lambda d, ck, g, x: ["analyze", str(ck), "--out", str(d / "o")])
    add("analyze-missing", lambda d, ck, g, x: ["analyze", str(d / "none.pt"), "--out",
                                                str(d / "o")])
    add("export-nir-as-checkpoint", lambda d, ck, g, x: ["export", str(g), "-o", str(d / "o")])
    add("simulate-checkpoint-as-nir", lambda d, ck, g, x: ["simulate", str(ck), "--no-lava",
                                                           "--report", str(d / "o")])
    add("simulate-npy-as-input-nir", lambda d, ck, g, x: ["simulate", str(g), "--float",
                                                          "--input", str(ck), "--output",
                                                          str(d / "o")])
    return cases


def corpus() -> list[Case]:
    rng = random.Random(SEED)
    cases = (checkpoint_cases(rng) + config_cases(rng) + nir_cases(rng) + array_cases(rng)
             + output_cases(rng) + argument_cases(rng))
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    return cases


CASES = corpus()
#: Cases also run through ``python -m lrfdyn`` (a subprocess, ~4 CPU s each for the
#: imports): three by default, every tenth case in the slow tail.
SUBPROCESS_DEFAULT = [next(c for c in CASES if c.category == cat)
                      for cat in ("checkpoint", "nir", "array")]
SUBPROCESS_SLOW = CASES[5::10]


# ---------------------------------------------------------------- running one case


def _digest(p: Path) -> str | None:
    try:
        return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
    except OSError:
        return None


def _children() -> set[int]:
    me = os.getpid()
    kids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == me and b"resource_tracker" not in _cmdline(entry):
                kids.add(int(entry))  # multiprocessing's one tracker lives as long as we do
    return kids


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _tree(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*")} if d.exists() else set()


@dataclass
class Outcome:
    code: int | None
    err: str
    traceback: bool = False
    problems: list[str] = field(default_factory=list)


def run_case(case: Case, root: Path, subprocess_mode: bool = False) -> Outcome:
    d = root / re.sub(r"[^A-Za-z0-9_.-]", "_", case.id)
    d.mkdir(parents=True, exist_ok=True)
    setup = case.make(d)
    before = {p: _digest(p) for p in setup.inputs}
    files_before = _tree(d)
    kids_before = _children()
    out = Outcome(code=None, err="")
    if subprocess_mode:
        proc = subprocess.run([sys.executable, "-m", "lrfdyn", *setup.argv], cwd=d,
                              capture_output=True, text=True, timeout=300)
        out.code, out.err = proc.returncode, proc.stderr
        out.traceback = "Traceback" in proc.stderr
    else:
        from lrfdyn.cli import main

        err, sink = io.StringIO(), io.StringIO()
        cwd = os.getcwd()
        try:
            os.chdir(d)
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(sink):
                try:
                    out.code = main(setup.argv)
                except SystemExit as exc:
                    out.code = exc.code if isinstance(exc.code, int) else 2
                except BaseException as exc:  # noqa: BLE001 - a traceback is the finding
                    out.traceback = True
                    out.code = None
                    print(f"{type(exc).__name__}: {exc}", file=err)
        finally:
            os.chdir(cwd)
        out.err = err.getvalue()
    lines = out.err.strip().splitlines()
    if out.traceback:
        out.problems.append("traceback")
    if out.code == 0:
        out.problems.append("exit-0")
    elif out.code != 2:
        out.problems.append(f"exit-{out.code}")
    if len(lines) != 1:
        out.problems.append("multi-line" if lines else "no-message")
    elif not lines[0].startswith("lrfdyn: error: "):
        out.problems.append("not-lrfdyn-error")
    for p in setup.outputs:
        if os.path.lexists(p):
            out.problems.append(f"partial:{p.name}")
    new = _tree(d) - files_before
    if any(n.endswith(".tmp") or "/." in "/" + n for n in new):
        out.problems.append(f"partial:{sorted(new)}")
    for p, digest in before.items():
        if _digest(p) != digest:
            out.problems.append(f"input-changed:{p.name}")
    if _children() - kids_before:
        out.problems.append("leftover-process")
    return out


# ---------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def test_the_corpus_is_large_and_covers_every_category() -> None:
    by = {}
    for c in CASES:
        by[c.category] = by.get(c.category, 0) + 1
    assert len(CASES) >= 300, len(CASES)
    assert set(by) == {"checkpoint", "config", "nir", "array", "output", "arguments"}, by


def test_the_valid_bases_run(root: Path, capsys) -> None:
    """The corpus can fail: its unmutated inputs do run (exit 0) through the same paths."""
    from lrfdyn.cli import main

    d = root / "bases"
    d.mkdir()
    ck, g, x = _valid_files(d)
    assert main(["export", str(ck), "-o", str(d / "m.nir")]) == 0
    assert main(["simulate", str(g), "--no-lava", "--samples", "2", "--report",
                 str(d / "r.json")]) == 0
    cfg = d / "cfg.json"
    cfg.write_text(json.dumps(base_config()))
    assert main(["train", "--config", str(cfg), "--out", str(d / "run")]) == 0
    assert (d / "m.nir").exists() and (d / "r.json").exists() and (d / "run").is_dir()


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.slow
                                               else []) for c in CASES])
def test_case(case: Case, root: Path) -> None:
    out = run_case(case, root)
    assert not out.problems, f"{case.id}: {out.problems}; code {out.code}; stderr: {out.err!r}"


@pytest.mark.parametrize("case", SUBPROCESS_DEFAULT, ids=[c.id for c in SUBPROCESS_DEFAULT])
def test_case_through_the_console(case: Case, root: Path) -> None:
    out = run_case(case, root / "console", subprocess_mode=True)
    assert not out.problems, f"{case.id}: {out.problems}; code {out.code}; stderr: {out.err!r}"


@pytest.mark.slow
@pytest.mark.parametrize("case", SUBPROCESS_SLOW, ids=[c.id for c in SUBPROCESS_SLOW])
def test_case_through_the_console_slow(case: Case, root: Path) -> None:
    out = run_case(case, root / "console-slow", subprocess_mode=True)
    assert not out.problems, f"{case.id}: {out.problems}; code {out.code}; stderr: {out.err!r}"


if __name__ == "__main__":  # python tests/fuzz/test_fuzz.py: the counts for a report
    import collections
    import tempfile
    import time

    t0, c0 = time.perf_counter(), time.process_time()
    tally: collections.Counter[str] = collections.Counter()
    per_cat: collections.Counter[str] = collections.Counter()
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            per_cat[case.category] += 1
            res = run_case(case, Path(tmp))
            for prob in res.problems:
                tally[prob.split(":")[0]] += 1
            if res.problems:
                print(f"FAIL {case.id}: {res.problems} {res.err.strip()[:300]!r}")
    print(json.dumps({"cases": len(CASES), "by_category": per_cat, "problems": tally,
                      "seconds": round(time.perf_counter() - t0, 1),
                      "cpu_seconds": round(time.process_time() - c0, 1)}, indent=1))
