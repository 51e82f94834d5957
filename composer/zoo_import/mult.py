"""Name map of MMSA's MulT (``models/singleTask/MULT.py`` with ``subNets/transformers_encoder``) onto
the zoo's ``mult`` blueprint (blueprints/zoo/mult.yaml: three uses of the ``mult_branch`` template)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from composer.errors import ComposerError
from composer.zoo_import._pieces import NameMap, fairseq_encoder, linear

__all__ = ["NAME_MAPS", "CONSTANTS", "BRANCHES"]

#: MMSA's transformers per target modality (l, a, v) -> the zoo's branch and its template ports:
#: ``trans_<x>_with_<s1>`` is the branch's ``cm1``, ``trans_<x>_with_<s2>`` its ``cm2``, ``trans_<x>_mem`` its ``memory``.
BRANCHES = {"l": ("branch_t", "a", "v"), "a": ("branch_a", "l", "v"), "v": ("branch_v", "l", "a")}


def _encoder(mmsa_prefix: str, prefix: str, layers: int) -> NameMap:
    """MMSA's ``TransformerEncoder`` -> a ``crossmodal`` / ``transformer`` block's ``MulTEncoder``
    (:func:`~composer.zoo_import._pieces.fairseq_encoder`; MulT's embed no positions here)."""
    return fairseq_encoder(mmsa_prefix, prefix, layers)


def mult_names(model) -> NameMap:
    """Conv1d projections, six crossmodal and three memory transformers, the residual head.

    The authors' blueprint (blueprints/mult.yaml) is also named ``mult``; it has no branches and
    is refused with a :class:`ComposerError` that names the zoo's."""
    parts = [f"{b}/{part}" for b, _, _ in BRANCHES.values() for part in ("cm1", "cm2", "memory")]  # the template's blocks
    missing = sorted({p.split("/")[0] for p in parts if p not in model.blueprint.blocks})
    if missing:
        raise ComposerError(
            f"MMSA's MulT weights map onto blueprints/zoo/mult.yaml (blocks branch_t, branch_a, branch_v); this "
            f"'mult' blueprint has no block {', '.join(missing)} (the authors' blueprints/mult.yaml is not MMSA's layout)"
        )
    names: NameMap = {f"proj_{m}.weight": f"proj_{c}.conv.weight" for m, c in (("l", "t"), ("a", "a"), ("v", "v"))}
    for target, (branch, first, second) in BRANCHES.items():
        for mmsa_name, part in ((f"trans_{target}_with_{first}", "cm1"), (f"trans_{target}_with_{second}", "cm2"), (f"trans_{target}_mem", "memory")):
            layers = len(model.block(f"{branch}.{part}").encoder.layers)
            names.update(_encoder(mmsa_name, f"{branch}.{part}.encoder", layers))
    head = model.block("head").residual  # Linear, ReLU, [Dropout], Linear: proj1 and proj2
    proj1, proj2 = (f"head.residual.{i}" for i, layer in enumerate(head) if isinstance(layer, torch.nn.Linear))
    return {**names, **linear("proj1", proj1), **linear("proj2", proj2), **linear("out_layer", "head.out")}


NAME_MAPS: dict[str, Callable[[Any], NameMap]] = {"mult": mult_names}

#: MMSA's constant ``version`` buffers (fairseq's, value 2 in every TransformerEncoder) -> their value.
CONSTANTS: dict[str, dict[str, Callable[[Any], float]]] = {
    "mult": {
        f"{name}.version": (lambda model: 2.0)
        for target, (_, first, second) in BRANCHES.items()
        for name in (f"trans_{target}_with_{first}", f"trans_{target}_with_{second}", f"trans_{target}_mem")
    }
}
