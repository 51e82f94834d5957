"""MSAF — Multimodal Split Attention Fusion (Su et al., "MSAF: Multimodal Split Attention
Fusion", §3), for CNN feature maps, sequences and vectors, with the RNN variant of §3.2.

``M`` inputs of any shape -> ``M`` outputs of the same shapes, one per input port, each the
input with every channel scaled by a block-wise attention computed from all modalities.
Channels are the last axis of a ``sequence (B, T, D)`` or ``vector (B, D)`` and axis 1 of a
``map (B, C, *S)``; the two layouts can be mixed in one block.

Steps (paper's numbering), for ``C`` channels per block and ``C' = ⌊C / r⌋``:

1. *Split*: modality ``m`` with ``C_m`` channels gives ``|B_m| = ⌈C_m / C⌉`` blocks of ``C``
   channels; the last block is zero-padded in the channel dimension when ``C ∤ C_m``.
2. *Join*: ``D_m`` = global average over all non-channel axes of the sum of ``m``'s blocks
   (eq. 1); ``G = Σ_m D_m``; ``Z = ReLU(BN(W_Z G + b_Z))`` (eq. 2).
3. *Highlight*: ``U_m^i = W_m^i Z + b_m^i`` per block (eq. 3); softmax over *all* blocks of
   *all* modalities, per channel (eq. 4); ``B̂_m^i = [λ + (1 - λ) A_m^i] ⊙ B_m^i`` (eq. 5);
   blocks re-joined per modality, padded channels dropped (eq. 6).

BlockDropout (§3.1): in training, a Bernoulli(1 - p) mask ``m`` per (sample, segment, block),
scaled by ``1 / (1 - p)``, multiplies the attention ``A`` before eq. 5 (``paper`` style). The
authors' code (``authors`` style) instead multiplies the feature blocks by ``m`` before the join
(eq. 1 sees dropped blocks, kept ones scaled) and multiplies the result by ``m`` again: the
factors are ``m² [λ + (1 - λ) A]``, so a dropped block is zero even with ``λ > 0``.

Because eqs. 1 and 5 are linear in the input, the block never materialises the padded
tensor: it averages first, pads the ``(B, C_m)`` descriptor, and scales each real channel by
its block's attention — the same numbers as padding the feature map, at a fraction of the
memory.

RNN variant (§3.2, ``segments: q``): the time axis of every modality (axis 1 of a sequence,
axis 2 of a map) is cut into ``q`` segments of ``⌊S_m / q⌋`` steps, the remainder joining
the last segment; segment ``k`` of all modalities goes through its own MSAF block
(separate weights). Without lengths (the aligned MOSEI files) ``S_m`` is the axis length,
exactly as the authors segment. With lengths (a padding mask), each sample's *valid* steps
are segmented (``S_m = L_b``), so a sample's segments, and its result, do not depend on how
far the batch is padded; padded steps are left out of every average.

Module: :mod:`composer.blocks.fusion.msaf`.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from composer.configs._base import BlockConfig, Shapes, SpecError, expect_kind, expect_ports
from composer.configs._shapes import batch_norm, linear, under
from composer.registry import block_type
from composer.spec import Spec, feature_map, sequence, vector

__all__ = ["MSAFConfig"]

MODULES = "composer.blocks.fusion.msaf"


def _has_time(spec: Spec) -> bool:
    return spec.kind == "sequence" or (spec.kind == "map" and len(spec.shape) >= 3)


@block_type("fusion", implementation=f"{MODULES}:MSAF")
class MSAFConfig(BlockConfig):
    """Multimodal Split Attention Fusion (eqs. 1-6, BlockDropout §3.1, time segments §3.2).

    ``M ≥ 2`` inputs, each ``sequence (B, T, C_m)``, ``map (B, C_m, *S)`` or ``vector (B, C_m)``
    -> ``M`` outputs with the inputs' shapes, on ports named like the input ports (so
    ``enabled: false`` passes every modality through). The softmax attention of the last
    forward pass is kept (detached) in ``self.attention`` as ``(B, q, N, C)`` with
    ``N = Σ_m ⌈C_m / C⌉`` blocks in input order; ``attention_by_modality()`` splits it.
    With ``segments: q > 1`` every input needs a time axis (axis 1 of a sequence, axis 2 of
    a map); the last segment takes the remainder.
    """

    type: Literal["msaf"] = "msaf"
    channels: int = Field(ge=1, description="C: channels per feature block (paper's advice: min_m C_m / 2).")
    reduction: int = Field(default=4, ge=1, description="r: the joint representation Z has ⌊C / r⌋ units (eq. 2).")
    lowest_attention: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="λ of eq. 5: B̂ = [λ + (1-λ)A] ⊙ B. 0 = full suppression (paper default), 1 = identity.",
    )
    block_dropout: float = Field(
        default=0.0, ge=0.0, lt=1.0, description="p of BlockDropout (§3.1): drop a block's attention with probability p (training only)."
    )
    block_dropout_style: Literal["paper", "authors"] = Field(
        default="paper",
        description=(
            "paper (§3.1): the scaled mask multiplies the attention once. authors (anita-hu/MSAF, MSAF.py): the mask "
            "multiplies the feature blocks before the join (so the descriptor and attention see dropped blocks) and the "
            "output again, and with λ > 0 a dropped block is zeroed entirely."
        ),
    )
    segments: int = Field(
        default=1,
        ge=1,
        description="q (§3.2): split time into q segments, one MSAF block with its own weights per segment.",
    )

    @model_validator(mode="after")
    def _reduced_width(self) -> "MSAFConfig":
        if self.channels // self.reduction < 1:
            raise ValueError(f"reduction {self.reduction} leaves no unit for channels {self.channels}: need reduction <= channels")
        return self

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        expect_ports(inputs, at_least=2)
        for port, spec in inputs.items():
            expect_kind(port, spec, "sequence", "map", "vector")
            if not isinstance(spec.features, int):
                raise SpecError(f"input '{port}' needs a known channel count, got {spec}", field="in")
            if self.segments > 1:
                if not _has_time(spec):
                    raise SpecError(
                        f"segments: {self.segments} cuts a time axis, but input '{port}' is {spec}; "
                        "use segments: 1 for vectors (or maps without spatial axes)",
                        field="segments",
                    )
                steps = spec.shape[1] if spec.kind == "sequence" else spec.shape[2]
                if isinstance(steps, int) and steps < self.segments:
                    raise SpecError(f"input '{port}' has {steps} time steps, fewer than segments: {self.segments}", field="segments")
        return dict(inputs)

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        reduced = self.channels // self.reduction  # C'
        blocks = sum(math.ceil(int(s.features) / self.channels) for s in inputs.values())  # N = Σ_m |B_m|
        shapes: Shapes = {}
        for k in range(self.segments):  # one SplitAttention per time segment (§3.2)
            shapes.update(under(f"segment.{k}.join.0", linear(self.channels, reduced)))  # eq. 2
            shapes.update(under(f"segment.{k}.join.1", batch_norm(reduced)))
            shapes.update(under(f"segment.{k}.highlight", linear(reduced, blocks * self.channels)))  # eq. 3
        return shapes

    @classmethod
    def examples(cls):
        return [
            ({"channels": 4, "reduction": 2}, {"audio": sequence("T", 8), "vision": sequence("T", 6)}),
            (
                {"channels": 3, "reduction": 1, "segments": 2, "block_dropout": 0.2},
                {"audio": sequence("T_a", 5), "text": sequence("T_t", 7)},
            ),
            ({"channels": 4, "lowest_attention": 0.5}, {"video": feature_map(8, 2, 3, 3), "audio": feature_map(6, 5)}),
            ({"channels": 2, "reduction": 2, "segments": 3}, {"video": feature_map(4, 9), "audio": sequence(7, 5)}),
            ({"channels": 2, "reduction": 1, "block_dropout_style": "authors", "block_dropout": 0.5}, {"0": vector(4), "1": vector(3)}),
        ]
