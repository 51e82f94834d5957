"""Configs of the Dual-Level Feature Restoration losses (EMT-DLFR, Sun et al., §3.5, eqs. 11-15).

Both compare two *views* of a batch: the complete one (``main``) and an incomplete one
defined under ``training.views`` (``temporal_mask``). The overall objective (eq. 16) is
written in the blueprint as a list of weighted terms::

    L = L_task(incomplete) + λ1 Σ_m LLFR_m + λ2 (Σ_m SimSiam_m + SimSiam_g + L1(main))

* ``llfr`` (eq. 11): a decoder ``r = Linear(d → D_m)`` maps the incomplete view's fused local
  sequence ``Z̃_m`` back to the complete input (audio/vision features, or for text the
  complete view's BERT output, detached) and a smooth-L1 (eq. 12) is averaged over the
  *masked* positions only (``g_m``, the view's drop mask), padding excluded.
* ``simsiam`` (eqs. 13-14): symmetric SimSiam between the two views' utterance vectors,
  projector ``p = Linear(D, D) → BN(affine=False)``, predictor ``q = Linear(D, h, bias=False)
  → BN → ReLU → Linear(h, D)``, ``L = ½ [D(q(p(a)), sg(p(b))) + D(q(p(b)), sg(p(a)))]`` with
  ``D`` the negative cosine similarity and ``sg`` stop-gradient.

Decoder, projector and predictor are owned by the loss (they live in ``model.losses``):
they are training-only networks, not counted by Table 9 and unused at inference.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from composer.configs._base import Shapes, SpecError
from composer.configs._shapes import batch_norm, linear, under
from composer.configs.losses._base import LossConfig
from composer.registry import loss_type
from composer.spec import Spec

__all__ = ["LLFRConfig", "SimSiamConfig"]

MODULES = "composer.losses.dlfr"


@loss_type(implementation=f"{MODULES}:LLFRLoss")
class LLFRConfig(LossConfig):
    """Low-level feature reconstruction (eq. 11): masked smooth-L1 of ``r(Z̃_m)`` against ``X̂_m``.

    ``input (B, T, d)``, ``target (B, T, D_m)``, ``mask (B, T)`` bool. The mean runs over the
    masked, non-padded positions and the ``D_m`` features; with nothing masked the term is 0.
    """

    type: Literal["llfr"] = "llfr"
    input: str = Field(description="The incomplete view's fused local sequence Z̃_m, e.g. `incomplete:emt.audio`.")
    target: str = Field(description="The complete sequence X̂_m, e.g. `audio` (or `text_enc.seq` for text).")
    mask: str = Field(description="Positions that were dropped, e.g. `incomplete:mask.audio` (True = masked).")
    decoder: Literal["linear", "none"] = Field(
        default="linear", description="linear: r = Linear(d → D_m) (eq. 11); none: compare the input directly (needs d = D_m)."
    )
    beta: float = Field(default=1.0, gt=0, description="Smooth-L1 transition point (eq. 12 uses 1).")
    detach_target: bool = Field(default=True, description="Stop gradients into the target (the paper detaches the BERT target).")

    ref_fields: ClassVar[tuple[str, ...]] = ("input", "target", "mask")

    def check(self, specs: dict[str, Spec]) -> None:
        inp, target, mask = specs["input"], specs["target"], specs["mask"]
        if inp.kind != "sequence":
            raise SpecError(f"input must be a sequence (B, T, d), got {inp}", field="input")
        if target.kind != "sequence":
            raise SpecError(f"target must be a float sequence (B, T, D); got {target} (for text use the encoder's `seq`)", field="target")
        if mask.kind != "tokens" or mask.dtype != "bool":
            raise SpecError(f"mask must be a view mask `VIEW:mask.MODALITY`, got {mask}", field="mask")
        if not (inp.time == target.time == mask.time):
            raise SpecError(f"input {inp}, target {target} and mask {mask} must share one time axis", field="target")
        if self.decoder == "none" and inp.features != target.features:
            raise SpecError(f"decoder 'none' needs equal widths, got {inp.features} and {target.features}", field="decoder")

    def parameter_shapes(self, specs: dict[str, Spec]) -> Shapes:
        if self.decoder != "linear":
            return {}
        return under("decoder", linear(int(specs["input"].features), int(specs["target"].features)))


@loss_type(implementation=f"{MODULES}:SimSiamLoss")
class SimSiamConfig(LossConfig):
    """Symmetric SimSiam attraction between two views (eqs. 13-14), stop-gradient on the targets.

    ``a, b: vector (B, D)``. Parameters: projector ``D² + D`` (BN without affine), predictor
    ``D·h + 2h + h·D + D``. Training batches need at least two samples (BatchNorm).
    ``projector: false, predictor: false, stop_gradient: false`` is the plain negative-cosine
    attraction ``-cos(a, b)`` of EMT-DLFR's ablation (§5.2.4, Fig. 11), with no parameters.
    """

    type: Literal["simsiam"] = "simsiam"
    a: str = Field(description="One view's representation, e.g. `emt.global` (complete view).")
    b: str = Field(description="The other view's, e.g. `incomplete:emt.global`.")
    hidden: int | None = Field(default=None, ge=1, description="Predictor hidden width h (default: D // 2).")
    projector: bool = Field(default=True, description="Project both views first (eq. 13's projector); false: compare a and b as given.")
    predictor: bool = Field(default=True, description="Predict one view's projection from the other (eq. 13); false: compare projections directly.")
    stop_gradient: bool = Field(default=True, description="Treat the target side as a constant (sg in eq. 13).")

    ref_fields: ClassVar[tuple[str, ...]] = ("a", "b")

    def check(self, specs: dict[str, Spec]) -> None:
        a, b = specs["a"], specs["b"]
        if a.kind != "vector" or b.kind != "vector" or a.features != b.features:
            raise SpecError(f"a and b must be vectors (B, D) of one width, got {a} and {b}", field="b")

    def parameter_shapes(self, specs: dict[str, Spec]) -> Shapes:
        width = int(specs["a"].features)
        hidden = self.hidden or max(width // 2, 1)
        out: Shapes = under("projector.0", linear(width, width)) if self.projector else {}
        if self.predictor:
            out.update(under("predictor.0", linear(width, hidden, bias=False)))
            out.update(under("predictor.1", batch_norm(hidden)))
            out.update(under("predictor.3", linear(hidden, width)))
        return out
