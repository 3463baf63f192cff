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


# ---------------------------------------------------------------- train


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML or JSON training config; flags override it")
    p.add_argument("--data", choices=["digits", "mnist5k", "mnist", "cifar10", "cifar100",
                                      "imagenet"],
                   help="data set (imagenet: sizing with --epochs 0 only)")
    p.add_argument("--data-dir", help="folder holding the data set's standard files")
    p.add_argument("--arch", help="architecture (default: mlp)")
    p.add_argument("--epochs", type=int,
                   help="epochs to train; 0 writes an initialized, untrained OUT/checkpoint.pt "
                        "without reading any data (to size a model for Loihi 2 first)")
    p.add_argument("--qat-epochs", type=int,
                   help="how many of the last epochs train through 8-bit fake-quantized weights")
    p.add_argument("--seed", type=int)
    p.add_argument("--out", help="output folder (checkpoint.pt, metrics.json)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")


@command("train", "train a spiking network; report float and Loihi-integer accuracy")
@_args(_train_args)
def cmd_train(a: argparse.Namespace) -> int:
    from lrfdyn.io import write_json
    from lrfdyn.train.trainer import TrainConfig, train

    cfg_dict: dict[str, Any] = _read_config(a.config) if a.config else {}
    for key in ("data", "data_dir", "arch", "epochs", "qat_epochs", "seed", "out"):
        if getattr(a, key) is not None:
            cfg_dict[key] = getattr(a, key)
    if a.epochs == 0 and a.qat_epochs is None:
        cfg_dict.pop("qat_epochs", None)  # a config's QAT epochs lie in the epochs not run
    cfg = TrainConfig.from_dict(cfg_dict)
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
    p.add_argument("--samples", type=int, default=64, help="test samples to run (default 64)")
    p.add_argument("--data-dir", help="folder holding the data set's standard files")


@command("analyze", "measure each attention layer's entropy and token-grid distance")
@_args(_analyze_args)
def cmd_analyze(a: argparse.Namespace) -> int:
    from lrfdyn.train.analysis import analyze_checkpoint

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
        raise ValidationError(f"{p}: no such config file")
    text = p.read_text()
    try:
        if p.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # yaml and json raise different types
        raise ValidationError(f"{p}: cannot parse config ({exc})") from exc
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
    p.add_argument("--samples", type=int, default=samples,
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
                   help="how the producer discretizes NIR: nir (default), snntorch, norse")
    g.add_argument("--dt", type=float, help="time step in s (default: graph metadata, "
                   "else the convention's)")


@command("simulate", "run a NIR graph on Lava and check it spike by spike")
@_args(_simulate_args)
def cmd_simulate(a: argparse.Namespace) -> int:
    from lrfdyn.io import write_json
    from lrfdyn.pipeline import run_dendritic, run_simulation

    if a.precision or a.input:
        report = _simulate_array(a)
    else:
        if a.mode == "dendritic":
            report = run_dendritic(a.nir_file, data=a.data, data_dir=a.data_dir,
                                   samples=a.samples, use_lava=not a.no_lava,
                                   progress=not a.json)
        else:
            report = run_simulation(a.nir_file, data=a.data, data_dir=a.data_dir,
                                    samples=a.samples, use_lava=not a.no_lava,
                                    progress=not a.json, device=_device(a.device))
    if a.report:
        write_json(a.report, report.to_dict())
    if a.json:
        _print_json(report.to_dict())
    else:
        print(report.summary())
    return 0 if not report.mismatches else 1


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
    return run_nir_on_array(a.nir_file, a.input, a.output, mode=a.precision,
                            convention=a.convention, dt=a.dt)


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
    _graph_and_data_args(p, samples=100)


@command("deploy", "run on Loihi 2 hardware (needs lava-loihi and a Loihi 2 system)")
@_args(_deploy_args)
def cmd_deploy(a: argparse.Namespace) -> int:
    if a.dry_run:
        from lrfdyn.loihi.resources import map_to_cores
        from lrfdyn.sim.simulate import load_and_lower

        mapping = map_to_cores(load_and_lower(a.nir_file)[1], conv_storage=a.conv_storage)
        if a.json:
            _print_json(mapping.to_dict())
        else:
            print(mapping.summary(max_layers=None if a.all_layers else 20))
        return 0 if mapping.fits_one_chip else 1
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


def _profile_args(p: argparse.ArgumentParser) -> None:
    _graph_and_data_args(p, samples=20)
    p.add_argument("--fast", action="store_true",
                   help="count on the integer reference instead of Lava (identical counts)")
    p.add_argument("--sample", type=int, default=0, help="sample drawn in the raster (default 0)")
    p.add_argument("--out", help="output folder (default: <nir stem>_profile/ beside the file)")
    p.add_argument("--memory", action="store_true",
                   help="only compare attention memory: SSA, LRF-SSA, LRF-Dyn parallel and "
                        "dendritic, at this graph's scale and at Spikformer-8-512 scale "
                        "(LRF-Dyn rows counted on lowered networks, SSA rows modelled)")


@command("profile", "count spikes, SynOps, memory; estimate energy; map onto Loihi 2 cores")
@_args(_profile_args)
def cmd_profile(a: argparse.Namespace) -> int:
    from lrfdyn.errors import ValidationError
    from lrfdyn.pipeline import progress_bar, held_out_samples
    from lrfdyn.sim.profile import default_out_dir, profile, write_profile
    from lrfdyn.sim.simulate import load_and_lower, read_graph

    out = Path(a.out) if a.out else default_out_dir(a.nir_file)
    if a.memory:
        from lrfdyn.sim.memory import markdown, memory_report, write_memory

        # The paper-scale rows come from lowering a Spikformer-8-512 (~20 s, ~2.5 GB).
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
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--epochs", type=int, default=15)


@command("demo", "train on digits, export to NIR, run on Lava, check every spike")
@_args(_demo_args)
def cmd_demo(a: argparse.Namespace) -> int:
    from lrfdyn.pipeline import demo

    res = demo(a.out, samples=a.samples, epochs=a.epochs, progress=not a.json)
    r = res.report
    if a.json:
        _print_json({"float_accuracy": res.float_accuracy,
                     "quantized_accuracy": res.quantized_accuracy, **r.to_dict()})
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lrfdyn", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (adder, _, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        adder(p)
        p.add_argument("--json", action="store_true", help="print a machine-readable result")
        p.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _, handler, _ = COMMANDS[args.command]
    try:
        return handler(args)
    except LrfdynError as exc:
        if args.debug:
            raise
        print(f"lrfdyn: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lrfdyn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
