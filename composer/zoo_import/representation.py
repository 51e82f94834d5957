"""Name maps of MMSA's representation-learning models with a BERT text encoder (Self-MM, MMIM).

Each model's ``BertTextEncoder`` maps through :func:`composer.zoo_import._pieces.bert`. State that
MMSA's trainers keep outside the model (Self-MM's generated labels, features and class centres:
the ``ulgm`` block's buffers in Composer) is not in MMSA's files; the import leaves it as built
(:func:`composer.zoo_import.import_mmsa_weights`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from composer.zoo_import._pieces import NameMap, bert, linear, lstm

__all__ = ["NAME_MAPS"]

#: Self-MM's heads: MMSA's ``post_<name>`` layers -> the zoo's ``self_mm_head`` uses.
SELF_MM_HEADS = {"fusion": "head", "text": "head_text", "audio": "head_audio", "video": "head_vision"}


def self_mm_head(mmsa_name: str, use: str) -> NameMap:
    """``post_<name>_layer_1..3`` -> the template's ``layer_1`` and the two Linear layers of ``layers``."""
    return {
        **linear(f"post_{mmsa_name}_layer_1", f"{use}.layer_1.linear"),
        **linear(f"post_{mmsa_name}_layer_2", f"{use}.layers.net.0"),
        **linear(f"post_{mmsa_name}_layer_3", f"{use}.layers.net.2"),
    }


def self_mm_names(model) -> NameMap:
    """MMSA's SELF_MM: BertTextEncoder, the two AuViSubNets (LSTM, linear_1) and the four heads."""
    names = bert(model, "text_bert", "text_model.model")
    for mmsa_m, m in (("audio", "audio"), ("video", "vision")):
        layers = model.block(f"{m}_net/rnn").rnn.num_layers
        names.update(lstm(f"{mmsa_m}_model.rnn", f"{m}_net.rnn.rnn", layers))
        names.update(linear(f"{mmsa_m}_model.linear_1", f"{m}_net.linear_1.linear"))
    for mmsa_name, use in SELF_MM_HEADS.items():
        names.update(self_mm_head(mmsa_name, use))
    return names


def loss_prefix(model, name: str) -> str:
    """The parameter prefix of the loss named ``name`` (its networks: ``losses.<index>``)."""
    (index,) = [node.index for node in model.plan.losses if node.name == name]
    return f"losses.{index}"


#: MMIM's MMILB and CPC modules -> the zoo's losses (by name) that hold their networks.
MMIM_BOUNDS = {"mi_tv": ("lld_tv", "entropy_tv"), "mi_ta": ("lld_ta", "entropy_ta")}
MMIM_CPC = {"cpc_zt": "nce_text", "cpc_zv": "nce_vision", "cpc_za": "nce_audio"}


def mmim_names(model) -> NameMap:
    """MMSA's MMIM: BertTextEncoder, the two bidirectional RNNEncoders, the fusion network, and
    the networks of its bounds (MMILB's μ, log σ² and entropy projection; CPC's predictors)."""
    names = bert(model, "text_bert", "bertmodel.model")
    for mmsa_m, m in (("acoustic_enc", "audio"), ("visual_enc", "vision")):
        rnn = model.block(f"{m}_net/rnn").rnn
        names.update(lstm(f"{mmsa_m}.rnn", f"{m}_net.rnn.rnn", rnn.num_layers, rnn.bidirectional))
        names.update(linear(f"{mmsa_m}.linear_1", f"{m}_net.linear_1.linear"))
    names.update({**linear("fusion_prj.linear_1", "fusion_prj.layers.net.0"), **linear("fusion_prj.linear_2", "fusion_prj.layers.net.2"),
                  **linear("fusion_prj.linear_3", "fusion_prj.linear_3.linear")})
    for mmsa_name, (lld, entropy) in MMIM_BOUNDS.items():
        for net in ("mlp_mu", "mlp_logvar"):
            for i in (0, 2):
                names.update(linear(f"{mmsa_name}.{net}.{i}", f"{loss_prefix(model, lld)}.{net}.{i}"))
        names.update(linear(f"{mmsa_name}.entropy_prj.0", f"{loss_prefix(model, entropy)}.projection.0"))
    for mmsa_name, nce in MMIM_CPC.items():
        names.update(linear(f"{mmsa_name}.net", f"{loss_prefix(model, nce)}.net"))
    return names


NAME_MAPS: dict[str, Callable[[Any], NameMap]] = {"self_mm": self_mm_names, "mmim": mmim_names}
