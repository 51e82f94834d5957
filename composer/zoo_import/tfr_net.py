"""Name map of MMSA's TFR-Net (``models/missingTask/TFR_NET``: BertTextEncoder, CM_ATTN, three
``LinearTrans`` generators, GATE_F) onto the zoo's ``tfr_net`` blueprint (blueprints/zoo/tfr_net.yaml)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from composer.zoo_import._pieces import NameMap, batch_norm, bert, fairseq_encoder, linear, mlp_linears

__all__ = ["NAME_MAPS", "CONSTANTS", "MODALITIES"]

#: MMSA's modality letters -> the blueprint's ports and the suffix of its per-modality blocks.
MODALITIES = {"l": ("text", "t"), "a": ("audio", "a"), "v": ("vision", "v")}
#: GATE_F's encoders by modality.
_GATE_F = {"l": "text_encoder", "a": "audio_encoder", "v": "vision_encoder"}
_ALIGN = "align_subnet.Model"


def _align_transformers() -> list[tuple[str, str, str, bool]]:
    """(MMSA name, Composer module, ``align`` part kind, positions) of CM_ATTN's transformers."""
    out = []
    for m, (port, suffix) in MODALITIES.items():
        for n, (source, _) in MODALITIES.items():
            if n != m:
                out.append((f"{_ALIGN}.trans_{m}_with_{n}", f"align.cross.{port}_{source}", "cross", True))
        out.append((f"{_ALIGN}.trans_{m}_mem", f"align.memory.{port}", "memory", True))
        out.append((f"{_ALIGN}.trans_{m}_final", f"recon_{suffix}.encoder", "final", False))
    return out


def tfr_net_names(model) -> NameMap:
    """BERT, the three projections, the 12 transformers, the generators (owned by the losses
    ``rec_text``, ``rec_audio``, ``rec_vision``) and GATE_F."""
    names: NameMap = dict(bert(model, "text_enc", "text_model.model"))
    for m, (port, suffix) in MODALITIES.items():
        if f"align.project.{port}.weight" in model.state_dict():  # MMSA skips the projection at d = D_m
            names[f"{_ALIGN}.proj_{m}.weight"] = f"align.project.{port}.weight"
        loss = [node.name for node in model.plan.losses].index(f"rec_{port}")  # the loss owning the generator
        names.update(linear(f"generator_{suffix}.Model.linear", f"losses.{loss}.generator"))
        encoder, block = f"fusion_subnet.Model.{_GATE_F[m]}", f"fuse_{suffix}"
        names.update({f"{encoder}.gru.gru.{k}": f"{block}.gru.rnn.{k}" for k in model.block(block).gru.rnn.state_dict()})
        names.update({**linear(f"{encoder}.cnn", f"{block}.gate"), **linear(f"{encoder}.fc", f"{block}.fc")})
    for theirs, ours, _, positions in _align_transformers():
        layers = len(model.block(ours.split(".")[0]).get_submodule(ours.split(".", 1)[1]).layers)
        names.update(fairseq_encoder(theirs, ours, layers, positions))
    hidden, final = mlp_linears(model, "head")
    names.update(batch_norm("fusion_subnet.Model.classifier.linear_trans_norm", "norm.norm"))
    names.update({**linear("fusion_subnet.Model.classifier.linear_trans_hidden", hidden),
                  **linear("fusion_subnet.Model.classifier.linear_trans_final", final)})
    return names


NAME_MAPS: dict[str, Callable[[Any], NameMap]] = {"tfr_net": tfr_net_names}

#: ``version`` is 2 in every fairseq TransformerEncoder; ``_float_tensor`` only carries a dtype (its
#: one value is uninitialised memory, never read), so any value is accepted: NaN compares unequal to
#: nothing in the import's check (``abs(value - NaN) > 1e-6`` is false).
CONSTANTS: dict[str, dict[str, Callable[[Any], float]]] = {
    "tfr_net": {
        **{f"{theirs}.version": (lambda model: 2.0) for theirs, *_ in _align_transformers()},
        **{f"{theirs}.embed_positions._float_tensor": (lambda model: float("nan")) for theirs, _, _, pos in _align_transformers() if pos},
    }
}
