"""Weights saved by MMSA 2.2.1 for a zoo model, as a Composer weights file (``composer import-weights``).

One explicit name map per zoo model (``blueprints/zoo/``) says which MMSA tensor becomes which
Composer tensor; ``tests/test_mmsa_zoo.py`` proves the same maps (every tensor on both sides
used once, equal predictions and gradients). A map is a function of the compiled Composer model
(the blueprint at the chosen dataset), so the MMSA names it expects follow from the blueprint,
never from the file: ``MMSA name -> Composer name``, or ``None`` for MMSA's frozen constants that
are config values in Composer (checked against the blueprint instead).

The file is read with ``torch.load(weights_only=True)``: only tensors and plain containers are
unpickled, anything else is refused without running code. MMSA's trainers save
``AMIO.state_dict()``, whose names start with ``Model.``; a bare module's state dict is read too.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from composer.errors import ComposerError, DataError

__all__ = ["NAME_MAPS", "CONSTANTS", "import_mmsa_weights", "read_state_dict", "map_state_dict", "unregistered_vertices"]

NameMap = dict[str, "str | None"]


# -- pieces of the maps -------------------------------------------------------------------------


def _linear(mmsa_prefix: str, prefix: str) -> NameMap:
    return {f"{mmsa_prefix}.{k}": f"{prefix}.{k}" for k in ("weight", "bias")}


def _batch_norm(mmsa_prefix: str, prefix: str) -> NameMap:
    return {f"{mmsa_prefix}.{k}": f"{prefix}.{k}" for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}


def _lstm(mmsa_prefix: str, prefix: str, layers: int = 1) -> NameMap:
    return {f"{mmsa_prefix}.{k}_l{i}": f"{prefix}.{k}_l{i}" for i in range(layers) for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}


def _lstm_cell(mmsa_prefix: str, prefix: str) -> NameMap:
    return {f"{mmsa_prefix}.{k}": f"{prefix}.{k}" for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}


def _mlp_linears(model, block: str) -> list[str]:
    """The Linear layers of an ``mlp`` block in order (``head.net.0``, ``head.net.3``): their indices
    depend on whether the block has dropout."""
    net = model.block(block).net
    return [f"{block}.net.{i}" for i, layer in enumerate(net) if isinstance(layer, torch.nn.Linear)]


def _subnets() -> NameMap:
    """MMSA's SubNet / TextSubNet (FeatureNets.py) -> the zoo's vector_subnet / text_subnet templates."""
    names = {**_lstm("text_subnet.rnn", "text_net.lstm.rnn"), **_linear("text_subnet.linear_1", "text_net.proj.linear")}
    for mmsa_m, m in (("audio", "audio"), ("video", "vision")):
        names.update(_batch_norm(f"{mmsa_m}_subnet.norm", f"{m}_net.norm.norm"))
        for i, index in ((1, 0), (2, 2), (3, 4)):
            names.update(_linear(f"{mmsa_m}_subnet.linear_{i}", f"{m}_net.layers.net.{index}"))
    return names


def _post_fusion(prefix: str = "post") -> NameMap:
    return {k: v for i, index in ((1, 0), (2, 2), (3, 4)) for k, v in _linear(f"post_fusion_layer_{i}", f"{prefix}.net.{index}").items()}


def _memory(model) -> NameMap:
    """MFN / Graph_MFN's LSTMCells, gated memory (att2 = D_u, gamma1, gamma2) and output layers."""
    names: NameMap = {}
    for mmsa_m, m in (("l", "text"), ("a", "audio"), ("v", "vision")):
        names.update(_lstm_cell(f"lstm_{mmsa_m}", f"memory.lstm.{m}"))
    for mmsa_name, name in (("att2", "proposal"), ("gamma1", "retain"), ("gamma2", "update")):
        names.update(_linear(f"{mmsa_name}_fc1", f"memory.memory.{name}.0"))
        names.update(_linear(f"{mmsa_name}_fc2", f"memory.memory.{name}.3"))
    first, second = _mlp_linears(model, "head")
    return {**names, **_linear("out_fc1", first), **_linear("out_fc2", second)}


# -- one map per zoo model ------------------------------------------------------------------------


def tfn_names(model) -> NameMap:
    # output_range (high - low) and output_shift (low) are frozen constants: CONSTANTS checks them
    return {**_subnets(), **_post_fusion(), "output_range": None, "output_shift": None}


def lmf_names(model) -> NameMap:
    factors = {f"{mmsa_m}_factor": f"fusion.factors.{m}" for mmsa_m, m in (("audio", "audio"), ("video", "vision"), ("text", "text"))}
    return {**_subnets(), **factors, "fusion_weights": "fusion.weights", "fusion_bias": "fusion.bias"}


def lf_dnn_names(model) -> NameMap:
    return {**_subnets(), **_post_fusion()}


def ef_lstm_names(model) -> NameMap:
    layers = model.block("lstm").rnn.num_layers
    first, second = _mlp_linears(model, "head")
    return {**_batch_norm("norm", "norm.norm"), **_lstm("lstm", "lstm.rnn", layers), **_linear("linear", first), **_linear("out", second)}


def mfn_names(model) -> NameMap:
    attention = {**_linear("att1_fc1", "memory.attention.0"), **_linear("att1_fc2", "memory.attention.3")}
    return {**_memory(model), **attention}


#: MMSA's DynamicFusionGraph vertices (its ``networks`` dict, keyed by modality index tuples) -> Composer's.
VERTICES = {(0, 1): "text-audio", (0, 2): "text-vision", (1, 2): "audio-vision", (0, 1, 2): "text-audio-vision"}


def graph_mfn_names(model) -> NameMap:
    names: NameMap = {}
    for mmsa_m, m in (("l", "text"), ("a", "audio"), ("v", "vision")):
        names.update(_linear(f"{mmsa_m}_transform", f"memory.transform.{m}"))
    graph = "memory.graph"
    names.update({**_linear("graph_mfn.t_network.0", f"{graph}.top.0"), **_linear("graph_mfn.t_network.1.0", f"{graph}.top.1")})
    for mmsa_index, index in (("0", 0), ("1.0", 1), ("2", 2)):
        names.update(_linear(f"graph_mfn.efficacy_model.{mmsa_index}", f"{graph}.efficacy.{index}"))
    for key, vertex in VERTICES.items():  # not in MMSA's state dict: see unregistered_vertices
        names.update(_linear(f"graph_mfn.networks.{key}.0", f"{graph}.vertices.{vertex}.0"))
        names.update(_linear(f"graph_mfn.networks.{key}.1.0", f"{graph}.vertices.{vertex}.1"))
    return {**_memory(model), **names}


NAME_MAPS: dict[str, Callable[[Any], NameMap]] = {
    "tfn": tfn_names, "lmf": lmf_names, "lf_dnn": lf_dnn_names, "ef_lstm": ef_lstm_names,
    "mfn": mfn_names, "graph_mfn": graph_mfn_names,
}


def _sigmoid_range(model) -> tuple[float, float]:
    out = model.blueprint.blocks["out"]
    return out.high - out.low, out.low


#: MMSA's frozen constants (mapped to None) -> their value in the blueprint.
CONSTANTS: dict[str, dict[str, Callable[[Any], float]]] = {
    "tfn": {"output_range": lambda m: _sigmoid_range(m)[0], "output_shift": lambda m: _sigmoid_range(m)[1]},
}


def unregistered_vertices(mmsa_graph_mfn: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors of a Graph_MFN module's DFG vertex networks under the names the map uses
    (``graph_mfn.networks.(0, 1).0.weight``). MMSA holds them in a plain dict: ``state_dict()``
    and ``parameters()`` leave them out, its optimiser never trains them and no saved file has them."""
    networks = mmsa_graph_mfn.graph_mfn.networks
    return {f"graph_mfn.networks.{key}.{k}": v for key, net in networks.items() for k, v in net.state_dict().items()}


# -- reading and mapping -------------------------------------------------------------------------


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict saved with ``torch.save``, unpickling nothing but tensors (``weights_only``).

    MMSA's ``Model.`` prefix (its ``AMIO`` wrapper) is removed. Raises :class:`DataError` for a
    missing file, a pickle with other objects, or anything but a mapping of names to tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no MMSA weights file at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"{path}: not a tensors-only state dict (read with torch.load(weights_only=True), which unpickles "
            f"tensors and plain containers only and runs no code): {reason}"
        ) from None
    if not isinstance(state, Mapping):
        raise DataError(f"{path}: expected a state dict (names -> tensors), got {type(state).__name__}")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise DataError(f"{path}: entry {key!r} is a {type(value).__name__}, expected a tensor named by a string")
    if state and all(k.startswith("Model.") for k in state):  # AMIO.state_dict(): the model under AMIO.Model
        state = {k.removeprefix("Model."): v for k, v in state.items()}
    return dict(state)


def map_state_dict(state: Mapping[str, torch.Tensor], model, source: str = "the MMSA state dict") -> dict[str, torch.Tensor]:
    """MMSA's tensors renamed for ``model`` through its zoo name map, every one checked.

    Refuses (:class:`DataError`) a tensor the map does not expect, one it expects that is missing,
    a shape that differs from the model's, and a frozen constant that differs from the blueprint.
    """
    name = model.blueprint.name
    if name not in NAME_MAPS:
        raise ComposerError(f"blueprint '{name}' has no MMSA name map; import-weights reads {', '.join(sorted(NAME_MAPS))}")
    names = NAME_MAPS[name](model)
    missing, extra = sorted(set(names) - set(state)), sorted(set(state) - set(names))
    problems = []
    if missing:
        note = ""
        if any(k.startswith("graph_mfn.networks.") for k in missing):
            note = (
                " (MMSA's Graph_MFN keeps the dynamic fusion graph's vertex networks in a plain dict: they are never "
                "saved, so no file MMSA writes determines its predictions)"
            )
        problems.append(f"missing {len(missing)} tensor(s) the {name} blueprint needs: {', '.join(missing)}{note}")
    if extra:
        problems.append(f"{len(extra)} tensor(s) the {name} blueprint has no place for: {', '.join(extra)}")
    target = model.state_dict()
    for mmsa_name, ours in names.items():
        if mmsa_name not in state:
            continue
        tensor = state[mmsa_name]
        if ours is None:
            expected = CONSTANTS[name][mmsa_name](model)
            if tensor.numel() != 1 or abs(float(tensor) - expected) > 1e-6:
                problems.append(f"{mmsa_name} is {tensor.tolist()}, the blueprint's value is {expected}")
        elif tuple(tensor.shape) != tuple(target[ours].shape):
            problems.append(f"{mmsa_name} has shape {tuple(tensor.shape)}, {ours} needs {tuple(target[ours].shape)}")
        elif tensor.dtype != target[ours].dtype and not (tensor.is_floating_point() and target[ours].is_floating_point()):
            problems.append(f"{mmsa_name} is {tensor.dtype}, {ours} is {target[ours].dtype}")
    if problems:
        hint = "check --dataset and --set: the blueprint must be the configuration MMSA trained"
        raise DataError(f"{source} does not match blueprint '{name}' exactly: " + "; ".join(problems) + f" ({hint})")
    return {ours: state[k].to(target[ours].dtype) for k, ours in names.items() if ours is not None}


def import_mmsa_weights(
    state_path: str | Path, blueprint: str | Path, output: str | Path, *, dataset: str | None = None, overrides: list[str] | None = None
) -> Path:
    """Read an MMSA state dict, map it onto the zoo blueprint (at ``dataset``, with ``--set`` style
    ``overrides``) and write a Composer weights file (:func:`composer.load_model` reads it)."""
    from composer.blueprint.load import load_blueprint
    from composer.graph.model import compile_blueprint

    state = read_state_dict(state_path)
    model = compile_blueprint(load_blueprint(Path(blueprint), list(overrides or []), dataset=dataset))
    model.load_state_dict(map_state_dict(state, model, str(state_path)), strict=True)
    return model.save(output, extra={"composer.imported_from": f"MMSA 2.2.1 state dict {Path(state_path).name}"})
