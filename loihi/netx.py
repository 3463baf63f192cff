"""Write a lowered network as a lava-dl netx HDF5 file (Intel's own loader format).

``lava.lib.dl.netx.hdf5.Network`` is the loader Loihi 2 deployments use. Writing
the same integers into its format and running it beside lrfdyn's own Lava build
is an independent check of the lowering (``tests/loihi/test_netx.py``).

What netx can express, and how each lrfdyn field maps (lava-dl 0.6.0,
``netx/hdf5.py`` and ``netx/blocks/process.py``):

* The file is a sequential list ``layer/0, layer/1, …``; each
  :class:`NeuronGroup` becomes one layer with a CUBA LIF neuron.
* A netx dense layer computes exactly ``W·x``: ``weight`` holds the effective
  integer weights ``(n_out, n_in)`` and netx reads no weight exponent
  (``optimize_weight_bits`` rescales by ``2^s`` and sets ``weight_exp = −s``,
  losslessly). So a synapse is expressible in the file only with lrfdyn's
  ``weight_exp = 0`` and weights that netx's rescaling plus Lava's clip and
  truncation reproduce exactly (checked with netx's and Lava's own functions).
* Input, two modes:

  - *spike input* (first synapse ``weight_exp = 0``): ``layer/0`` is an
    ``input`` layer holding only ``shape``; netx then makes no input neuron and
    the network's ``inp`` feeds the first ``dense`` layer's synapse, as lrfdyn's
    source feeds its first Dense (load with ``input_message_bits`` of the source).
  - *graded input* (8-bit pixels: the first synapse has ``weight_exp = −8``,
    which netx cannot express): ``layer/0`` is an ``input`` layer *with* the
    first group's neuron, so the file starts at the first group's synaptic
    current. The first group's incoming synapses (pixels, and bias if any) are
    stored under ``lrfdyn/input_synapses`` and must run outside netx as plain
    Lava Dense processes (:func:`input_synapses`), exactly as lrfdyn's own
    build does, connected to ``network.layers[0].neuron.a_in``: lava-dl 0.6.0's
    ``Input`` block leaves its ``inp`` port unconnected (its comment: "the input
    must be handled through neuron's bias"), and compiling a network fed through
    ``inp`` fails. The cross-check then covers every neuron and every later
    synapse, but not the pixel synapse itself.
* ``neuron``: ``type = CUBA``, ``iDecay = du + 1`` (netx subtracts one),
  ``vDecay = dv``, ``vThMant = vth`` (used unscaled; Lava shifts it by 6 as in
  lrfdyn), ``refDelay = 1``, ``gradedSpike = False`` (binary spikes).
* Bias: netx has no synapse from an always-on source; a dense layer's ``bias``
  dataset becomes the LIF's ``bias_mant`` with ``bias_exp = 6``, i.e. ``v +=
  bias << 6`` every step from step 1. lrfdyn's bias synapse adds
  ``(w·2^exp) << 6`` to ``u``; with ``du = 4095`` (u keeps nothing) that is
  the same ``v`` increment, so ``bias = w·2^exp`` (13-bit). The timing
  differs: a neuron bias also acts during the pipeline's fill. netx's own
  periodic reset fixes that exactly: loaded with ``reset_interval = steps per
  sample`` and ``reset_offset = 1`` (:func:`loader_kwargs`), layer ``k``
  (0-based) zeroes ``u`` and ``v`` at 1-based step ``k + 2``, just before its
  first input of each sample arrives, so whatever the bias integrated during
  the fill is discarded. (Exact while ``u`` does not wrap, i.e. while
  ``|a_in| < 2^17`` — lrfdyn sums the bias into ``u``, netx adds it to ``v``.)

Alignment: netx adds no delay of its own (in graded mode the external Dense
adds the same one step as lrfdyn's). With samples run back to back,
``R = steps_per_sample`` steps each, netx layer ``k`` (0-based) at within-sample
step ``s`` (0-based) equals lrfdyn's Lava group ``k`` at step ``s`` and the
integer reference at step ``s − (k + 1)``, for ``k + 1 ≤ s < R``; the first
``k + 1`` steps of each block still carry the previous sample's tail.

Only chains are expressible (netx's dense layers are sequential, with no
shortcut or DelayDense between non-adjacent layers).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.sparse as sp

from lrfdyn.errors import UnsupportedNodeError
from lrfdyn.io import write_with
from lrfdyn.loihi import fixed
from lrfdyn.loihi.ir import LOWERING_VERSION, LoweredNetwork, SynapseSpec, bias_offset

#: Format note written into the file's attributes.
NETX_FORMAT = "lava-dl netx hdf5 (lava-dl 0.6.0), written by lrfdyn"
#: netx's dense neuron bias is ``bias_mant`` with this fixed ``bias_exp``.
NETX_BIAS_EXP = 6
#: Reset phase to pass to netx (its layer k then resets at 1-based step k + 2).
NETX_RESET_OFFSET = 1


def loader_kwargs(net: LoweredNetwork) -> dict[str, Any]:
    """Arguments for ``lava.lib.dl.netx.hdf5.Network`` that reproduce lrfdyn's timing.

    Samples are run back to back, ``steps_per_sample()`` steps each, and netx resets
    every layer just before its first input of each sample.
    """
    return {
        "input_message_bits": 0 if input_synapses(net) else net.input.num_message_bits,
        "reset_interval": net.steps_per_sample(),
        "reset_offset": NETX_RESET_OFFSET,
    }


def input_synapses(net: LoweredNetwork) -> list[SynapseSpec]:
    """The synapses the netx file leaves to the caller (graded mode), else ``[]``.

    In graded mode they are the first group's incoming synapses (from the input and
    from the bias source, which spikes every step from its start); connect each, as a Lava
    ``Dense`` with its ``weight_exp`` and ``num_message_bits``, to
    ``network.layers[0].neuron.a_in`` of the loaded netx network.
    """
    first = next(iter(net.groups))
    inc = net.incoming(first)
    data = [s for s in inc if s.src == net.input.name]
    return inc if data and data[0].weight_exp != 0 else []


def _refuse(what: str) -> UnsupportedNodeError:
    return UnsupportedNodeError(f"netx export: {what}")


def _chain(net: LoweredNetwork) -> list[tuple[str, SynapseSpec, SynapseSpec | None]]:
    """(group, data synapse, bias synapse or None) in chain order, or refuse."""
    layers = []
    prev = net.input.name
    for name, group in net.groups.items():
        inc = net.incoming(name)
        data = [s for s in inc if bias_offset(s.src) is None]
        bias = [s for s in inc if bias_offset(s.src) is not None]
        if len(data) != 1 or data[0].src != prev or data[0].delay != 0 or len(bias) > 1:
            raise _refuse(
                f"{name} is not fed by exactly one undelayed synapse from {prev!r}; netx "
                "layers form a chain, so shortcut/residual networks cannot be written; "
                "use `--format nir`"
            )
        if group.latency != len(layers) + 1:
            raise _refuse(f"{name} has latency {group.latency}, expected {len(layers) + 1} "
                          "in a chain; use `--format nir`")
        layers.append((name, data[0], bias[0] if bias else None))
        prev = name
    if not layers or prev != net.output:
        raise _refuse(f"the output group {net.output!r} is not the end of the chain")
    return layers


def _netx_weights(syn: SynapseSpec) -> np.ndarray:
    """The weights to write, after checking netx loads them to lrfdyn's exact product."""
    if syn.conv is not None:
        raise _refuse(f"synapse {syn.name} is a shared-kernel conv; lrfdyn writes netx "
                      "files for Dense chains only; use `--format nir`")
    if syn.weight_exp != 0:
        raise _refuse(
            f"synapse {syn.name} has weight_exp={syn.weight_exp}; netx reads no weight "
            "exponent (a netx dense layer computes W·x exactly), so only the network's "
            "first synapse may have one; use `--format nir`"
        )
    eff = _dense(fixed.dense_effective_weights(syn.weights))
    if not np.any(eff):
        raise _refuse(f"synapse {syn.name} has only zero weights, which netx cannot load "
                      "(its weight-bit optimizer divides by the largest weight)")
    import lrfdyn.loihi.compat  # noqa: F401  (before any lava import)
    from lava.lib.dl.netx.utils import optimize_weight_bits
    from lava.utils.weightutils import clip_weights, determine_sign_mode, truncate_weights

    with np.errstate(divide="ignore"):
        w, bits, exp, _ = optimize_weight_bits(eff.copy())
    mode = determine_sign_mode(w)  # what Lava's Dense model decides at run time
    loaded = truncate_weights(clip_weights(w, mode, num_bits=8), mode, bits)
    if exp > 0 or not np.array_equal(loaded.astype(np.int64), eff << -exp):
        raise _refuse(
            f"synapse {syn.name}: netx's weight rescaling (exponent {exp}, {bits} bits) "
            "would not reproduce lrfdyn's integer weights exactly; use `--format nir`"
        )
    return eff


def _dense(w) -> np.ndarray:
    return w.toarray() if sp.issparse(w) else np.asarray(w)


def _netx_bias(bias: SynapseSpec, du: int) -> np.ndarray:
    """netx ``bias`` (bias_mant at bias_exp 6) equal to lrfdyn's bias synapse."""
    if du != fixed.DECAY_UNITY - 1:
        raise _refuse(
            f"{bias.dst}: du={du}; lrfdyn's bias synapse passes through the current u, "
            "netx's bias does not, and they agree only for du=4095; use `--format nir`"
        )
    per_step = fixed.dense_accumulate(bias.weights, np.ones(1, np.int64), bias.weight_exp)
    if per_step.min() < fixed.BIAS_MANT_MIN or per_step.max() > fixed.BIAS_MANT_MAX:
        raise _refuse(
            f"{bias.dst}: bias {int(per_step.min())}..{int(per_step.max())} exceeds netx's "
            f"{fixed.BIAS_MANT_BITS}-bit bias mantissa (its bias_exp is fixed at "
            f"{NETX_BIAS_EXP}); use `--format nir`"
        )
    return per_step


def _ascii(group: h5py.Group, key: str, text: str) -> None:
    group.create_dataset(key, (1,), "S10", [text.encode("ascii")])


def _neuron(h: h5py.Group, p: fixed.LifParams) -> None:
    neuron = h.create_group("neuron")
    _ascii(neuron, "type", "CUBA")
    neuron.create_dataset("iDecay", data=p.du + 1)  # netx passes du = iDecay - 1
    neuron.create_dataset("vDecay", data=p.dv)
    neuron.create_dataset("vThMant", data=p.vth)  # unscaled; Lava shifts it by 6
    neuron.create_dataset("refDelay", data=1)
    neuron.create_dataset("gradedSpike", data=False)


def write_netx(net: LoweredNetwork, path: str | os.PathLike[str]) -> Path:
    """Write ``net`` as a netx HDF5 file; load it with :func:`loader_kwargs`.

    Raises:
        UnsupportedNodeError: for anything netx cannot express exactly (non-chain
            topologies, weight exponents past the first synapse, biases out of
            range, du != 4095 with a bias).
    """
    chain = _chain(net)
    external = input_synapses(net)
    if any(np.any(np.asarray(g.params.bias_mant)) for g in net.groups.values()):
        raise _refuse("a group uses a neuron bias_mant; lrfdyn lowers biases as synapses")
    layers = []
    for i, (name, data, bias) in enumerate(chain):
        p = net.groups[name].params
        if i == 0 and external:
            layers.append({"name": name, "type": "input", "params": p})
            continue
        layers.append({
            "name": name, "type": "dense", "params": p, "weight": _netx_weights(data),
            "bias": None if bias is None else _netx_bias(bias, p.du),
        })
    kwargs = loader_kwargs(net)
    mode = "graded" if external else "spike"

    def writer(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = NETX_FORMAT
            f.attrs["lrfdyn_lowering_version"] = LOWERING_VERSION
            f.attrs["input_mode"] = mode
            f.attrs["timesteps"] = net.input.timesteps
            f.attrs["steps_per_sample"] = net.steps_per_sample()
            f.attrs["note"] = (
                "load with lava.lib.dl.netx.hdf5.Network(net_config=..., "
                + ", ".join(f"{k}={v}" for k, v in kwargs.items())
                + "); layer k's 0-based step s of each sample equals lrfdyn's reference "
                "step s-(k+1)"
                + ("; the network input is the first layer's synaptic current: run "
                   "lrfdyn/input_synapses as Lava Dense processes into layers[0].neuron.a_in" if external else "")
            )
            root = f.create_group("layer")
            if not external:
                inp = root.create_group("0")
                _ascii(inp, "type", "input")
                inp.create_dataset("shape", data=np.array([net.input.size]))
            for i, layer in enumerate(layers, start=0 if external else 1):
                h = root.create_group(str(i))
                _ascii(h, "type", layer["type"])
                h.attrs["lrfdyn_group"] = layer["name"]
                h.create_dataset("shape", data=np.array([net.groups[layer["name"]].size]))
                if layer["type"] == "dense":
                    h.create_dataset("weight", data=layer["weight"].astype(np.int32))
                    if layer["bias"] is not None:
                        h.create_dataset("bias", data=layer["bias"].astype(np.int32))
                _neuron(h, layer["params"])
            for syn in external:
                g = f.create_group(f"lrfdyn/input_synapses/{syn.name}")
                g.attrs["src"] = str(syn.src)
                g.attrs["weight_exp"] = syn.weight_exp
                g.attrs["num_message_bits"] = syn.num_message_bits
                g.create_dataset("weight", data=_dense(syn.weights).astype(np.int32))

    return write_with(path, writer)
