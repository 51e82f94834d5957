"""Name map of MMSA's BERT_MAG (``models/singleTask/BERT_MAG.py``) -> the zoo's ``mag_bert`` blueprint.

MMSA's module is ``BERT_MAG.model`` = ``MAG_BertForSequenceClassification``: ``bert``
(``MAG_BertModel``: ``transformers``' embeddings, encoder and pooler under their own names, and
the gate ``MAG``) and ``classifier``. The BERT tensors keep their names below ``model.bert`` (the
shared :func:`~composer.zoo_import._pieces.bert` piece); the gate's four Linears and LayerNorm
become the ``mag_bert`` block's per-modality ``gates`` / ``shifts`` and ``norm``:

=====================  ==============================  ===========================================
MMSA                   Composer                        MAG (Rahman et al. 2020)
=====================  ==============================  ===========================================
``MAG.W_hv``           ``gate.gates.<vision port>``    ``W_gv`` of eq. 1 (input ``[V_i; Z_i]``)
``MAG.W_ha``           ``gate.gates.<audio port>``     ``W_ga`` of eq. 2
``MAG.W_v``            ``gate.shifts.<vision port>``   ``W_v`` of eq. 3
``MAG.W_a``            ``gate.shifts.<audio port>``    ``W_a`` of eq. 3
``MAG.LayerNorm``      ``gate.norm``                   LayerNorm after eq. 4
``classifier``         ``head.linear``                 the output layer
=====================  ==============================  ===========================================

The ports are found by the modality that feeds them (``vision``, ``audio``), so a blueprint that
names its ports otherwise maps the same way.
"""

from __future__ import annotations

from composer.errors import ComposerError
from composer.zoo_import._pieces import NameMap, bert, linear

__all__ = ["NAME_MAPS", "mag_gate"]

ENCODER = "text_enc"


def _port_of(model, block: str, modality: str) -> str:
    """The input port of ``block`` that reads ``modality`` (MMSA's gate knows its inputs as visual and acoustic)."""
    ports = model.blueprint.blocks[block].input_map()
    found = [port for port, ref in ports.items() if ref.split(".")[0] == modality]
    if len(found) != 1:
        raise ComposerError(f"block '{block}' must read modality '{modality}' through exactly one port to take MMSA's gate, got {ports}")
    return found[0]


def mag_gate(model, block: str, mmsa_prefix: str) -> NameMap:
    """MMSA's ``MAG`` at ``mmsa_prefix`` (e.g. ``model.bert.MAG``) -> the gate of the ``mag_bert`` block ``block``."""
    vision, audio = _port_of(model, block, "vision"), _port_of(model, block, "audio")
    gate = f"{block}.gate"
    return {
        **linear(f"{mmsa_prefix}.W_hv", f"{gate}.gates.{vision}"),
        **linear(f"{mmsa_prefix}.W_ha", f"{gate}.gates.{audio}"),
        **linear(f"{mmsa_prefix}.W_v", f"{gate}.shifts.{vision}"),
        **linear(f"{mmsa_prefix}.W_a", f"{gate}.shifts.{audio}"),
        **linear(f"{mmsa_prefix}.LayerNorm", f"{gate}.norm"),
    }


def mag_bert_names(model) -> NameMap:
    return {**bert(model, ENCODER, "model.bert"), **mag_gate(model, ENCODER, "model.bert.MAG"), **linear("model.classifier", "head.linear")}


NAME_MAPS = {"mag_bert": mag_bert_names}
