"""Label generation: per-sample unimodal targets made from the multimodal label during training.

``ulgm`` is Self-MM's unimodal label generation module (Yu, Xu, Yuan, Wu, "Learning
Modality-Specific Representations with Self-Supervised Multi-Task Learning for Multimodal
Sentiment Analysis", AAAI 2021, §3.3 ULGM and its momentum-based update), with the formulas
and the order of updates of the authors' trainer as MMSA 2.2.1 runs it (``trains/multiTask/
SELF_MM.py``: ``init_labels``, ``update_labels``, ``update_features``, ``update_centers``,
``weighted_loss``). A training-only block: it reads ``label`` and ``index``, keeps its state in
buffers (saved in checkpoints, restored on resume), and only losses read its outputs.
Module: :mod:`composer.blocks.ulgm`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from composer.configs._base import BlockConfig, Shapes, SpecError
from composer.registry import block_type
from composer.spec import Spec, labels, vector

__all__ = ["ULGMConfig"]

#: The ports every ``ulgm`` reads besides the unimodal representations.
FIXED_PORTS = ("fusion", "label", "index")


@block_type("other", implementation="composer.blocks.ulgm:ULGM")
class ULGMConfig(BlockConfig):
    """Self-MM's unimodal label generation (ULGM): a target and a loss weight per sample and modality.

    Ports: ``fusion`` the fused representation ``(B, D_f)``; one port per modality ``m`` with its
    representation ``(B, D_m)``; ``label`` the multimodal label ``(B,)``; ``index`` each sample's
    position in the train split ``(B,)``. Outputs (all ``(B,)``): ``<m>`` the generated label
    ``y_m`` of each modality and ``weight_<m> = tanh(|y_m - y_f|)`` (for ``weight_from`` of its
    loss), and ``fusion`` the multimodal label ``y_f``.

    State over the train split (``samples`` rows): the last representation of every sample per
    port, the generated labels per modality, and the epoch. In training, for a batch:

    1. in epoch 1 every label of the batch's samples starts as ``y_f`` (MMSA's ``init_labels``);
    2. the outputs are the labels *before* this step's update (the loss reads them);
    3. from epoch 2 (``n``), with class centres ``C_p``/``C_n`` of each port (the mean stored
       representation of the samples whose stored label is positive / negative; zero counts as
       positive unless ``exclude_zero``): ``d_p = |f - C_p|``, ``d_n = |f - C_n|``,
       ``δ = (d_n - d_p) / (d_p + ε)`` for the fusion (``δ_f``) and each modality (``δ_s``),
       ``α = δ_s / (δ_f + ε)``, ``ŷ_s = clamp(α y_f / 2 + (y_f + δ_s - δ_f) / 2, -bound, bound)``,
       ``y_s ← (n - 1)/(n + 1) y_s + 2/(n + 1) ŷ_s`` (ε = 1e-8); while a port has no stored label
       of one sign (no centre: MMSA's labels turn NaN) its samples' labels stay as they are;
    4. the batch's representations are stored (detached).

    Out of training (the validation loss) nothing changes and the outputs are ``y_f`` with
    weight 0, so unimodal terms add nothing, as MMSA's validation loss is the multimodal one.
    Buffers: ``samples · (D_f + Σ D_m + M + 1)`` numbers.
    """

    type: Literal["ulgm"] = "ulgm"
    targets_only = True
    samples: int = Field(ge=1, le=100_000_000, description="Samples in the train split (its state has one row per sample).")
    bound: float = Field(default=3.0, gt=0, description="Generated labels are clamped to [-bound, bound] (MMSA's H: 3 on MOSI/MOSEI, 1 on SIMS).")
    exclude_zero: bool = Field(default=False, description="Leave samples whose label is 0 out of the positive centre (MMSA's excludeZero).")

    def modality_ports(self, inputs: dict[str, Spec]) -> list[str]:
        return [p for p in inputs if p not in FIXED_PORTS]

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        missing = [p for p in FIXED_PORTS if p not in inputs]
        if missing:
            raise SpecError(f"ulgm reads ports fusion, label, index and one per modality; missing {', '.join(missing)}", field="in")
        modalities = self.modality_ports(inputs)
        if not modalities:
            raise SpecError("ulgm needs at least one modality's representation besides `fusion`", field="in")
        for port in ["fusion", *modalities]:
            if inputs[port].kind != "vector":
                raise SpecError(f"port '{port}' must be a vector (B, D), got {inputs[port]}", field="in")
        if inputs["label"].kind != "labels" or inputs["label"].dtype != "float":
            raise SpecError(f"port 'label' must be a regression label (B,) (Self-MM is a regression model), got {inputs['label']}", field="in")
        if inputs["index"].kind != "labels" or inputs["index"].dtype != "long":
            raise SpecError(f"port 'index' must be the batch's `index`, got {inputs['index']}", field="in")
        out = {"fusion": labels("float")}
        for m in modalities:
            out[m] = labels("float")
            out[f"weight_{m}"] = labels("float")
        return out

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        return {}

    @classmethod
    def examples(cls):
        return [
            ({"samples": 120}, {"fusion": vector(6), "text": vector(4), "audio": vector(3),
                                "label": labels("float"), "index": labels("long")}),
        ]
