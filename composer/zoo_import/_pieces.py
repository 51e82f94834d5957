"""Pieces of the MMSA -> Composer name maps: the tensor names of one layer on each side."""

from __future__ import annotations

import torch

__all__ = ["NameMap", "linear", "batch_norm", "lstm", "lstm_cell", "mlp_linears", "subnets", "three_layers", "low_rank_factors", "post_fusion", "output_constants", "mfn_memory", "bert", "fairseq_encoder"]

NameMap = dict[str, "str | None"]


def linear(mmsa_prefix: str, prefix: str) -> NameMap:
    return {f"{mmsa_prefix}.{k}": f"{prefix}.{k}" for k in ("weight", "bias")}


def batch_norm(mmsa_prefix: str, prefix: str) -> NameMap:
    return {f"{mmsa_prefix}.{k}": f"{prefix}.{k}" for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}


def lstm(mmsa_prefix: str, prefix: str, layers: int = 1, bidirectional: bool = False) -> NameMap:
    directions = ("", "_reverse") if bidirectional else ("",)
    return {f"{mmsa_prefix}.{k}_l{i}{d}": f"{prefix}.{k}_l{i}{d}" for i in range(layers) for d in directions
            for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}


def lstm_cell(mmsa_prefix: str, prefix: str) -> NameMap:
    return {f"{mmsa_prefix}.{k}": f"{prefix}.{k}" for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}


def mlp_linears(model, block: str) -> list[str]:
    """The Linear layers of an ``mlp`` block in order (``head.net.0``, ``head.net.3``): their indices
    depend on whether the block has dropout."""
    net = model.block(block).net
    return [f"{block}.net.{i}" for i, layer in enumerate(net) if isinstance(layer, torch.nn.Linear)]


def subnets() -> NameMap:
    """MMSA's SubNet / TextSubNet (FeatureNets.py) -> the zoo's vector_subnet / text_subnet templates."""
    names = {**lstm("text_subnet.rnn", "text_net.lstm.rnn"), **linear("text_subnet.linear_1", "text_net.proj.linear")}
    for mmsa_m, m in (("audio", "audio"), ("video", "vision")):
        names.update(batch_norm(f"{mmsa_m}_subnet.norm", f"{m}_net.norm.norm"))
        for i, index in ((1, 0), (2, 2), (3, 4)):
            names.update(linear(f"{mmsa_m}_subnet.linear_{i}", f"{m}_net.layers.net.{index}"))
    return names


def three_layers(mmsa_name: str, prefix: str) -> NameMap:
    """MMSA's ``<mmsa_name>_layer_1..3`` (Linear, dropout/activation between) -> the Linear layers
    ``<prefix>.0``, ``.2``, ``.4`` of a three-layer ``mlp`` (``post.net``) or ``dnn_head``
    (``text_head.layers.net``)."""
    return {k: v for i, index in ((1, 0), (2, 2), (3, 4)) for k, v in linear(f"{mmsa_name}_layer_{i}", f"{prefix}.{index}").items()}


def low_rank_factors() -> NameMap:
    """LMF's (and MLMF's) modality-specific factors, fusion weights and bias -> the ``low_rank_fusion``
    block ``fusion``."""
    factors = {f"{mmsa_m}_factor": f"fusion.factors.{m}" for mmsa_m, m in (("audio", "audio"), ("video", "vision"), ("text", "text"))}
    return {**factors, "fusion_weights": "fusion.weights", "fusion_bias": "fusion.bias"}


def post_fusion(prefix: str = "post") -> NameMap:
    return three_layers("post_fusion", f"{prefix}.net")


def output_constants(block: str = "out") -> dict:
    """MMSA's frozen ``output_range`` and ``output_shift`` (TFN, MTFN) -> the ``sigmoid_range``
    block's ``high - low`` and ``low``, read from the blueprint (for ``CONSTANTS``)."""

    def bounds(model):
        out = model.blueprint.blocks[block]
        return out.high - out.low, out.low

    return {"output_range": lambda m: bounds(m)[0], "output_shift": lambda m: bounds(m)[1]}


def mfn_memory(model) -> NameMap:
    """MFN / Graph_MFN's LSTMCells, gated memory (att2 = D_u, gamma1, gamma2) and output layers."""
    names: NameMap = {}
    for mmsa_m, m in (("l", "text"), ("a", "audio"), ("v", "vision")):
        names.update(lstm_cell(f"lstm_{mmsa_m}", f"memory.lstm.{m}"))
    for mmsa_name, name in (("att2", "proposal"), ("gamma1", "retain"), ("gamma2", "update")):
        names.update(linear(f"{mmsa_name}_fc1", f"memory.memory.{name}.0"))
        names.update(linear(f"{mmsa_name}_fc2", f"memory.memory.{name}.3"))
    first, second = mlp_linears(model, "head")
    return {**names, **linear("out_fc1", first), **linear("out_fc2", second)}


def bert(model, block: str, mmsa_prefix: str) -> NameMap:
    """MMSA's ``BertTextEncoder`` (its ``transformers`` BertModel at ``mmsa_prefix``, e.g.
    ``text_model.model``) -> the ``bert`` block ``block`` (``<block>.bert.*``): the same BertModel,
    so every tensor keeps its name below the prefix. The names come from Composer's block, so a
    blueprint without ``pooler: true`` leaves MMSA's (unused) pooler tensors unmapped, and the
    import refuses them."""
    return {f"{mmsa_prefix}.{k}": f"{block}.bert.{k}" for k in model.block(block).bert.state_dict()}


def fairseq_encoder(mmsa_prefix: str, prefix: str, layers: int, positions: bool = False) -> NameMap:
    """MMSA's ``subNets/transformers_encoder`` ``TransformerEncoder`` (MulT's, from fairseq) -> a
    :class:`~composer.layers.mult.MulTEncoder` at ``prefix``. Its ``version`` buffer (always 2, never
    read) and, when it embeds positions, ``embed_positions._float_tensor`` (a one-element buffer that
    only carries a dtype) map to ``None``: constants the family module lists in ``CONSTANTS``."""
    names: NameMap = {f"{mmsa_prefix}.version": None, **linear(f"{mmsa_prefix}.layer_norm", f"{prefix}.norm")}
    if positions:
        names[f"{mmsa_prefix}.embed_positions._float_tensor"] = None
    for i in range(layers):
        theirs, ours = f"{mmsa_prefix}.layers.{i}", f"{prefix}.layers.{i}"
        names[f"{theirs}.self_attn.in_proj_weight"] = f"{ours}.attn.in_proj_weight"
        names[f"{theirs}.self_attn.in_proj_bias"] = f"{ours}.attn.in_proj_bias"
        for part, mine in (("self_attn.out_proj", "attn.out_proj"), ("fc1", "fc1"), ("fc2", "fc2"), ("layer_norms.0", "norms.0"), ("layer_norms.1", "norms.1")):
            names.update(linear(f"{theirs}.{part}", f"{ours}.{mine}"))
    return names
