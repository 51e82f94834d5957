"""Name map of MMSA's MISA (``models/singleTask/MISA.py``) -> the zoo's ``misa`` blueprint.

BERT maps through :func:`composer.zoo_import._pieces.bert` (with its pooler: MMSA's BertModel has
one). MMSA's LSTMs, layer norms and transformer encoder are the same PyTorch modules in Composer,
so their tensors keep their names below each prefix. Two parts of MMSA's module are never read by
the prediction or by any term of its trainer's loss: the ``sp_discriminator`` (computed on every
pass, but ``sp_weight`` is never used) and ``tlayer_norm`` (a LayerNorm of width 2·768 that only
the non-BERT text path would apply). The blueprint leaves both out; a file must hold them and they
are dropped (``UNUSED``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from composer.zoo_import._pieces import NameMap, bert, linear, mlp_linears

__all__ = ["NAME_MAPS", "UNUSED"]

#: MMSA's modality letters and module names -> the blueprint's (MMSA's private_a Linear is `_3`).
MODALITIES = (("t", "text", "1"), ("v", "vision", "1"), ("a", "audio", "3"))


def _same_names(model, block: str, mmsa_prefix: str) -> NameMap:
    """A PyTorch module that MMSA and the block hold alike (nn.LSTM, nn.LayerNorm,
    nn.TransformerEncoder): every tensor keeps its name below the two prefixes."""
    module = model.block(block)
    return {f"{mmsa_prefix}.{k}": f"{block.replace('/', '.')}.{k}" for k in module.state_dict()}


def misa_names(model) -> NameMap:
    names = bert(model, "text_bert", "bertmodel.model")
    for mmsa_m, m in (("a", "audio"), ("v", "vision")):  # extract_features: rnn1, layer norm, rnn2
        names.update(_same_names(model, f"{m}_rnn/rnn1/rnn", f"{mmsa_m}rnn1"))
        names.update(_same_names(model, f"{m}_rnn/rnn2/rnn", f"{mmsa_m}rnn2"))
        names.update(_same_names(model, f"{m}_rnn/norm/norm", f"{mmsa_m}layer_norm"))
    for mmsa_m, _, private in MODALITIES:
        names.update(linear(f"project_{mmsa_m}.project_{mmsa_m}", f"project_{mmsa_m}.linear"))
        names.update(linear(f"project_{mmsa_m}.project_{mmsa_m}_layer_norm", f"project_{mmsa_m}.norm"))
        names.update(linear(f"private_{mmsa_m}.private_{mmsa_m}_{private}", f"private_{mmsa_m}_lin.linear"))
        names.update(linear(f"recon_{mmsa_m}.recon_{mmsa_m}_1", f"recon_{mmsa_m}.linear"))
    names.update(linear("shared.shared_1", "shared_t_lin.linear"))  # one encoder, used three times
    names.update(_same_names(model, "transformer/encoder", "transformer_encoder"))
    first, second = mlp_linears(model, "head")
    names.update({**linear("fusion.fusion_layer_1", first), **linear("fusion.fusion_layer_3", second)})
    names.update({k: None for k in ("sp_discriminator.sp_discriminator_layer_1.weight", "sp_discriminator.sp_discriminator_layer_1.bias",
                                    "tlayer_norm.weight", "tlayer_norm.bias")})
    return names


NAME_MAPS: dict[str, Callable[[Any], NameMap]] = {"misa": misa_names}

#: MMSA tensors no computation of the prediction or the loss reads: in every file, dropped.
UNUSED = {"misa": ("sp_discriminator.", "tlayer_norm.")}
