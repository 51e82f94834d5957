"""Config of HCT-MG: hierarchical crossmodal transformer with modality gating (§4, eqs. 1-6).

Block ``hierarchical_crossmodal``: three sequences ``{m: (B, T_m, d)}`` -> ``vector (B, 2a + 2d)``.
Modules: :mod:`composer.blocks.fusion.hierarchical`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from composer.configs._base import Shapes, SpecError, expect_kind
from composer.configs._shapes import linear, mult_encoder, under
from composer.configs.gating import GATED, gate_parameters
from composer.configs.transformer import MulTLayerSettings
from composer.registry import block_type
from composer.spec import Spec, sequence

__all__ = ["HierarchicalCrossmodalConfig"]

MODULES = "composer.blocks.fusion.hierarchical"


@block_type("fusion", implementation=f"{MODULES}:HierarchicalCrossmodal")
class HierarchicalCrossmodalConfig(MulTLayerSettings):
    """HCT-MG fusion: three sequences ``{m: (B, T_m, d)}`` -> ``vector (B, 2a + 2d)`` (``a = aux_width``, default 2d: 6d).

    With primary ``P`` and auxiliaries ``A1, A2`` (the two other ports, in port order):

    * eqs. (1)-(2): ``Â1 = CMT(A2 → A1)``, ``Â2 = CMT(A1 → A2)``;
    * eqs. (3)-(4): ``P̂_Â1 = CMT(Â1 → P)``, ``P̂_Â2 = CMT(Â2 → P)``;
    * eq. (5): ``P̂ = SA(concat_features[P̂_Â1; P̂_Â2])`` at width ``2d``;
    * eq. (6): ``Z = concat[W1 Â1; W2 Â2; P̂]`` with ``W1, W2`` bias-free ``d → a`` matrices
      (the paper gives no size; ``a = 2d`` by default, see ``aux_width``).

    CMT is MulT's crossmodal transformer and SA MulT's self-attention transformer (see
    :mod:`composer.layers.mult`). The weights belong to the *roles* (``cmt_a1``, ``cmt_a2``,
    ``cmt_p1``, ``cmt_p2``, ``self_attention``, ``w1``, ``w2``), not to modalities, so a new
    primary reuses them. Modality gating (:class:`~composer.blocks.gating.ModalityGate`):
    softmax weights ``ω`` (sum 1); ``P = argmax ω`` for the batch; with ``gate_at: inputs`` the
    sequences enter as ``ω_P·P, ω_A1·A1, ω_A2·A2`` (with ``outputs``: ``Z = [ω_A1 W1 Â1;
    ω_A2 W2 Â2; ω_P P̂]``), which is how the weights learn. A fixed ``primary`` has no gate.

    Z is a vector: each part is pooled over its own time axis before the concatenation
    (``pool: last`` takes the last valid step, as MulT does; the paper does not say). Padding
    masks: every source's mask is a key padding mask, pooling uses the target's mask.
    All inputs need the same width ``d``. Parameters (gated): ``4·CMT(d) + SA(2d) + 2ad + 3``
    with ``CMT(d) = layers·(12d² + 13d) + 2d``.
    """

    type: Literal["hierarchical_crossmodal"] = "hierarchical_crossmodal"
    primary: str = Field(
        default=GATED,
        description=(
            "gated: modality gating picks the primary per batch (HCT-MG); or a port name (text, audio, "
            "vision, ...) for a fixed primary without gate (the paper's Table 4 ablation)."
        ),
    )
    freeze_after: int | None = Field(
        default=None,
        ge=0,
        description="Freeze the gate after this many consecutive epochs without a change of primary (null: never).",
    )
    gate_at: Literal["inputs", "outputs"] = Field(
        default="inputs",
        description=(
            "Where the gate weights scale the representations: inputs (each modality's sequence before "
            "the hierarchy) or outputs (the three parts of Z)."
        ),
    )
    gate_scale: Literal["weights", "relative"] = Field(
        default="weights",
        description=(
            "weights: scale by the gate weights ω_m (the paper; ≈1/M each at initialisation); relative: by M·ω_m, "
            "1 at initialisation, so the gated model starts as the fixed-primary network (Table 4 comparisons)."
        ),
    )
    tie_break: str = Field(
        default="first",
        description=(
            "Which modality is primary when gate weights tie (at initialisation they all do): first = the first "
            "port (text in the shipped blueprints), or a port name."
        ),
    )
    # MulT's crossmodal defaults; the remaining layer settings come from MulTLayerSettings
    heads: int = Field(default=5, ge=1, description="Attention heads of every transformer (must divide d).")
    layers: int = Field(default=2, ge=1, description="Layers of each of the four crossmodal transformers.")
    sa_layers: int | None = Field(
        default=None,
        ge=1,
        description="Layers of the self-attention over [P̂_Â1; P̂_Â2] (eq. 5); default max(layers, 3), MulT's memory encoder.",
    )
    attn_dropout: float = Field(default=0.1, ge=0.0, lt=1.0, description="Dropout on attention weights.")
    relu_dropout: float = Field(default=0.1, ge=0.0, lt=1.0, description="Dropout after the feed-forward ReLU.")
    res_dropout: float = Field(default=0.1, ge=0.0, lt=1.0, description="Dropout on each residual branch.")
    embed_dropout: float = Field(default=0.25, ge=0.0, lt=1.0, description="Dropout on the scaled, position-encoded inputs.")
    aux_width: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Output width of W1 and W2 (eq. 6); default 2d, so the three parts of Z have the width of P̂ "
            "and Z the width 6d of MulT's combined_dim 2(d_l + d_a + d_v)."
        ),
    )
    pool: Literal["last", "mean"] = Field(
        default="last", description="How each part of Z becomes a vector: last valid step (MulT) or mean over valid steps."
    )

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        if len(inputs) != 3 or any(p.isdigit() for p in inputs) or "in" in inputs:
            raise SpecError(
                "hierarchical_crossmodal takes a mapping of exactly three modalities, e.g. "
                f"{{text: text_enc, audio: audio_enc, vision: vision_enc}}; got ports {sorted(inputs)}",
                field="in",
            )
        for port, spec in inputs.items():
            expect_kind(port, spec, "sequence")
        widths = {port: spec.features for port, spec in inputs.items()}
        if len(set(widths.values())) != 1:
            raise SpecError(
                f"all inputs need the same width d (roles move between modalities), got {widths}; "
                "project them first (e.g. conv_gru with the same hidden)",
                field="in",
            )
        if self.tie_break != "first" and self.tie_break not in inputs:
            raise SpecError(f"tie_break must be 'first' or one of the input ports {list(inputs)}, got '{self.tie_break}'", field="tie_break")
        if self.primary != GATED and self.primary not in inputs:
            raise SpecError(
                f"primary must be '{GATED}' or one of the input ports {list(inputs)}, got '{self.primary}'",
                field="primary",
            )
        d = int(next(iter(widths.values())))
        if d % self.heads:
            raise SpecError(f"the input width {d} is not divisible by heads={self.heads}", field="heads")
        first = next(iter(inputs.values()))
        return {"out": Spec("vector", (first.batch, 2 * (self.aux_width or 2 * d) + 2 * d))}

    def sa_depth(self) -> int:
        """Layers of the self-attention transformer of eq. (5): ``sa_layers`` or ``max(layers, 3)``."""
        return self.sa_layers or max(self.layers, 3)

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        d = int(next(iter(inputs.values())).features)
        aux_width = self.aux_width or 2 * d
        shapes = under("gate", gate_parameters(len(inputs), self.primary))
        for role in ("cmt_a1", "cmt_a2", "cmt_p1", "cmt_p2"):  # eqs. (1)-(4), MulT encoders at width d
            shapes.update(under(role, mult_encoder(d, self.layers)))
        return {
            **shapes,
            **under("self_attention", mult_encoder(2 * d, self.sa_depth())),
            **under("w1", linear(d, aux_width, bias=False)),
            **under("w2", linear(d, aux_width, bias=False)),
        }

    @classmethod
    def examples(cls):
        ports = {"text": sequence("T_t", 4), "audio": sequence("T_a", 4), "vision": sequence("T_v", 4)}
        return [
            ({"heads": 2, "layers": 1, "sa_layers": 1}, ports),
            ({"heads": 2, "layers": 1, "sa_layers": 1, "primary": "audio", "pool": "mean"}, ports),
            ({"heads": 1, "layers": 1, "gate_at": "outputs", "freeze_after": 2, "aux_width": 3}, ports),
            ({"heads": 2, "layers": 1, "sa_layers": 1, "gate_scale": "relative", "tie_break": "audio"}, ports),
        ]
