"""LNLN's adversarial loss (Zhang, Wang, Yu, NeurIPS 2024, §3.2, eq. 6): config of the
``discriminator`` loss. Module: :mod:`composer.losses.lnln`."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from composer.configs._base import Shapes, SpecError
from composer.configs.losses._base import LossConfig
from composer.registry import loss_type
from composer.spec import Spec

__all__ = ["DiscriminatorConfig"]


@loss_type(implementation="composer.losses.lnln:DiscriminatorLoss")
class DiscriminatorConfig(LossConfig):
    """Cross-entropy of a two-class discriminator: the rows of ``positive`` labelled 1, those of ``negative`` 0.

    ``positive``, ``negative``: logits ``(B, 2)`` or ``(B, n, 2)`` (every step a row), e.g. the same
    ``mlp`` (``share:``) on two representations. The loss is the mean cross-entropy over all rows
    of both, as LNLN's ``CE(D([H_d; H_l]), [1…1; 0…0])`` (eq. 6; the authors' ``l_adv`` over
    ``(2·B·n, 2)`` rows). With a gradient reversal before ``positive``'s representation (``dmc``'s
    ``grl``) the generator learns to fool the discriminator. A batch-level loss: no ``weight_from``.
    """

    type: Literal["discriminator"] = "discriminator"
    positive: str = Field(description="Logits whose rows are class 1 (LNLN: the corrected dominant features H_d).")
    negative: str = Field(description="Logits whose rows are class 0 (LNLN: the complete language features H_l).")

    ref_fields: ClassVar[tuple[str, ...]] = ("positive", "negative")

    def check(self, specs: dict[str, Spec]) -> None:
        for field in ("positive", "negative"):
            spec = specs[field]
            if spec.kind not in ("vector", "sequence") or spec.features != 2:
                raise SpecError(f"{field} must be two-class logits (B, 2) or (B, n, 2), got {spec}", field=field)
        if specs["positive"].kind != specs["negative"].kind:
            raise SpecError(f"positive {specs['positive']} and negative {specs['negative']} must be of one kind", field="negative")

    def parameter_shapes(self, specs: dict[str, Spec]) -> Shapes:
        return {}
