"""The ``lrfdyn`` commands: one handler per command, gathered in :data:`COMMANDS`.

A handler takes the parsed arguments, checks its output paths (:mod:`lrfdyn.validate`),
calls one library function and prints a human summary, or JSON with ``--json``; it
returns the exit status. :mod:`lrfdyn.cli` builds the parser from the table and turns
user errors into one line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lrfdyn.arguments import (
    analyze_args,
    demo_args,
    deploy_args,
    export_args,
    profile_args,
    simulate_args,
    train_args,
)
from lrfdyn.errors import UnsupportedNodeError

Adder = Callable[[argparse.ArgumentParser], None]
Handler = Callable[[argparse.Namespace], int]
#: Command name -> (its argument adder, its handler, its one-line help).
COMMANDS: dict[str, tuple[Adder, Handler, str]] = {}


def command(name: str, help_text: str, add_arguments: Adder) -> Callable[[Handler], Handler]:
    """Register the decorated handler as command ``name``, with its arguments and help."""
    def deco(fn: Handler) -> Handler:
        COMMANDS[name] = (add_arguments, fn, help_text)
        return fn

    return deco


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


# ---------------------------------------------------------------- train


@command("train", "train a spiking network; report float and Loihi-integer accuracy",
         train_args)
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


@command("analyze", "measure each attention layer's entropy and token-grid distance",
         analyze_args)
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


@command("export", "write a checkpoint's network as NIR (or lava-dl netx HDF5)",
         export_args)
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


@command("simulate", "run a NIR graph on Lava and check it spike by spike",
         simulate_args)
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


@command("deploy", "run on Loihi 2 hardware (needs lava-loihi and a Loihi 2 system)",
         deploy_args)
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


@command("profile", "count spikes, SynOps, memory; estimate energy; map onto Loihi 2 cores",
         profile_args)
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
        from lrfdyn.memory_models import memory_report
        from lrfdyn.sim.memory import markdown, write_memory

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


@command("demo", "train on digits, export to NIR, run on Lava, check every spike",
         demo_args)
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
