"""Config of TFR-Net's reconstruction loss (Yuan et al., ACM MM 2021, its feature reconstruction; MMSA 2.2.1's
``RECLoss`` with ``recloss_type: combine``). Module: :mod:`composer.losses.tfr`.

The reconstruction branch is training-only: only this loss reads it. The loss owns the generator
(MMSA's ``LinearTrans``, ``generatorModule: linear``), a Linear from the reconstruction transformer's
width to the target's, so the target's width is never written in a blueprint (BERT's 768, COVAREP's 5,
...), and compares the generated sequence ``X̂_m = G(h_m)`` with
the complete input ``X_m`` (for text: BERT's output on the complete tokens, with its gradient,
as MMSA does) on the steps that the view dropped (``VIEW:mask.MODALITY``).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from composer.configs._base import Shapes, SpecError
from composer.configs._shapes import linear, under
from composer.configs.losses._base import LossConfig
from composer.registry import loss_type
from composer.spec import Spec

__all__ = ["TFRReconstructionConfig"]


@loss_type(implementation="composer.losses.tfr:TFRReconstructionLoss")
class TFRReconstructionConfig(LossConfig):
    """TFR-Net's reconstruction loss: masked smooth-L1 plus a weighted CMD, both over ``N·D + ε``.

    ``pred (B, T, d)`` (the reconstruction module's output, mapped to ``X̂_m (B, T, D)`` by the generator
    ``G = Linear(d, D)``, or compared as it is with ``generator: none``), ``target (B, T, D)``,
    ``mask (B, T)`` True on dropped steps (padding excluded). With
    ``g`` the mask broadcast over the features, ``N·D = Σ g``:
    ``L = Σ SmoothL1_β(g ⊙ X̂, g ⊙ X) / (N·D + ε) + λ_sim · CMD_K(g ⊙ X̂, g ⊙ X) / (N·D + ε)``,
    the CMD (Zellinger et al. 2017) over all ``B·T`` rows (kept steps are zero rows on both sides),
    as MMSA's ``RECLoss`` (``combine``: ``weight_sim_loss`` = λ_sim, ``n_moments`` = K = 3, ε = 1e-4).
    Each of the CMD's K norms is ``sqrt(‖Δm_k‖² + ε_n)`` with ε_n = ``norm_eps`` = 1e-12, as MMSA's
    ``CMD.matchnorm``: where nothing is dropped (``N·D = 0``) the loss is then the constant
    ``λ_sim · K · √ε_n / ε`` (0.15 at MMSA's numbers, without gradient), as MMSA reports it.
    ``similarity: 0`` leaves the smooth-L1 term (``recloss_type: SmoothL1Loss``).
    """

    type: Literal["tfr_reconstruction"] = "tfr_reconstruction"
    pred: str = Field(description="The reconstruction module's output h_m, e.g. `missing:recon_t`.")
    target: str = Field(description="The complete sequence X_m, e.g. `audio` or `text_enc.seq` (the main view).")
    mask: str = Field(description="The dropped steps, e.g. `missing:mask.audio` (True = dropped).")
    generator: Literal["linear", "none"] = Field(
        default="linear", description="linear: X̂_m = Linear(d, D)(pred) (MMSA's LinearTrans); none: pred is X̂_m (needs d = D)."
    )
    similarity: float = Field(default=5.0, ge=0.0, description="λ_sim, the CMD term's weight (MMSA's weight_sim_loss).")
    moments: int = Field(default=3, ge=1, le=10, description="Moments K of the CMD (MMSA: 3).")
    beta: float = Field(default=1.0, gt=0, description="Smooth-L1 transition point (PyTorch's default, MMSA's).")
    eps: float = Field(default=1.0e-4, ge=0.0, description="Added to the count N·D (MMSA: 1e-4).")
    norm_eps: float = Field(
        default=1.0e-12, ge=0.0, description="Added under the square root of each CMD norm (MMSA's CMD.matchnorm: 1e-12; 0: the plain norm)."
    )
    detach_target: bool = Field(default=False, description="Stop gradients into the target (MMSA does not: BERT learns from both sides).")

    ref_fields: ClassVar[tuple[str, ...]] = ("pred", "target", "mask")

    def check(self, specs: dict[str, Spec]) -> None:
        pred, target, mask = specs["pred"], specs["target"], specs["mask"]
        if pred.kind != "sequence" or target.kind != "sequence":
            raise SpecError(f"pred and target must be sequences (B, T, D), got {pred} and {target} (for text use the encoder's `seq`)", field="target")
        if self.generator == "none" and pred.features != target.features:
            raise SpecError(f"generator 'none' needs equal widths, got pred {pred.features} and target {target.features}", field="generator")
        if mask.kind != "tokens" or mask.dtype != "bool":
            raise SpecError(f"mask must be a view mask `VIEW:mask.MODALITY`, got {mask}", field="mask")
        if not (pred.time == target.time == mask.time):
            raise SpecError(f"pred {pred}, target {target} and mask {mask} must share one time axis", field="target")

    def parameter_shapes(self, specs: dict[str, Spec]) -> Shapes:
        if self.generator != "linear":
            return {}
        return under("generator", linear(int(specs["pred"].features), int(specs["target"].features)))
