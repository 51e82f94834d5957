"""Name maps of MMSA's multi-task baselines for CH-SIMS (MLF-DNN, MTFN, MLMF: ``models/multiTask``).

Each keeps its own copies of TFN's SubNet / TextSubNet (the same tensor names as the classic
ones) and a three-layer head per output: ``post_fusion`` (M), ``post_text``, ``post_audio``,
``post_video`` -> the zoo's ``dnn_head`` templates ``post``, ``text_head``, ``audio_head``,
``vision_head`` (MLMF's M head is its low-rank fusion's output: no ``post``).
"""

from __future__ import annotations

from composer.zoo_import._pieces import NameMap, low_rank_factors, output_constants, subnets, three_layers

__all__ = ["NAME_MAPS", "CONSTANTS"]

_UNIMODAL_HEADS = (("post_text", "text_head"), ("post_audio", "audio_head"), ("post_video", "vision_head"))


def _heads(with_fusion_head: bool) -> NameMap:
    heads = [*_UNIMODAL_HEADS, *([("post_fusion", "post")] if with_fusion_head else [])]
    return {k: v for mmsa_name, head in heads for k, v in three_layers(mmsa_name, f"{head}.layers.net").items()}


def mlf_dnn_names(model) -> NameMap:
    return {**subnets(), **_heads(with_fusion_head=True)}


def mtfn_names(model) -> NameMap:
    # output_range (high - low) and output_shift (low) are frozen constants: CONSTANTS checks them
    return {**subnets(), **_heads(with_fusion_head=True), "output_range": None, "output_shift": None}


def mlmf_names(model) -> NameMap:
    return {**subnets(), **_heads(with_fusion_head=False), **low_rank_factors()}


NAME_MAPS = {"mlf_dnn": mlf_dnn_names, "mtfn": mtfn_names, "mlmf": mlmf_names}

#: MMSA's frozen constants (mapped to None) -> their value in the blueprint.
CONSTANTS = {"mtfn": output_constants()}
