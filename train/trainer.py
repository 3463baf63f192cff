"""Surrogate-gradient training with AdamW and a cosine schedule, on one process or under torchrun.

The loss is cross-entropy on the output layer's spike counts over the T steps:
the same quantity whose argmax is the class on Loihi (DESIGN.md §3.6), so the
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
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from lrfdyn.errors import ValidationError
from lrfdyn.io import write_json
from lrfdyn.loihi.fixed import WEIGHT_MAX, WEIGHT_MIN
from lrfdyn.train.checkpoint import load_checkpoint, save_checkpoint
from lrfdyn.train.data import Dataset, load_dataset
from lrfdyn.train.models import ARCHITECTURES, build_model


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
    out: str = "runs/train"

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValidationError(
                f"epochs={self.epochs}, batch_size={self.batch_size}, lr={self.lr}: "
                "all must be positive"
            )
        if not 0 <= self.qat_epochs <= self.epochs:
            raise ValidationError(
                f"qat_epochs={self.qat_epochs} must lie in 0..epochs={self.epochs} "
                "(the last qat_epochs epochs are quantization-aware)"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValidationError(
                f"unknown training config keys {unknown}; valid keys are {sorted(names)}"
            )
        return cls(**data)


@dataclass
class TrainResult:
    checkpoint: Path
    float_accuracy: float
    history: list[dict[str, Any]]


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
    c, h, w = data.image_shape
    known = {"in_features": c * h * w, "num_classes": data.num_classes, "img_size": h,
             "in_channels": c}
    names = {f.name for f in dataclasses.fields(ARCHITECTURES[arch][0])} if arch in \
        ARCHITECTURES else set()
    return {k: v for k, v in known.items() if k in names}


def train(cfg: TrainConfig, *, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train ``cfg.arch`` on ``cfg.data``; write ``checkpoint.pt`` every epoch into ``cfg.out``."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

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
    if resume and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
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
                record["test_acc"] = accuracy(model, data.x_test, data.y_test)
                if qat:
                    with quantized_weights(model):
                        record["test_acc_fake_quant"] = accuracy(model, data.x_test, data.y_test)
                history.append(record)
                save_checkpoint(
                    ckpt_path, model, cfg.arch, epoch=epoch + 1, optimizer=opt.state_dict(),
                    scheduler=sched.state_dict(), history=history, rng=torch.get_rng_state(),
                    data=cfg.data, seed=cfg.seed, split_seed=cfg.split_seed, image_shape=list(data.image_shape),
                )
    history = ddp.broadcast(history)
    ddp.close()
    final = history[-1]["test_acc"] if history else accuracy(model, data.x_test, data.y_test)
    return TrainResult(checkpoint=ckpt_path, float_accuracy=final, history=history)
