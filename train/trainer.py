"""Surrogate-gradient training with AdamW and a cosine schedule, on one process or under torchrun.

The loss is cross-entropy on the output layer's spike counts over the T steps:
the same quantity whose argmax is the class on Loihi (docs/design.md §3.6), so the
objective and the deployed readout agree.

Under ``torchrun --nproc_per_node=N`` (``WORLD_SIZE`` set) the trainer runs
data-parallel with the gloo backend: each rank takes a strided shard of every
shuffled epoch (all ranks draw the same permutation from the same seed, and the
tail is trimmed so every rank runs the same number of steps: DDP's all-reduce
would otherwise wait forever for the rank with one batch fewer) and gradients are
averaged by DDP. Loss and training accuracy are summed over ranks, and each epoch
records the shard sizes and how many distinct samples the ranks saw together, so
a run can show that the shards were disjoint. Only rank 0 writes files and draws
progress; every rank returns rank 0's history.

**Quantization-aware fine-tuning** (``qat_epochs > 0``): the last ``qat_epochs``
epochs of the cosine schedule run forward and backward through fake-quantized
Linear/Conv weights (8-bit even mantissas with one scale per layer, the rounding of
:func:`lrfdyn.loihi.fixed.quantize_to_mantissa`) while AdamW updates the float
"shadow" weights: a straight-through estimator. Checkpoints keep the float weights.

**Sizing without data** (``epochs == 0``, :func:`initialize`): the model is built from the
config alone (input shape and classes from the model config, else from the named data
set's known shape, :data:`KNOWN_INPUTS`) and written as an initialized, untrained
checkpoint in the format training writes, marked ``epochs: 0`` / ``trained: false``, so
that ``lrfdyn export`` and the Loihi 2 resource mapping can run before any training. With
the same seed its weights are exactly the ones a real run starts from.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from lrfdyn.errors import MAX_SEED, DataError, ValidationError, check_int, check_real, show
from lrfdyn.io import write_json
from lrfdyn.loihi.fixed import WEIGHT_MAX, WEIGHT_MIN
from lrfdyn.train.checkpoint import load_checkpoint, save_checkpoint
from lrfdyn.train.checks import check_model_config
from lrfdyn.train.data import DATASETS, Dataset, load_dataset
from lrfdyn.train.models import ARCHITECTURES, build_model
from lrfdyn.train.models.attention import count_parameters

#: Input shape (C, H, W) and number of classes of every named data set, known without
#: reading it: what ``epochs == 0`` builds a model from. ``mnist`` is the standard 28×28
#: set (its loader reads H and W from the IDX headers). ``imagenet`` has no loader (the
#: trainer holds a data set in memory): it is here for sizing only (:data:`SIZING_ONLY`).
KNOWN_INPUTS: dict[str, tuple[tuple[int, int, int], int]] = {
    "digits": ((1, 8, 8), 10),
    "mnist5k": ((1, 28, 28), 10),
    "mnist": ((1, 28, 28), 10),
    "cifar10": ((3, 32, 32), 10),
    "cifar100": ((3, 32, 32), 100),
    "imagenet": ((3, 224, 224), 1000),
}
#: Data set names a model can be sized for (``epochs == 0``) but not trained on.
SIZING_ONLY: tuple[str, ...] = tuple(n for n in KNOWN_INPUTS if n not in DATASETS)


@dataclass
class TrainConfig:
    """Everything a training run depends on. ``model`` is the architecture's own config.

    ``epochs`` counts every epoch, ``qat_epochs`` of them (the last ones) quantization-aware.
    """

    data: str = "digits"
    data_dir: str | None = None
    arch: str = "mlp"
    model: dict[str, Any] = field(default_factory=dict)
    epochs: int = 15
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-2
    seed: int = 0
    #: Seed of the bundled data sets' train/test split, kept apart from ``seed`` so that
    #: runs over several training seeds are scored on one and the same test set.
    split_seed: int = 0
    logit_scale: float = 1.0
    qat_epochs: int = 0
    #: Recalibrate BatchNorm's running statistics before each evaluation
    #: (:func:`calibrate_batchnorm`); false keeps training's momentum average.
    bn_calibration: bool = True
    out: str = "runs/train"

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ValidationError(
                f"epochs={self.epochs}, batch_size={self.batch_size}, lr={self.lr}: "
                "batch_size and lr must be positive, epochs at least 0 (0 writes an "
                "initialized, untrained checkpoint without reading data)"
            )
        if not 0 <= self.qat_epochs <= self.epochs:
            raise ValidationError(
                f"qat_epochs={self.qat_epochs} must lie in 0..epochs={self.epochs} "
                "(the last qat_epochs epochs are quantization-aware)"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """A config from a mapping, every key's type and range checked first (one line
        for the first bad one, before any folder is made)."""
        return cls(**check_train_config(data))


@dataclass
class TrainResult:
    checkpoint: Path
    float_accuracy: float
    history: list[dict[str, Any]]


@dataclass
class InitResult:
    """What :func:`initialize` wrote: an untrained checkpoint and the model's size."""

    checkpoint: Path
    arch: str
    data: str
    parameters: int
    image_shape: tuple[int, int, int]
    num_classes: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"checkpoint": str(self.checkpoint), "arch": self.arch, "data": self.data,
                "parameters": self.parameters, "image_shape": list(self.image_shape),
                "num_classes": self.num_classes, "epochs": 0, "trained": False,
                "seconds": self.seconds}


def seed_everything(seed: int) -> None:
    """Seed every generator training touches; CPU runs are then bitwise repeatable."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def images_to_float(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """8-bit images to the float model's input range [0, 1] (direct encoding)."""
    return torch.as_tensor(np.asarray(x), dtype=torch.float32) / 255.0


def output_counts(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Spike counts of the output layer over the T steps, shape (B, classes)."""
    out, _ = model(images)
    return out.sum(0)


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Class predictions: argmax of output spike counts, ties to the lowest index."""
    model.eval()
    preds = [
        output_counts(model, images_to_float(x[i : i + batch_size])).argmax(1)
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat(preds).numpy()


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    return float((predict(model, x) == y).mean())


#: Training samples whose batch statistics become BatchNorm's running statistics before
#: each evaluation (the whole set where it is smaller).
BN_CALIBRATION_SAMPLES = 2048


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, images: torch.Tensor, batch_size: int) -> None:
    """Set every BatchNorm's running statistics to the mean of its batch statistics on
    ``images`` under the current weights.

    Training's momentum average trails weights that still move: after one epoch on digits
    it left the evaluated (and exported, BN folded) Spikformer silent, 10 % test accuracy
    against 65 % in training. Only running statistics change; the weights, the RNG and
    so the rest of training are untouched.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    momenta = [m.momentum for m in bns]
    rng, was_training = torch.get_rng_state(), model.training
    try:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # a plain mean over the batches
        model.train()
        for i in range(0, len(images), batch_size):
            output_counts(model, images[i : i + batch_size])
    finally:
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum
        torch.set_rng_state(rng)
        model.train(was_training)


#: Layers whose weights become Loihi synapses (BN folds into them at export).
QAT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)


def fake_quantize_weight(w: torch.Tensor) -> torch.Tensor:
    """``w`` rounded to the grid of 8-bit even mantissas with one scale for the tensor.

    The scale maps the peak ``|w|`` to the largest mantissa (254), the finest grid export
    can use; rounding is :func:`lrfdyn.loihi.fixed.quantize_to_mantissa`'s
    (``2·round(w·scale/2)``, half to even, clipped to [-256, 254]). All-zero tensors pass.
    """
    peak = w.detach().abs().max()
    if peak == 0:
        return w.clone()
    scale = WEIGHT_MAX / peak
    mant = (2.0 * torch.round(w * scale / 2.0)).clamp(WEIGHT_MIN, WEIGHT_MAX)
    return mant / scale


@contextlib.contextmanager
def quantized_weights(model: nn.Module) -> Iterator[None]:
    """Swap every :data:`QAT_LAYERS` weight for its fake-quantized value, then restore it.

    Gradients computed inside flow to the (shared) parameter tensors unchanged, so the
    optimizer step after the block updates the float weights: a straight-through estimator.
    """
    saved: list[tuple[torch.Tensor, torch.Tensor]] = []
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, QAT_LAYERS):
                saved.append((m.weight, m.weight.detach().clone()))
                m.weight.copy_(fake_quantize_weight(m.weight))
    try:
        yield
    finally:
        with torch.no_grad():
            for param, value in saved:
                param.copy_(value)


class _Distributed:
    """Rank and world size under torchrun; a single process otherwise."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("gloo")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: nn.Module) -> nn.Module:
        """DDP around ``model`` when distributed.

        ``find_unused_parameters`` stays off: every parameter of every architecture lies
        on the path to the output spikes, and DDP reduces only the tensors autograd
        reaches, so the (spikes, record) tuple the models return needs no special care.
        """
        return nn.parallel.DistributedDataParallel(model) if self.world > 1 else model

    def shard(self, order: torch.Tensor) -> torch.Tensor:
        """This rank's strided share of ``order``, trimmed so all shards have one length."""
        usable = len(order) - len(order) % self.world
        return order[:usable][self.rank :: self.world]

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of ``values`` over ranks (identity on one process)."""
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t)
        return t.tolist()

    def shard_stats(self, idx: torch.Tensor) -> dict[str, Any]:
        """Shard sizes per rank and the number of distinct samples over all shards."""
        if self.world == 1:
            return {"shard_sizes": [len(idx)], "distinct_samples": int(idx.unique().numel())}
        parts = [torch.empty_like(idx) for _ in range(self.world)]
        dist.all_gather(parts, idx)  # equal lengths by construction of shard()
        return {"shard_sizes": [len(p) for p in parts],
                "distinct_samples": int(torch.cat(parts).unique().numel())}

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def data_defaults(arch: str, data: Dataset) -> dict[str, Any]:
    """The model config keys a data set determines, for those the architecture has."""
    return shape_defaults(arch, data.image_shape, data.num_classes)


def shape_defaults(arch: str, image_shape: tuple[int, int, int], num_classes: int
                   ) -> dict[str, Any]:
    """The model config keys an input shape and class count determine, for ``arch``'s fields."""
    c, h, w = image_shape
    known = {"in_features": c * h * w, "num_classes": num_classes, "img_size": h,
             "in_channels": c}
    names = {f.name for f in dataclasses.fields(ARCHITECTURES[arch][0])} if arch in \
        ARCHITECTURES else set()
    return {k: v for k, v in known.items() if k in names}


def check_train_config(data: Any) -> dict[str, Any]:
    """A training config's values, type by type, before anything is built or written."""
    where = "training config"
    if not isinstance(data, Mapping):
        raise ValidationError(f"a training config must be a mapping, got {type(data).__name__}")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    keys = list(data)
    unknown = sorted((k for k in keys if k not in fields), key=repr)
    if unknown:
        raise ValidationError(f"unknown training config keys {show(unknown)}; valid keys are "
                              f"{sorted(fields)}")
    d = dict(data)
    for key in ("data", "arch", "out"):
        if key in d and (not isinstance(d[key], str) or not d[key]):
            raise ValidationError(f"{where}: {key} must be a non-empty string, got "
                                  f"{show(d[key])}")
    if "data" in d and d["data"] not in KNOWN_INPUTS:
        raise ValidationError(f"{where}: unknown data set {show(d['data'])}; choose one of "
                              f"{', '.join(KNOWN_INPUTS)}")
    if d.get("data_dir") is not None and (not isinstance(d["data_dir"], str)
                                          or not d["data_dir"]):
        raise ValidationError(f"{where}: data_dir must be a folder path, got "
                              f"{show(d['data_dir'])}")
    for key, low in (("epochs", 0), ("qat_epochs", 0), ("batch_size", 1)):
        if key in d:
            check_int(key, d[key], low=low, high=10**6, where=where)
    for key in ("seed", "split_seed"):
        if key in d:
            check_int(key, d[key], low=0, high=MAX_SEED, where=where)
    if "lr" in d:
        check_real("lr", d["lr"], positive=True, where=where)
    if "weight_decay" in d:
        check_real("weight_decay", d["weight_decay"], nonneg=True, where=where)
    if "logit_scale" in d:
        check_real("logit_scale", d["logit_scale"], positive=True, where=where)
    if "bn_calibration" in d and not isinstance(d["bn_calibration"], bool):
        raise ValidationError(f"{where}: bn_calibration must be true or false, got "
                              f"{show(d['bn_calibration'])}")
    arch = d.get("arch", "mlp")
    model = d.get("model", {})
    if not isinstance(model, Mapping):
        raise ValidationError(f"{where}: model must be a mapping of {arch} config keys, got "
                              f"{type(model).__name__}")
    # The data set fills in the input shape before the model's cross-field checks run.
    shape, classes = KNOWN_INPUTS[d.get("data", "digits")]
    check_model_config(arch, {**shape_defaults(arch, shape, classes), **model},
                       where=f"{where} model")
    return d


def _model_input_shape(model: nn.Module, data: str, data_shape: tuple[int, int, int]
                       ) -> tuple[int, int, int]:
    """The (C, H, W) images ``model`` takes: from its config, else the data set's shape."""
    mcfg = model.cfg  # type: ignore[attr-defined]
    if hasattr(mcfg, "img_size") and hasattr(mcfg, "in_channels"):
        return int(mcfg.in_channels), int(mcfg.img_size), int(mcfg.img_size)
    c, h, w = data_shape
    if getattr(mcfg, "in_features", c * h * w) != c * h * w:
        raise ValidationError(
            f"model in_features={mcfg.in_features} does not match {data} images "
            f"{c}x{h}x{w} = {c * h * w} values; drop in_features from the config or fix it"
        )
    return data_shape


def _refuse_to_replace_trained(path: Path) -> None:
    """Stop ``epochs == 0`` from overwriting a trained (or unreadable) checkpoint."""
    if not path.exists():
        return
    try:
        extra = load_checkpoint(path).extra
    except Exception:  # noqa: BLE001 - any unreadable file is kept, as a trained one is
        extra = {}
    if extra.get("trained") is not False:
        raise ValidationError(
            f"{path} already holds a checkpoint that is not an untrained one "
            f"(epoch {extra.get('epoch', '?')}); --epochs 0 would replace it with untrained "
            "weights: pass another --out, or delete it first"
        )


def initialize(cfg: TrainConfig) -> InitResult:
    """``epochs == 0``: write ``cfg.out/checkpoint.pt`` with initialized weights, reading no data.

    The input shape and classes come from ``cfg.model`` (``img_size``, ``in_channels``,
    ``num_classes``), filled in from :data:`KNOWN_INPUTS` for ``cfg.data``. The checkpoint
    has the format :func:`train` writes, with ``epoch``/``epochs`` 0, ``trained: false``
    and the trainable parameter count in its extra; BatchNorm running statistics keep
    their initial mean 0 / variance 1. ``train_config.json`` is written beside it.
    """
    if cfg.epochs != 0:
        raise ValidationError(f"initialize() writes untrained checkpoints (epochs=0); got "
                              f"epochs={cfg.epochs}, train with train()")
    if cfg.data not in KNOWN_INPUTS:
        raise DataError(f"unknown data set {cfg.data!r}; choose one of: "
                        f"{', '.join(KNOWN_INPUTS)}")
    t0 = time.perf_counter()
    out = Path(cfg.out)
    ckpt_path = out / "checkpoint.pt"
    _refuse_to_replace_trained(ckpt_path)
    data_shape, data_classes = KNOWN_INPUTS[cfg.data]
    seed_everything(cfg.seed)  # then build at once, as train() does: the same initial weights
    model = build_model(cfg.arch, {**shape_defaults(cfg.arch, data_shape, data_classes),
                                   **cfg.model})
    image_shape = _model_input_shape(model, cfg.data, data_shape)
    num_classes = int(model.cfg.num_classes)  # type: ignore[attr-defined]
    parameters = count_parameters(model)
    write_json(out / "train_config.json", dataclasses.asdict(cfg))
    save_checkpoint(
        ckpt_path, model, cfg.arch, epoch=0, epochs=0, trained=False, parameters=parameters,
        history=[], data=cfg.data, seed=cfg.seed, split_seed=cfg.split_seed,
        image_shape=list(image_shape),
    )
    return InitResult(checkpoint=ckpt_path, arch=cfg.arch, data=cfg.data,
                      parameters=parameters, image_shape=image_shape,
                      num_classes=num_classes, seconds=time.perf_counter() - t0)


def train(cfg: TrainConfig, *, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train ``cfg.arch`` on ``cfg.data``; write ``checkpoint.pt`` every epoch into ``cfg.out``."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    if cfg.epochs == 0:
        raise ValidationError("epochs=0 trains nothing; initialize() (`lrfdyn train "
                              "--epochs 0`) writes an untrained checkpoint without data")
    if cfg.data in SIZING_ONLY:
        raise DataError(
            f"{cfg.data}: lrfdyn has no loader for it (training holds the data set in "
            f"memory; trainable: {', '.join(DATASETS)}); size the model with "
            "`lrfdyn train --epochs 0` instead"
        )
    ddp = _Distributed()
    seed_everything(cfg.seed)
    data: Dataset = load_dataset(cfg.data, cfg.data_dir, seed=cfg.split_seed)
    model = build_model(cfg.arch, {**data_defaults(cfg.arch, data), **cfg.model})
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(data.x_train) // ddp.world / cfg.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * steps_per_epoch)
    out = Path(cfg.out)
    ckpt_path = out / "checkpoint.pt"
    history: list[dict[str, Any]] = []
    start = 0
    # An untrained (epochs 0) checkpoint has nothing to resume: start afresh (from the
    # same initial weights, when the seed and the model config are unchanged).
    ckpt = load_checkpoint(ckpt_path) if resume and ckpt_path.exists() else None
    if ckpt is not None and ckpt.extra.get("trained") is not False:
        model.load_state_dict(ckpt.state_dict)
        opt.load_state_dict(ckpt.extra["optimizer"])
        sched.load_state_dict(ckpt.extra["scheduler"])
        history = list(ckpt.extra.get("history", []))
        start = int(ckpt.extra["epoch"])
        torch.set_rng_state(ckpt.extra["rng"])
    net = ddp.wrap(model)
    if ddp.is_main:
        write_json(out / "train_config.json", dataclasses.asdict(cfg))
    x_all = images_to_float(data.x_train)
    # Evenly spaced, so that a training set stored class by class still calibrates fairly.
    calibration = x_all[:: max(1, len(x_all) // BN_CALIBRATION_SAMPLES)][:BN_CALIBRATION_SAMPLES]
    y_all = torch.as_tensor(data.y_train)
    loss_fn = nn.CrossEntropyLoss()

    bar = Progress(
        TextColumn("[bold]train[/] epoch {task.fields[epoch]}"),
        BarColumn(),
        TextColumn("loss {task.fields[loss]:.3f}  acc {task.fields[acc]:.3f}"),
        TimeRemainingColumn(),
        disable=not (progress and ddp.is_main),
    )
    with bar:
        task = bar.add_task("train", total=(cfg.epochs - start) * steps_per_epoch,
                            epoch=start + 1, loss=float("nan"), acc=float("nan"))
        for epoch in range(start, cfg.epochs):
            net.train()
            qat = epoch >= cfg.epochs - cfg.qat_epochs
            order = ddp.shard(torch.randperm(len(x_all)))
            shards = ddp.shard_stats(order)
            total, correct, loss_sum = 0, 0, 0.0
            for i in range(0, len(order), cfg.batch_size):
                idx = order[i : i + cfg.batch_size]
                opt.zero_grad(set_to_none=True)
                with quantized_weights(model) if qat else contextlib.nullcontext():
                    counts = output_counts(net, x_all[idx])
                    loss = loss_fn(counts * cfg.logit_scale, y_all[idx])
                    loss.backward()
                opt.step()  # after the float weights are back (straight-through estimator)
                sched.step()
                total += len(idx)
                correct += int((counts.argmax(1) == y_all[idx]).sum())
                loss_sum += float(loss.detach()) * len(idx)
                bar.update(task, advance=1, epoch=epoch + 1, loss=loss_sum / total,
                           acc=correct / total)
            # Pad the step count when this rank's shard had fewer batches.
            bar.update(task, completed=(epoch + 1 - start) * steps_per_epoch)
            total_all, correct_all, loss_all = ddp.sum([total, correct, loss_sum])
            record: dict[str, Any] = {"epoch": epoch + 1, "loss": loss_all / total_all,
                                      "train_acc": correct_all / total_all, "ranks": ddp.world,
                                      "qat": qat, **shards}
            if ddp.is_main:
                if cfg.bn_calibration:
                    with quantized_weights(model) if qat else contextlib.nullcontext():
                        calibrate_batchnorm(model, calibration, cfg.batch_size)
                record["test_acc"] = accuracy(model, data.x_test, data.y_test)
                if qat:
                    with quantized_weights(model):
                        record["test_acc_fake_quant"] = accuracy(model, data.x_test, data.y_test)
                history.append(record)
                save_checkpoint(
                    ckpt_path, model, cfg.arch, epoch=epoch + 1, optimizer=opt.state_dict(),
                    scheduler=sched.state_dict(), history=history, rng=torch.get_rng_state(),
                    data=cfg.data, seed=cfg.seed, split_seed=cfg.split_seed, image_shape=list(data.image_shape),
                    epochs=cfg.epochs, trained=True, parameters=count_parameters(model),
                )
    history = ddp.broadcast(history)
    ddp.close()
    final = history[-1]["test_acc"] if history else accuracy(model, data.x_test, data.y_test)
    return TrainResult(checkpoint=ckpt_path, float_accuracy=final, history=history)
