"""``lrfdyn``: train | export | simulate | profile | deploy | demo.

Each command is one handler in :data:`COMMANDS`: it parses its arguments, calls
one library function and prints (a human summary, or JSON with ``--json``).
User errors (:class:`~lrfdyn.errors.LrfdynError`) print one line and exit 2;
``--debug`` shows their traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lrfdyn.errors import LrfdynError, UnsupportedNodeError

Handler = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Handler, str]] = {}


def command(name: str, help_text: str) -> Callable[[Callable], Callable]:
    def deco(fn: Callable) -> Callable:
        COMMANDS[name] = (fn.add_arguments, fn, help_text)  # type: ignore[attr-defined]
        return fn

    return deco


def _args(adder: Callable[[argparse.ArgumentParser], None]) -> Callable[[Callable], Callable]:
    def deco(fn: Callable) -> Callable:
        fn.add_arguments = adder  # type: ignore[attr-defined]
        return fn

    return deco


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors as one line, ``lrfdyn: error: ...``, exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        msg = " ".join(message.split())
        self.exit(2, f"lrfdyn: error: {msg}; see `{self.prog} --help`\n")


def _int_type(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high], refused with the range otherwise."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if v < low or (high is not None and v > high):
            rng = f"at least {low}" if high is None else f"in {low}..{high}"
            raise argparse.ArgumentTypeError(f"{v} must be {rng}")
        return v

    parse.__name__ = "integer"
    return parse


def _positive_float(text: str) -> float:
    import math

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number > 0")
    return v


_positive_float.__name__ = "number"
#: Seeds fit numpy's and torch's generators.
_SEED = _int_type(0, 2**32 - 1)


# ---------------------------------------------------------------- train


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML or JSON training config; flags override it")
    p.add_argument("--data", choices=["digits", "mnist5k", "mnist", "cifar10", "cifar100",
                                      "imagenet"],
                   help="data set (imagenet: sizing with --epochs 0 only)")
    p.add_argument("--data-dir", help="folder holding the data set's standard files")
    p.add_argument("--arch", choices=["mlp", "spikformer"],
                   help="architecture (default: mlp; spikformer with --attention)")
    p.add_argument("--attention", choices=["ssa", "lrf_ssa", "lrf_dyn", "statten", "a2os2a"],
                   help="train a Spikformer with this attention block (implies --arch "
                        "spikformer; all five export to NIR)")
    p.add_argument("--token", choices=["v", "kv"],
                   help="LRF-Dyn token input: v (u = V, default) or kv (u = K AND V)")
    p.add_argument("--gate", choices=["none", "q"],
                   help="LRF-Dyn output gate: none (default) or q (AND with Q)")
    p.add_argument("--epochs", type=_int_type(0, 10**6),
                   help="epochs to train; 0 writes an initialized, untrained OUT/checkpoint.pt "
                        "without reading any data (to size a model for Loihi 2 first)")
    p.add_argument("--qat-epochs", type=_int_type(0, 10**6),
                   help="how many of the last epochs train through 8-bit fake-quantized weights")
    p.add_argument("--seed", type=_SEED)
    p.add_argument("--out", help="output folder (checkpoint.pt, metrics.json)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")


@command("train", "train a spiking network; report float and Loihi-integer accuracy")
@_args(_train_args)
def cmd_train(a: argparse.Namespace) -> int:
    from lrfdyn.io import write_json
    from lrfdyn.train.trainer import TrainConfig, train

    from lrfdyn.validate import check_output_dir

    cfg_dict: dict[str, Any] = _read_config(a.config) if a.config else {}
    for key in ("data", "data_dir", "arch", "epochs", "qat_epochs", "seed", "out"):
        if getattr(a, key) is not None:
            cfg_dict[key] = getattr(a, key)
    _attention_flags(a, cfg_dict)
    if a.epochs == 0 and a.qat_epochs is None:
        cfg_dict.pop("qat_epochs", None)  # a config's QAT epochs lie in the epochs not run
    cfg = TrainConfig.from_dict(cfg_dict)
    check_output_dir(cfg.out, "--out", inputs=[a.config],
                     files=("checkpoint.pt", "metrics.json", "train_config.json"))
    if cfg.epochs == 0:
        return _train_initialize(a, cfg)
    from lrfdyn.pipeline import checkpoint_to_nir, quantized_accuracy  # the Lava side

    result = train(cfg, resume=a.resume, progress=not a.json)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under torchrun only rank 0 evaluates and reports
    q_acc: float | None
    try:
        q_acc = quantized_accuracy(checkpoint_to_nir(result.checkpoint), cfg.data,
                                   cfg.data_dir, cfg.split_seed)
        q_note = ""
    except UnsupportedNodeError as exc:  # e.g. attention blocks NIR cannot express yet
        q_acc, q_note = None, f"not available: {exc}"
    metrics = {"checkpoint": str(result.checkpoint), "float_accuracy": result.float_accuracy,
               "quantized_accuracy": q_acc, "epochs": cfg.epochs}
    if q_note:
        metrics["quantized_accuracy_note"] = q_note
    write_json(Path(cfg.out) / "metrics.json", metrics)
    if a.json:
        _print_json(metrics)
    else:
        print(f"checkpoint          {result.checkpoint}")
        print(f"float accuracy      {100 * result.float_accuracy:.2f} %")
        if q_acc is None:
            print(f"Loihi-int accuracy  {q_note}")
        else:
            print(f"Loihi-int accuracy  {100 * q_acc:.2f} % (integer reference)")
    return 0


def _attention_flags(a: argparse.Namespace, cfg: dict[str, Any]) -> None:
    """``--attention/--token/--gate``: a Spikformer with that block, set in its model config."""
    from lrfdyn.errors import ValidationError

    if a.attention is None:
        if a.token or a.gate:
            arch = cfg.get("arch", "mlp")
            attention = (cfg.get("model") or {}).get("attention") if isinstance(
                cfg.get("model"), dict) else None
            if arch != "spikformer" or attention != "lrf_dyn":
                raise ValidationError("--token and --gate set LRF-Dyn's options; add "
                                      "--attention lrf_dyn")
    else:
        if cfg.get("arch", "spikformer") != "spikformer":
            raise ValidationError(f"--attention {a.attention} selects a Spikformer, but the "
                                  f"architecture is {cfg['arch']!r}; drop --arch or use "
                                  "--arch spikformer")
        if (a.token or a.gate) and a.attention != "lrf_dyn":
            raise ValidationError(f"--token and --gate are LRF-Dyn's options, not "
                                  f"{a.attention}'s; use --attention lrf_dyn or drop them")
        cfg["arch"] = "spikformer"
    if a.attention is None and not (a.token or a.gate):
        return
    model = cfg.get("model", {})
    if not isinstance(model, dict):
        raise ValidationError("the config's model must be a mapping of spikformer keys")
    model = dict(model)
    for key in ("attention", "token", "gate"):
        if getattr(a, key) is not None:
            model[key] = getattr(a, key)
    cfg["model"] = model


def _train_initialize(a: argparse.Namespace, cfg: Any) -> int:
    """``train --epochs 0``: an initialized, untrained checkpoint from the config alone."""
    from lrfdyn.errors import ValidationError
    from lrfdyn.io import write_json
    from lrfdyn.train.trainer import initialize

    if a.resume:
        raise ValidationError("--resume with --epochs 0: there is nothing to train; drop one")
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under torchrun only rank 0 writes
    info = initialize(cfg).to_dict()
    # Replaces any metrics.json of an earlier run, so none sits beside untrained weights.
    write_json(Path(cfg.out) / "metrics.json", info)
    if a.json:
        _print_json(info)
    else:
        c, h, w = info["image_shape"]
        print(f"wrote {info['checkpoint']}: {info['arch']}, {info['parameters']:,} parameters, "
              f"input {c}x{h}x{w}, {info['num_classes']} classes; UNTRAINED (epochs 0, "
              "trained: false, initialized weights, no data read)")
    return 0


# ---------------------------------------------------------------- analyze


def _analyze_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="spikformer checkpoint.pt written by `lrfdyn train`")
    p.add_argument("--out", help="output folder (default: <checkpoint folder>/analysis)")
    p.add_argument("--samples", type=_int_type(1), default=64,
                   help="test samples to run (default 64)")
    p.add_argument("--data-dir", help="folder holding the data set's standard files")


@command("analyze", "measure each attention layer's entropy and token-grid distance")
@_args(_analyze_args)
def cmd_analyze(a: argparse.Namespace) -> int:
    from lrfdyn.train.analysis import analyze_checkpoint
    from lrfdyn.validate import check_output_dir

    out = a.out if a.out is not None else str(Path(a.checkpoint).parent / "analysis")
    check_output_dir(out, "--out", inputs=[a.checkpoint],
                     files=("attention_locality.json", "attention_locality.png"))
    summary = analyze_checkpoint(a.checkpoint, a.out, a.samples, a.data_dir)
    if a.json:
        _print_json(summary)
        return 0
    print(f"{summary['attention']} on {summary['samples']} {summary['data']} test samples, "
          f"grid {summary['grid'][0]}x{summary['grid'][1]}")
    print(f"{'layer':16s} {'entropy':>8s} {'(unif)':>7s} {'distance':>9s} {'(unif)':>7s}")
    for layer in summary["layers"]:
        print(f"{layer['layer']:16s} {layer['entropy']:8.3f} {layer['uniform_entropy']:7.3f} "
              f"{layer['distance']:9.3f} {layer['uniform_distance']:7.3f}")
    print(f"wrote {summary['json']} and {summary['png']}")
    return 0


def _read_config(path: str) -> dict[str, Any]:
    from lrfdyn.errors import ValidationError

    p = Path(path)
    if not p.is_file():
        raise ValidationError(f"{str(p)!r}: no such config file")
    try:
        text = p.read_text()
    except (OSError, UnicodeError) as exc:
        raise ValidationError(f"{str(p)!r}: cannot read the config ({exc})") from None
    try:
        if p.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # yaml and json raise different types
        detail = " ".join(str(exc).split())[:160]
        raise ValidationError(f"{str(p)!r}: cannot parse config ({detail})") from None
    if not isinstance(data, dict):
        raise ValidationError(f"{p}: a config must be a mapping of keys to values")
    return data


# ---------------------------------------------------------------- export


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="checkpoint.pt written by `lrfdyn train`")
    p.add_argument("-o", "--output", required=True, help="output file (.nir or .h5)")
    p.add_argument("--format", default="nir", choices=["nir", "netx"],
                   help="nir (default) or lava-dl netx HDF5")


@command("export", "write a checkpoint's network as NIR (or lava-dl netx HDF5)")
@_args(_export_args)
def cmd_export(a: argparse.Namespace) -> int:
    from lrfdyn.pipeline import export
    from lrfdyn.validate import check_output_file

    check_output_file(a.output, "-o/--output", inputs=[a.checkpoint])
    info = export(a.checkpoint, a.output, a.format)
    if a.json:
        _print_json(info)
    else:
        print(f"wrote {info['path']} ({info['format']}, {info['nodes']} nodes, "
              f"{info['seconds']:.2f} s)")
    return 0


# ---------------------------------------------------------------- simulate


def _graph_and_data_args(p: argparse.ArgumentParser, samples: int) -> None:
    """The NIR file and the test samples to run it on (simulate, profile, deploy)."""
    p.add_argument("nir_file", help="NIR graph written by `lrfdyn export`")
    p.add_argument("--data", help="data set (default: the one the model was trained on)")
    p.add_argument("--data-dir", help="folder holding the data set's standard files")
    p.add_argument("--samples", type=_int_type(1), default=samples,
                   help=f"test samples to run (default {samples})")


def _simulate_args(p: argparse.ArgumentParser) -> None:
    _graph_and_data_args(p, samples=100)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="torch device of the integer reference (default cpu, the contract)")
    p.add_argument("--no-lava", action="store_true",
                   help="run only the integer reference (counts without Lava)")
    p.add_argument("--mode", choices=("parallel", "dendritic"), default="parallel",
                   help="parallel: a neuron per token (default); dendritic: LRF-Dyn blocks "
                        "stream one token per step through k·d compartments")
    p.add_argument("--report", help="also write the JSON report to this file")
    _max_memory_arg(p)
    p.add_argument("--workers", type=_int_type(1), default=1,
                   help="worker processes that share the samples, each with its own Lava "
                        "runtime (default 1); the merged report equals one run's")
    p.add_argument("--cluster", metavar="ADDRESS",
                   help="shard over Ray instead: ray://HOST:PORT, auto (this machine's Ray "
                        "cluster) or local (one started here, --workers CPUs)")
    p.add_argument("--copies", type=_copies, default=None, metavar="N|auto",
                   help="samples side by side in each Lava network (default auto: sized by "
                        "the network); 1 runs one sample at a time")
    g = p.add_argument_group("any NIR graph on an input array (snnTorch, Norse, ...)")
    # dest "precision", not "mode": --mode names the lowering of lrfdyn's own transformers.
    precision = g.add_mutually_exclusive_group()
    precision.add_argument("--float", dest="precision", action="store_const", const="float",
                           help="Lava floating_pt; must equal the NIR semantics spike for spike")
    precision.add_argument("--fixed", dest="precision", action="store_const", const="fixed",
                           help="Loihi integers; reports quantization and its spike agreement")
    g.add_argument("--input", help="input array .npy, (T, ...) or (T, B, ...)")
    g.add_argument("--output", help="write the Output node's spikes here (.npy)")
    g.add_argument("--convention", default="nir",
                   help="how the producer discretizes NIR: nir (default), snntorch, norse, "
                        "spikingjelly, sinabs, rockpool (README: Discretization)")
    g.add_argument("--dt", type=_positive_float, help="time step in s (default: graph metadata, "
                   "else the convention's)")
    g.add_argument("--calibrate", action="store_true",
                   help="--fixed only: size each layer's registers from the float model's "
                        "peaks on this input (x1.5) instead of the worst case")


@command("simulate", "run a NIR graph on Lava and check it spike by spike")
@_args(_simulate_args)
def cmd_simulate(a: argparse.Namespace) -> int:
    from lrfdyn.io import write_json
    from lrfdyn.pipeline import run_dendritic, run_simulation

    _check_simulate_outputs(a)
    if a.precision or a.input:
        report = _simulate_array(a)
    else:
        if a.mode == "dendritic":
            report = run_dendritic(a.nir_file, data=a.data, data_dir=a.data_dir,
                                   samples=a.samples, use_lava=not a.no_lava,
                                   progress=not a.json, workers=a.workers,
                                   cluster=a.cluster, copies=a.copies)
        else:
            report = run_simulation(a.nir_file, data=a.data, data_dir=a.data_dir,
                                    samples=a.samples, use_lava=not a.no_lava,
                                    progress=not a.json, device=_device(a.device),
                                    workers=a.workers, cluster=a.cluster, copies=a.copies)
    if a.report:
        write_json(a.report, report.to_dict())
    if a.json:
        _print_json(report.to_dict())
    else:
        print(report.summary())
    return 0 if not report.mismatches else 1


def _copies(text: str) -> int | None:
    """``--copies``: a count >= 1, or ``auto`` (None: chosen from the network's size)."""
    return None if text == "auto" else _int_type(1)(text)


def _check_simulate_outputs(a: argparse.Namespace) -> None:
    """--report and --output: writable, distinct, and none of them an input (before any work)."""
    from lrfdyn.errors import OutputPathError
    from lrfdyn.validate import check_output_file

    inputs = [a.nir_file, a.input]
    if a.report is not None:
        check_output_file(a.report, "--report", inputs=inputs)
    if a.output is not None:
        check_output_file(a.output, "--output", inputs=inputs)
        if a.report is not None and os.path.realpath(a.report) == os.path.realpath(a.output):
            raise OutputPathError("--report and --output name the same file; give two paths")


def _device(name: str) -> str:
    """A torch device for the integer reference, refused in one line if absent."""
    from lrfdyn.errors import ValidationError

    if name == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ValidationError("--device cuda: no CUDA device is available here; "
                                  "use --device cpu (the CPU result is the contract)")
    return name


def _simulate_array(a: argparse.Namespace) -> Any:
    """``simulate graph.nir --float|--fixed --input x.npy``: any producer's graph."""
    from lrfdyn.errors import ValidationError
    from lrfdyn.pipeline import run_nir_on_array

    if not (a.precision and a.input):
        raise ValidationError("running a graph on an input array needs both --float or "
                              "--fixed and --input x.npy")
    if a.calibrate and a.precision != "fixed":
        raise ValidationError("--calibrate sizes Loihi's integer registers; use it with --fixed")
    return run_nir_on_array(a.nir_file, a.input, a.output, mode=a.precision,
                            convention=a.convention, dt=a.dt, calibrate=a.calibrate)


# ---------------------------------------------------------------- deploy


def _deploy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true",
                   help="only map the network onto Loihi 2 cores and chips and print it (no "
                        "hardware needed); exit 1 if it does not fit one chip")
    p.add_argument("--conv-storage", choices=("channels", "kernel"), default="channels",
                   help="--dry-run's estimate of a conv kernel on each core it serves: the "
                        "filters of the output channels on that core (default), or the "
                        "whole kernel (conservative)")
    p.add_argument("--all-layers", action="store_true",
                   help="--dry-run lists every layer (default: the 20 with the most cores "
                        "and a total)")
    p.add_argument("--mode", choices=("parallel", "dendritic"), default="parallel",
                   help="--dry-run maps the parallel lowering (default) or the one dendritic "
                        "network (per-token layers, serializers, k·d compartments, "
                        "deserializers)")
    _graph_and_data_args(p, samples=100)


@command("deploy", "run on Loihi 2 hardware (needs lava-loihi and a Loihi 2 system)")
@_args(_deploy_args)
def cmd_deploy(a: argparse.Namespace) -> int:
    if a.dry_run:
        from lrfdyn.loihi.resources import map_to_cores
        from lrfdyn.sim.simulate import load_and_lower

        net = load_and_lower(a.nir_file)[1]
        if a.mode == "dendritic":
            from lrfdyn.loihi.dendritic import lower_dendritic
            from lrfdyn.loihi.dendritic_network import as_lowered, lower_network
            from lrfdyn.pipeline import read_graph

            net = as_lowered(lower_network(net, lower_dendritic(read_graph(a.nir_file), net)))
        mapping = map_to_cores(net, conv_storage=a.conv_storage)
        if a.json:
            _print_json(mapping.to_dict())
        else:
            print(mapping.summary(max_layers=None if a.all_layers else 20))
        return 0 if mapping.fits_one_chip else 1
    if a.mode == "dendritic":
        from lrfdyn.errors import HardwareUnavailableError

        raise HardwareUnavailableError(
            "dendritic mode runs lrfdyn's own ClockedLIF and compartment neurons, which need "
            "Loihi 2 microcode; map it with --dry-run, run it with `simulate --mode dendritic`")
    from lrfdyn.loihi.hardware import require_loihi2

    require_loihi2()  # before reading or building anything: one line, no processes
    from lrfdyn.loihi.resources import map_to_cores, require_fit
    from lrfdyn.pipeline import progress_bar, held_out_samples
    from lrfdyn.sim.profile import profile
    from lrfdyn.sim.simulate import load_and_lower

    graph, net = load_and_lower(a.nir_file)
    require_fit(map_to_cores(net))
    images, labels, _ = held_out_samples(graph, a.data, a.data_dir, a.samples)
    with progress_bar("Loihi 2", len(images), not a.json) as tick:
        report = profile(net, images.reshape(len(images), -1), labels, hardware=True,
                         on_sample=tick)
    if a.json:
        _print_json(report.to_dict())
    else:
        print(report.summary())
    return 0


# ---------------------------------------------------------------- profile


def _max_memory_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-memory", metavar="SIZE",
                   help="memory the run may use, e.g. 16G (default 8G); simulate cuts a "
                        "run estimated above it into sample shards that fit, and a run "
                        "that cannot fit is refused before it starts, with the estimate")


def _profile_args(p: argparse.ArgumentParser) -> None:
    _graph_and_data_args(p, samples=20)
    p.add_argument("--fast", action="store_true",
                   help="count on the integer reference instead of Lava (identical counts)")
    p.add_argument("--sample", type=_int_type(0), default=0,
                   help="sample drawn in the raster (default 0)")
    p.add_argument("--out", help="output folder (default: <nir stem>_profile/ beside the file)")
    _max_memory_arg(p)
    p.add_argument("--memory", action="store_true",
                   help="only compare attention memory: SSA, LRF-SSA, LRF-Dyn parallel and "
                        "dendritic, at this graph's scale and at Spikformer-8-512 scale, "
                        "every row counted on a lowered network (SSA and LRF-SSA at the "
                        "paper's scale: minutes and about 7 GB each)")


@command("profile", "count spikes, SynOps, memory; estimate energy; map onto Loihi 2 cores")
@_args(_profile_args)
def cmd_profile(a: argparse.Namespace) -> int:
    from lrfdyn.errors import ValidationError
    from lrfdyn.pipeline import progress_bar, held_out_samples
    from lrfdyn.sim.profile import default_out_dir, profile, write_profile
    from lrfdyn.sim.simulate import load_and_lower, read_graph

    from lrfdyn.validate import check_output_dir

    try:
        out = a.out if a.out is not None else default_out_dir(a.nir_file)
    except ValueError:  # "" or "/": no file name to put a folder beside
        raise ValidationError(f"{a.nir_file!r}: not a NIR file path; give the .nir file "
                              "written by `lrfdyn export`") from None
    check_output_dir(out, "--out", inputs=[a.nir_file], files=(
        "memory.json", "memory.md", "memory_small.png", "memory_paper.png") if a.memory else (
        "profile.json", "profile.md", "raster.png", "firing_rate.png", "synops.png",
        "memory.png"))
    out = Path(out)
    if a.memory:
        from lrfdyn.sim.memory import markdown, memory_report, write_memory

        # The paper-scale rows come from lowering Spikformer-8-512s: LRF-Dyn ~90 s and
        # 2.5 GB, SSA and LRF-SSA (120 M neurons each) 6-11 min and ~7 GB each, measured.
        mem = memory_report(read_graph(a.nir_file), progress=None if a.json else (
            lambda msg: print(msg, file=sys.stderr, flush=True)))
        files = write_memory(mem, out)
        if a.json:
            _print_json({**mem, "files": {k: str(v) for k, v in files.items()}})
        else:
            print(markdown(mem))
            print(f"wrote {files['markdown']} (+ memory.json and 2 PNGs in {out})")
        return 0
    graph, net = load_and_lower(a.nir_file)
    images, labels, _ = held_out_samples(graph, a.data, a.data_dir, a.samples)
    from lrfdyn.sim.budget import check as check_budget

    check_budget(net, len(images), lava=not a.fast)  # refused before any run, with the estimate
    if not 0 <= a.sample < len(images):
        raise ValidationError(f"--sample {a.sample} is out of range; this profile runs "
                              f"samples 0..{len(images) - 1}")
    with progress_bar("Lava fixed_pt", len(images), not a.json and not a.fast) as tick:
        report = profile(net, images.reshape(len(images), -1), labels, fast=a.fast,
                         on_sample=tick)
    files = write_profile(report, out, sample=a.sample, model=Path(a.nir_file).stem)
    if a.json:
        _print_json({**report.to_dict(), "files": {k: str(v) for k, v in files.items()}})
    else:
        print(report.summary())
        print(f"wrote {files['markdown']} (+ profile.json and 4 PNGs in {out})")
    return 0


# ---------------------------------------------------------------- demo


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--samples", type=_int_type(1), default=100,
                   help="test samples run on Lava (default 100)")
    p.add_argument("--epochs", type=_int_type(1, 10**6), default=15,
                   help="training epochs (default 15)")


@command("demo", "train on digits, export to NIR, run on Lava, check every spike")
@_args(_demo_args)
def cmd_demo(a: argparse.Namespace) -> int:
    from lrfdyn.pipeline import demo
    from lrfdyn.validate import check_output_dir

    check_output_dir(a.out, "--out", files=("checkpoint.pt", "model.nir", "report.json"))
    res = demo(a.out, samples=a.samples, epochs=a.epochs, progress=not a.json)
    r = res.report
    if a.json:
        # The report's float_accuracy is on the Lava samples; the held-out test split's
        # figures get their own keys (quantized_accuracy: the older name of the second).
        _print_json({**r.to_dict(), "test_float_accuracy": res.float_accuracy,
                     "test_quantized_accuracy": res.quantized_accuracy,
                     "quantized_accuracy": res.quantized_accuracy})
        return 0 if r.mismatches == 0 else 1
    print()
    print("lrfdyn demo: spiking MLP on scikit-learn digits (8x8), T = "
          f"{r.timesteps}, direct 8-bit input")
    print(f"trained in {res.train_seconds:.0f} s -> {res.checkpoint}; NIR -> {res.nir_path}")
    print(f"float accuracy (360 test)      {100 * res.float_accuracy:.2f} %")
    print(f"Loihi-int accuracy (360 test)  {100 * res.quantized_accuracy:.2f} %")
    print(f"--- Lava fixed_pt vs integer reference, first {r.samples} test samples ---")
    print(r.summary())
    verdict = "PASS" if r.mismatches == 0 and r.predictions_equal else "FAIL"
    print(f"{verdict}: {r.mismatches} spike mismatches; report {Path(a.out) / 'report.json'}")
    return 0 if verdict == "PASS" else 1


# ---------------------------------------------------------------- main


#: One example per command, shown at the end of its --help.
EXAMPLES = {
    "train": "lrfdyn train --data digits --attention lrf_dyn --token kv --epochs 5 "
             "--out runs/dyn",
    "analyze": "lrfdyn analyze runs/dyn/checkpoint.pt --samples 32",
    "export": "lrfdyn export runs/demo/checkpoint.pt -o model.nir",
    "simulate": "lrfdyn simulate model.nir --samples 20 --report report.json",
    "deploy": "lrfdyn deploy model.nir --dry-run",
    "profile": "lrfdyn profile model.nir --samples 10 --out model_profile",
    "demo": "lrfdyn demo --out runs/demo",
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lrfdyn", description=__doc__.splitlines()[0],
                     epilog="example: lrfdyn demo   (then: lrfdyn <command> --help)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, (adder, _, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text,
                           epilog=f"example:\n  {EXAMPLES[name]}" if name in EXAMPLES else None,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        adder(p)
        p.add_argument("--json", action="store_true", help="print a machine-readable result")
        p.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    return parser


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the main thread is, so that every ``finally`` runs."""


def _on_signal(signum: int, frame: Any) -> None:
    """The first SIGINT or SIGTERM unwinds the command (Lava stopped, temporary files
    removed); further ones are ignored, so that the cleanup itself is not cut short."""
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    raise _Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _signal_handlers() -> dict[int, Any]:
    """Install :func:`_on_signal` (main thread only); returns the handlers it replaced."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _, handler, _ = COMMANDS[args.command]
    previous = _signal_handlers()
    try:
        return _run(args, handler)
    finally:
        import signal

        for sig, old in previous.items():
            signal.signal(sig, old)


def _run(args: argparse.Namespace, handler: Handler) -> int:
    try:
        from lrfdyn.sim.budget import limit

        with limit(getattr(args, "max_memory", None)):  # --max-memory, where a command has it
            return handler(args)
    except LrfdynError as exc:
        if args.debug:
            raise
        print(f"lrfdyn: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except (OSError, MemoryError) as exc:  # the machine's, not lrfdyn's: a full disk, no memory
        if args.debug:
            raise
        what = "out of memory" if isinstance(exc, MemoryError) else (
            f"{exc.strerror or type(exc).__name__}"
            + (f": {str(exc.filename)!r}" if getattr(exc, "filename", None) else ""))
        print(f"lrfdyn: error: {_one_line(what)}; free resources or pick other paths",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # SIGINT (130) or SIGTERM (143): one line, no traceback
        terminated = isinstance(exc, _Terminated)
        print(f"lrfdyn: {'terminated (SIGTERM)' if terminated else 'interrupted (SIGINT)'}",
              file=sys.stderr)
        return 143 if terminated else 130


def _one_line(text: str) -> str:
    """A message on one line whatever it quotes (a file's newline never splits it)."""
    return " ".join(text.split()) or "unknown error"


if __name__ == "__main__":
    sys.exit(main())
