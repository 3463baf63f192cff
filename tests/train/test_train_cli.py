"""`lrfdyn train` on a model whose export is not supported reports float accuracy and says
why the Loihi-integer accuracy is not available, instead of failing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lrfdyn.sim.simulate import read_graph
from lrfdyn.cli import main
from lrfdyn.train import trainer
from lrfdyn.train.checkpoint import save_checkpoint
from lrfdyn.train.models import build_model

MODEL = {"img_size": 8, "in_channels": 1, "dim": 16, "depth": 1, "heads": 2, "timesteps": 2,
         "stem_strides": [1, 2], "attention": "statten"}


def test_train_reports_quantized_accuracy_not_available(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fake_train(cfg: trainer.TrainConfig, **_: object) -> trainer.TrainResult:
        # Training itself is covered elsewhere; an untrained STAtten checkpoint suffices.
        torch.manual_seed(0)
        path = save_checkpoint(Path(cfg.out) / "checkpoint.pt", build_model("spikformer", MODEL),
                               "spikformer", data=cfg.data, seed=cfg.seed)
        return trainer.TrainResult(checkpoint=path, float_accuracy=0.5, history=[])

    monkeypatch.setattr(trainer, "train", fake_train)
    # Every variant exports today: withdraw STAtten's lowering for this test.
    from lrfdyn.export import transformer

    monkeypatch.setitem(transformer.PRODUCT_BLOCKS, "statten", "its lowering is withdrawn")
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"data": "digits", "arch": "spikformer", "model": MODEL}))
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((out / "metrics.json").read_text())
    assert printed["float_accuracy"] == 0.5 and printed["quantized_accuracy"] is None
    assert printed["quantized_accuracy_note"].startswith("not available: ")
    assert "statten" in printed["quantized_accuracy_note"]
    # The human summary says the same.
    assert main(["train", "--config", str(config), "--out", str(out)]) == 0
    assert "Loihi-int accuracy  not available: " in capsys.readouterr().out


# ---------------------------------------------------------------- sizing: train --epochs 0

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

#: A small LRF-Dyn Spikformer; input shape and classes come from the data set's name.
SMALL = {"dim": 16, "depth": 1, "heads": 2, "timesteps": 2, "mlp_ratio": 2.0,
         "stem_strides": [1, 2, 2], "attention": "lrf_dyn", "token": "v", "gate": "none",
         "k_dendrites": 2, "lrf_dilations": [1]}


def spikformer_lrf_dyn_v_parameters(m: dict) -> int:
    """Trainable parameters of a Spikformer with LRF-Dyn attention (token "v", gate "none",
    RPE on), counted from the architecture (train/models/spikformer.py, attention.py)."""
    d, k, h = m["dim"], m["k_dendrites"], round(m["dim"] * m["mlp_ratio"])
    n = len(m["stem_strides"])
    widths = [d >> (n - 1 - i) for i in range(n)]
    ins = [m["in_channels"], *widths[:-1]]
    conv_bn = lambda a, b: 9 * a * b + 2 * b  # noqa: E731 - 3×3 conv (no bias), BN scale/shift
    linear_bn = lambda a, b: a * b + 2 * b  # noqa: E731
    stem = sum(conv_bn(a, b) for a, b in zip(ins, widths))
    rpe = conv_bn(d, d)
    attention = (2 * linear_bn(d, d)  # V generator and output projection
                 + d * (4 * k - 1)  # tau_raw, gamma, c: d·k each; beta_raw: d·(k-1)
                 + len(m["lrf_dilations"]) * 10 * d  # depthwise 3×3 convolutions with bias
                 + 2 * d)  # the attention BN
    mlp = linear_bn(d, h) + linear_bn(h, d)
    head = d * m["num_classes"] + m["num_classes"]
    return stem + rpe + m["depth"] * (attention + mlp) + head


def _no_data(*_: object, **__: object) -> None:
    raise AssertionError("--epochs 0 must not read any data set")


def _small_config(tmp_path: Path) -> tuple[Path, Path]:
    missing = tmp_path / "no-such-cifar-folder"
    config = tmp_path / "small.json"
    # epochs and qat_epochs of a real run: --epochs 0 overrides both.
    config.write_text(json.dumps({"data": "cifar10", "data_dir": str(missing),
                                  "arch": "spikformer", "epochs": 5, "qat_epochs": 1,
                                  "model": SMALL}))
    return config, missing


def test_epochs_0_writes_an_untrained_checkpoint_without_data_and_exports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:

    from lrfdyn.train import data as data_module
    from lrfdyn.train.checkpoint import load_checkpoint
    from lrfdyn.train.models.attention import count_parameters

    monkeypatch.setattr(trainer, "load_dataset", _no_data)
    monkeypatch.setattr(data_module, "load_dataset", _no_data)
    config, missing = _small_config(tmp_path)
    out = tmp_path / "sized"
    assert main(["train", "--config", str(config), "--epochs", "0", "--out", str(out),
                 "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert not missing.exists()
    ckpt_path = out / "checkpoint.pt"
    assert printed["checkpoint"] == str(ckpt_path)
    assert printed == json.loads((out / "metrics.json").read_text())  # no stale metrics
    assert printed["epochs"] == 0 and printed["trained"] is False

    # The same format `lrfdyn train` writes, marked untrained.
    ckpt = load_checkpoint(ckpt_path)
    assert ckpt.arch == "spikformer"
    assert ckpt.extra["epoch"] == 0 and ckpt.extra["epochs"] == 0
    assert ckpt.extra["trained"] is False
    assert ckpt.extra["data"] == "cifar10" and ckpt.extra["image_shape"] == [3, 32, 32]
    full = {"img_size": 32, "in_channels": 3, "num_classes": 10, **SMALL}
    assert {k: ckpt.config[k] for k in full} == full
    model = ckpt.build()
    n = count_parameters(model)
    assert printed["parameters"] == ckpt.extra["parameters"] == n
    assert n == spikformer_lrf_dyn_v_parameters(full)
    assert float(model.stem[0].bn.running_mean.abs().max()) == 0.0
    assert float((model.stem[0].bn.running_var - 1).abs().max()) == 0.0
    # The initial weights a real run with this seed starts from.
    trainer.seed_everything(0)
    fresh = build_model("spikformer", full).state_dict()
    assert all(torch.equal(fresh[k], v) for k, v in ckpt.state_dict.items())

    # Human output: one line naming the file, the parameter count and that it is untrained;
    # re-sizing into the same folder replaces the untrained checkpoint.
    assert main(["train", "--config", str(config), "--epochs", "0", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    assert str(ckpt_path) in lines[0] and f"{n:,} parameters" in lines[0]
    assert "UNTRAINED" in lines[0] and "trained: false" in lines[0]

    # `lrfdyn export` reads the recorded input shape: still no data.
    from lrfdyn import pipeline

    monkeypatch.setattr(pipeline, "load_dataset", _no_data)
    nir_path = tmp_path / "sized.nir"
    assert main(["export", str(ckpt_path), "-o", str(nir_path)]) == 0
    assert "wrote" in capsys.readouterr().out
    graph = read_graph(nir_path)
    assert graph.nodes and graph.metadata["dataset"] == "cifar10"


def test_real_train_without_the_data_folder_fails_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, missing = _small_config(tmp_path)
    assert main(["train", "--config", str(config), "--epochs", "1",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(missing) in err[0] and "does not exist" in err[0]
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    # ImageNet has no loader: sizing only, said in one line.
    assert main(["train", "--config", str(EXAMPLES / "spikformer_8_512_imagenet.json"),
                 "--out", str(tmp_path / "imagenet")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "imagenet" in err[0] and "--epochs 0" in err[0]


def test_epochs_0_refuses_to_replace_a_trained_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = _small_config(tmp_path)
    out = tmp_path / "trained"
    ckpt = save_checkpoint(out / "checkpoint.pt", build_model("spikformer", MODEL),
                           "spikformer", epoch=3, epochs=3, trained=True, data="digits")
    before = ckpt.read_bytes()
    assert main(["train", "--config", str(config), "--epochs", "0", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "not an untrained one" in err and "--out" in err
    assert ckpt.read_bytes() == before
    assert main(["train", "--config", str(config), "--epochs", "0", "--resume",
                 "--out", str(tmp_path / "r")]) == 2
    assert "--resume with --epochs 0" in capsys.readouterr().err


def test_known_input_shapes_match_the_bundled_data_sets() -> None:
    from lrfdyn.train.data import load_dataset

    for name in ("digits", "mnist5k"):
        ds = load_dataset(name)
        assert trainer.KNOWN_INPUTS[name] == (ds.image_shape, ds.num_classes)


@pytest.mark.parametrize("name,grid", [("spikformer_4_384_cifar", (8, 8)),
                                       ("spikformer_8_512_imagenet", (14, 14))])
def test_shipped_configs_size_with_epochs_0(
    name: str, grid: tuple[int, int], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lrfdyn.train.checkpoint import load_checkpoint
    from lrfdyn.train.models.attention import count_parameters

    config = EXAMPLES / f"{name}.json"
    out = tmp_path / name
    assert main(["train", "--config", str(config), "--epochs", "0", "--out", str(out),
                 "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    ckpt = load_checkpoint(out / "checkpoint.pt")
    model = ckpt.build()
    n = count_parameters(model)
    assert model.cfg.grid == grid
    assert printed["parameters"] == ckpt.extra["parameters"] == n
    model_cfg = json.loads(config.read_text())["model"]
    assert n == spikformer_lrf_dyn_v_parameters(model_cfg)
    shape = [model_cfg["in_channels"], model_cfg["img_size"], model_cfg["img_size"]]
    assert ckpt.extra["image_shape"] == printed["image_shape"] == shape
    assert ckpt.extra["trained"] is False
    with capsys.disabled():
        print(f"\n{name}: {n:,} parameters, {grid[0]}x{grid[1]} tokens")
