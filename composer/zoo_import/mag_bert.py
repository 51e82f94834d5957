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

MMSA's gate knows its two inputs as visual and acoustic; the zoo's block names those ports
``vision`` and ``audio`` (a hybrid with other port names passes them to :func:`mag_gate`).
"""

from __future__ import annotations

from composer.zoo_import._pieces import NameMap, bert, linear

__all__ = ["NAME_MAPS", "mag_gate"]

ENCODER = "text_enc"


def mag_gate(block: str, mmsa_prefix: str, vision: str = "vision", audio: str = "audio") -> NameMap:
    """MMSA's ``MAG`` at ``mmsa_prefix`` (e.g. ``model.bert.MAG``) -> the gate of the ``mag_bert`` block
    ``block`` whose visual and acoustic inputs are the ports ``vision`` and ``audio``."""
    gate = f"{block}.gate"
    return {
        **linear(f"{mmsa_prefix}.W_hv", f"{gate}.gates.{vision}"),
        **linear(f"{mmsa_prefix}.W_ha", f"{gate}.gates.{audio}"),
        **linear(f"{mmsa_prefix}.W_v", f"{gate}.shifts.{vision}"),
        **linear(f"{mmsa_prefix}.W_a", f"{gate}.shifts.{audio}"),
        **linear(f"{mmsa_prefix}.LayerNorm", f"{gate}.norm"),
    }


def mag_bert_names(model) -> NameMap:
    return {**bert(model, ENCODER, "model.bert"), **mag_gate(ENCODER, "model.bert.MAG"), **linear("model.classifier", "head.linear")}


NAME_MAPS = {"mag_bert": mag_bert_names}
