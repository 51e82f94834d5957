"""Name maps of MMSA's classic single-task baselines (TFN, LMF, LF-DNN, EF-LSTM, MFN, Graph-MFN)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from composer.zoo_import._pieces import (
    NameMap, batch_norm, linear, low_rank_factors, lstm, mfn_memory, mlp_linears, output_constants, post_fusion, subnets,
)

__all__ = ["NAME_MAPS", "CONSTANTS", "MISSING_NOTES", "VERTICES", "unregistered_vertices"]


def tfn_names(model) -> NameMap:
    # output_range (high - low) and output_shift (low) are frozen constants: CONSTANTS checks them
    return {**subnets(), **post_fusion(), "output_range": None, "output_shift": None}


def lmf_names(model) -> NameMap:
    return {**subnets(), **low_rank_factors()}


def lf_dnn_names(model) -> NameMap:
    return {**subnets(), **post_fusion()}


def ef_lstm_names(model) -> NameMap:
    layers = model.block("lstm").rnn.num_layers
    first, second = mlp_linears(model, "head")
    return {**batch_norm("norm", "norm.norm"), **lstm("lstm", "lstm.rnn", layers), **linear("linear", first), **linear("out", second)}


def mfn_names(model) -> NameMap:
    attention = {**linear("att1_fc1", "memory.attention.0"), **linear("att1_fc2", "memory.attention.3")}
    return {**mfn_memory(model), **attention}


#: MMSA's DynamicFusionGraph vertices (its ``networks`` dict, keyed by modality index tuples) -> Composer's.
VERTICES = {(0, 1): "text-audio", (0, 2): "text-vision", (1, 2): "audio-vision", (0, 1, 2): "text-audio-vision"}


def graph_mfn_names(model) -> NameMap:
    names: NameMap = {}
    for mmsa_m, m in (("l", "text"), ("a", "audio"), ("v", "vision")):
        names.update(linear(f"{mmsa_m}_transform", f"memory.transform.{m}"))
    graph = "memory.graph"
    names.update({**linear("graph_mfn.t_network.0", f"{graph}.top.0"), **linear("graph_mfn.t_network.1.0", f"{graph}.top.1")})
    for mmsa_index, index in (("0", 0), ("1.0", 1), ("2", 2)):
        names.update(linear(f"graph_mfn.efficacy_model.{mmsa_index}", f"{graph}.efficacy.{index}"))
    for key, vertex in VERTICES.items():  # not in MMSA's state dict: see unregistered_vertices
        names.update(linear(f"graph_mfn.networks.{key}.0", f"{graph}.vertices.{vertex}.0"))
        names.update(linear(f"graph_mfn.networks.{key}.1.0", f"{graph}.vertices.{vertex}.1"))
    return {**mfn_memory(model), **names}


NAME_MAPS: dict[str, Callable[[Any], NameMap]] = {
    "tfn": tfn_names, "lmf": lmf_names, "lf_dnn": lf_dnn_names, "ef_lstm": ef_lstm_names,
    "mfn": mfn_names, "graph_mfn": graph_mfn_names,
}


#: MMSA's frozen constants (mapped to None) -> their value in the blueprint.
CONSTANTS: dict[str, dict[str, Callable[[Any], float]]] = {
    "tfn": output_constants(),
}


#: Graph-MFN files lack the DFG's vertex networks: why, for the refusal that names them.
MISSING_NOTES = {
    "graph_mfn": (
        "graph_mfn.networks.",
        "MMSA's Graph_MFN keeps the dynamic fusion graph's vertex networks in a plain dict: they are never "
        "saved, so no file MMSA writes determines its predictions",
    )
}


def unregistered_vertices(mmsa_graph_mfn: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors of a Graph_MFN module's DFG vertex networks under the names the map uses
    (``graph_mfn.networks.(0, 1).0.weight``). MMSA holds them in a plain dict: ``state_dict()``
    and ``parameters()`` leave them out, its optimiser never trains them and no saved file has them."""
    networks = mmsa_graph_mfn.graph_mfn.networks
    return {f"graph_mfn.networks.{key}.{k}": v for key, net in networks.items() for k, v in net.state_dict().items()}
