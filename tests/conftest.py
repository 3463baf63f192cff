"""Shared fixtures: a small trained MLP on digits, built once per test session."""

from __future__ import annotations

from pathlib import Path

import nir
import numpy as np
import pytest

T = 6


def _lif(n: int, tau_steps: float = 2.0, v_th: float = 1.0) -> nir.LIF:
    return nir.LIF(tau=np.full(n, tau_steps * 1e-3), r=np.ones(n), v_leak=np.zeros(n),
                   v_threshold=np.full(n, v_th), v_reset=np.zeros(n))


def _shortcut_graph(seed: int = 0) -> nir.NIRGraph:
    """input → A1 → L1 → A2 → L2 with a shortcut input → A3 → L2, and non-zero biases.

    L2 is reached after 1 synapse (shortcut) and after 2 (main path), so lowering must
    delay the shortcut by one step; the biases must arrive with the first input.
    """
    rng = np.random.default_rng(seed)
    n_in, n1, n2 = 12, 10, 6
    nodes = {
        "input": nir.Input(input_type={"input": np.array([n_in])}),
        "a1": nir.Affine(weight=rng.normal(0, 1.2, (n1, n_in)), bias=rng.normal(0.3, 0.3, n1)),
        "l1": _lif(n1),
        "a2": nir.Affine(weight=rng.normal(0.2, 1.0, (n2, n1)), bias=rng.normal(0, 0.4, n2)),
        "a3": nir.Linear(weight=rng.normal(0, 0.8, (n2, n_in))),
        "l2": _lif(n2, tau_steps=4.0),
        "output": nir.Output(output_type={"output": np.array([n2])}),
    }
    edges = [("input", "a1"), ("a1", "l1"), ("l1", "a2"), ("a2", "l2"), ("input", "a3"),
             ("a3", "l2"), ("l2", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={
        "dt": 1e-3, "timesteps": T, "input_levels": 255})


def _hand_graph() -> nir.NIRGraph:
    """2 graded inputs → a (3×2) → l (3 LIF) → b (2×3) → m (2 LIF), T = 4, no biases.

    Small enough to count SynOps by hand: the fan-outs are a: [2, 1], b: [1, 2, 1].
    """
    nodes = {
        "input": nir.Input(input_type={"input": np.array([2])}),
        "a": nir.Linear(weight=np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 0.0]])),
        "l": _lif(3, v_th=0.05),
        "b": nir.Linear(weight=np.array([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0]])),
        "m": _lif(2),
        "output": nir.Output(output_type={"output": np.array([2])}),
    }
    edges = [("input", "a"), ("a", "l"), ("l", "b"), ("b", "m"), ("m", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges,
                        metadata={"dt": 1e-3, "timesteps": 4, "input_levels": 255})


@pytest.fixture()
def hand_graph() -> nir.NIRGraph:
    return _hand_graph()


@pytest.fixture()
def lif_node():
    """Factory of NIR LIF nodes (tau in steps at dt = 1 ms)."""
    return _lif


@pytest.fixture()
def make_shortcut_graph():
    """Factory of the shortcut-and-bias test graph, by seed."""
    return _shortcut_graph


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train the demo MLP briefly (3 epochs, ~2 s) and export it; returns the run folder."""
    from lrfdyn.export.to_nir import write_nir
    from lrfdyn.pipeline import checkpoint_to_nir
    from lrfdyn.train.trainer import TrainConfig, train

    out = tmp_path_factory.mktemp("digits_run")
    cfg = TrainConfig(data="digits", epochs=3, out=str(out), model={"hidden": [48, 32]})
    train(cfg, progress=False)
    write_nir(checkpoint_to_nir(out / "checkpoint.pt"), out / "model.nir")
    return out


#: A tiny LRF-Dyn Spikformer: 14×14 images, stem strides 1·2 → a 7×7 token grid, whose
#: dilation-5 taps need delays beyond 63, so dendritic mode's relays are exercised too.
TINY_LRF_DYN = dict(img_size=14, in_channels=1, num_classes=4, dim=6, depth=1, heads=2,
                    timesteps=2, k_dendrites=3, stem_strides=[1, 2], attention="lrf_dyn",
                    lrf_dilations=[3, 5])


@pytest.fixture(scope="session")
def tiny_lrf_dyn():
    """(model, NIR graph) of an untrained TINY_LRF_DYN with non-trivial BNs, couplings
    and Γ, so that every dendritic tap, synapse and bias carries a value."""
    import torch

    from lrfdyn.export.to_nir import model_to_nir
    from lrfdyn.train.models import build_model

    torch.manual_seed(0)
    model = build_model("spikformer", TINY_LRF_DYN).eval()
    with torch.no_grad():
        for bn in model.modules():  # trained BNs have statistics, hence biases everywhere
            if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm):
                bn.running_mean.uniform_(-0.2, 0.2)
                bn.running_var.uniform_(0.5, 2.0)
        attn = model.blocks[0].attn
        attn.beta_raw.uniform_(-2, 2)
        attn.gamma.uniform_(0.5, 1.5)
    return model, model_to_nir(model, (1, 14, 14), TINY_LRF_DYN["timesteps"])


@pytest.fixture(scope="session")
def loud_tiny_spikformer(tmp_path_factory: pytest.TempPathFactory):
    """``make(cfg, seed, biased)``: a tiny 14×14 Spikformer, trained-like, with every BN
    five times louder and +1 on the BN bias of the attention's ``biased`` spike kinds, so
    that its products fire; returns (model, the exported graph read back, 3 images)."""
    import torch

    from lrfdyn.export.to_nir import model_to_nir, write_nir
    from lrfdyn.memory_models import trained_like
    from lrfdyn.sim.simulate import read_graph
    from lrfdyn.train.models import build_model

    def make(cfg: dict, seed: int, biased: tuple[str, ...]):
        torch.manual_seed(seed)
        model = build_model("spikformer", cfg).eval()
        trained_like(model, seed)
        with torch.no_grad():
            for bn in model.modules():
                if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm):
                    bn.weight.mul_(5.0)
            for kind in biased:
                getattr(model.blocks[0].attn, kind).bn.bias.add_(1.0)
        path = tmp_path_factory.mktemp(str(cfg["attention"])) / "model.nir"
        write_nir(model_to_nir(model, (1, 14, 14), int(cfg["timesteps"])), path)
        x = np.random.default_rng(1).integers(0, 256, size=(3, 196))
        return model, read_graph(path), x

    return make


def reimport_equals_model(model, graph: nir.NIRGraph, x: np.ndarray) -> bool:
    """Whether the float re-import of ``graph`` sends the trained ``model``'s output
    spikes exactly, on 8-bit images ``x`` (N, 196) of a 14×14 grid."""
    import torch

    from lrfdyn.export.from_nir import run_float

    images = x.reshape(-1, 1, 14, 14).astype(np.float32)
    with torch.no_grad():
        out, _ = model(torch.as_tensor(images) / 255.0)
    return np.array_equal(run_float(graph, images), out.permute(1, 0, 2).numpy())


@pytest.fixture(scope="session")
def float_reimport_equal():
    """:func:`reimport_equals_model`, for tests (conftest is not importable by name)."""
    return reimport_equals_model


#: The tiny LRF-Dyn Spikformer of the shared fixtures (7×7 tokens, relays in the stream).
TINY_LRF_DYN = dict(img_size=14, in_channels=1, num_classes=4, dim=6, depth=1, heads=2,
                    timesteps=2, k_dendrites=3, stem_strides=[1, 2], attention="lrf_dyn",
                    lrf_dilations=[3, 5])


def activate(model, seed: int) -> None:
    """BN statistics, couplings and Γ as after training, and BN gains large enough that
    every layer of an untrained model spikes (the tiny fixture's stem stays silent)."""
    import torch

    torch.manual_seed(seed)
    with torch.no_grad():
        for bn in model.modules():
            if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm):
                bn.running_mean.uniform_(-0.2, 0.2)
                bn.running_var.uniform_(0.5, 2.0)
                bn.weight.mul_(10.0)
        for blk in model.blocks:
            blk.attn.beta_raw.uniform_(-2, 2)
            blk.attn.gamma.uniform_(0.5, 1.5)


@pytest.fixture(scope="session")
def activate_model():
    """:func:`activate`, for tests (conftest is not importable by name)."""
    return activate


@pytest.fixture(scope="session")
def active_lrf_dyn() -> nir.NIRGraph:
    """The tiny LRF-Dyn Spikformer, :func:`activate`-d, as NIR: every layer spikes and the
    dendrite couplings are non-zero."""
    import torch

    from lrfdyn.export.to_nir import model_to_nir
    from lrfdyn.train.models import build_model

    torch.manual_seed(0)
    model = build_model("spikformer", TINY_LRF_DYN).eval()
    activate(model, 0)
    return model_to_nir(model, (1, 14, 14), TINY_LRF_DYN["timesteps"])


def conv_chain(k1: np.ndarray | None = None) -> nir.NIRGraph:
    """input (1, 3, 3) → c1 → c2 → l: c2 reads c1's zero padding, so c1 stays a relay
    whatever its weights (default: 0.1 around a centre of 0.5)."""
    if k1 is None:
        k1 = np.full((1, 1, 3, 3), 0.1)
        k1[0, 0, 1, 1] = 0.5
    k2 = np.zeros((1, 1, 3, 3))
    k2[0, 0, 0, 1], k2[0, 0, 1, 1] = -0.5, 1.0
    shape = (1, 3, 3)
    nodes = {"input": nir.Input(input_type={"input": np.array(shape)}),
             "c1": nir.Conv2d(input_shape=(3, 3), weight=k1, stride=1, padding=1, dilation=1,
                              groups=1, bias=np.zeros(1)),
             "c2": nir.Conv2d(input_shape=(3, 3), weight=k2, stride=1, padding=1, dilation=1,
                              groups=1, bias=np.zeros(1)),
             "l": nir.LIF(tau=np.full(shape, 2e-3), r=np.ones(shape), v_leak=np.zeros(shape),
                          v_threshold=np.ones(shape), v_reset=np.zeros(shape)),
             "output": nir.Output(output_type={"output": np.array(shape)})}
    edges = [("input", "c1"), ("c1", "c2"), ("c2", "l"), ("l", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False,
                        metadata={"dt": 1e-3, "timesteps": 4, "input_levels": 1})


@pytest.fixture(scope="session")
def conv_chain_graph():
    """:func:`conv_chain`, for tests (conftest is not importable by name)."""
    return conv_chain
