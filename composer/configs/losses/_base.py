"""What every loss config is: the reference fields it compares, known without PyTorch.

A loss config lists *reference fields* (``ref_fields``): each holds a reference of the form
``[view:]name[.port]`` where ``name`` is a block id, a modality (the view's input) or
``label`` (the batch's target), and ``view`` is ``main`` (the default, the batch as given)
or a view defined under ``training.views``. The model resolves the references and calls the
loss module (:mod:`composer.losses`) with a dict keyed by field name; it returns a scalar.
The total loss is ``sum(group weight * weight * loss)`` plus the blocks' auxiliary losses.

Per-sample weights (``weight_from``): a loss that decomposes into one value per sample
(``per_sample = True``: the task losses, ``cosine``, ``kl``, ``js``, ``info_nce``, ``cpc``,
``gaussian_ba``) may name a value ``(B,)`` or ``(B, 1)`` as ``weight_from``, e.g. a router's
weight of one modality; the batch mean becomes ``Σ_i w_i ℓ_i / Σ_i w_i`` (``weight_mean:
weights``) or ``Σ_i w_i ℓ_i / B`` (``batch``). ``weight_from`` is a reference field like the
others (any view); its spec is checked before the loss's own :meth:`LossConfig.check`, which
never sees it. Losses over the whole batch (``cmd``, ``orthogonality``, DLFR's) refuse it.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from composer.configs._base import Shapes, SpecError
from composer.ref import MAIN_VIEW, Ref
from composer.spec import Spec

__all__ = ["LossConfig", "parse_ref", "MAIN_VIEW", "WEIGHT_FROM"]

#: The reference field holding per-sample weights (see the module docstring).
WEIGHT_FROM = "weight_from"


def parse_ref(ref: str) -> tuple[str, str, str | None]:
    """``"incomplete:fusion.global"`` -> ``("incomplete", "fusion", "global")`` (see :class:`composer.ref.Ref`)."""
    r = Ref.parse(ref)
    return r.view, r.source, r.port


class LossConfig(BaseModel):
    """Fields every loss has; subclasses add ``type: Literal[...]`` and reference fields."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    weight: float = Field(default=1.0, ge=0.0, description="Multiplier of this term in the total loss.")
    name: str | None = Field(
        default=None,
        description="Name of the term: in logs, and in paths (`losses.<name>.weight` for --set and search); default: type and index.",
    )
    group: str | None = Field(
        default=None,
        description="A group under `loss_groups:` whose one weight also scales this term (e.g. EMT-DLFR's λ1 over several terms).",
    )
    from_epoch: int = Field(
        default=1,
        ge=1,
        description=(
            "The first training epoch this term is added to the training loss (1: every epoch; e.g. 2 for an "
            "auxiliary loss after one warm-up epoch, as TFR-Net's reconstruction). Before it the term is not computed "
            "and gives no gradient, and a stage whose objective has no active term makes no update. The validation "
            "`loss` of an epoch sums that epoch's active terms too, so monitored `loss` values compare only between "
            "epochs with the same active terms; `loss/<name>` of a later term cannot be monitored. Outside training "
            "(evaluate, bench) every term counts."
        ),
    )

    weight_from: str | None = Field(
        default=None,
        description="Per-sample weights (B,) or (B, 1), e.g. `router.weight_text`: the batch mean becomes a weighted mean (losses with one value per sample only).",
    )
    weight_mean: Literal["weights", "batch"] = Field(
        default="weights",
        description="With weight_from: weights: Σ w·ℓ / Σ w (a weighted mean); batch: Σ w·ℓ / B.",
    )
    detach_weight: bool = Field(default=False, description="With weight_from: no gradient into the weights.")

    ref_fields: ClassVar[tuple[str, ...]] = ()
    optional_ref_fields: ClassVar[tuple[str, ...]] = ()
    #: True when the loss is a mean of one value per sample (its module defines ``per_sample``),
    #: which is what ``weight_from`` needs.
    per_sample: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs) -> None:
        """A subclass's own ``check`` is wrapped so the weight spec is checked first and the
        loss's check sees only its own fields (see the module docstring)."""
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("check")
        if own is not None and not getattr(own, "checks_weight", False):
            cls.check = _checking_weight(own)

    @model_validator(mode="after")
    def _weights_need_per_sample(self) -> "LossConfig":
        if self.weight_from is not None and not self.per_sample:
            kind = getattr(self, "type", type(self).__name__)
            raise ValueError(
                f"loss '{kind}' is computed over the whole batch, not one value per sample, so it cannot take "
                f"`weight_from: {self.weight_from}`; per-sample weights fit the losses with one value per sample "
                "(l1, mse, smooth_l1, ce, bce, cosine, kl, js, info_nce, cpc, gaussian_ba)"
            )
        return self

    def refs(self) -> dict[str, str]:
        """Field -> reference for every reference field that is set (``weight_from`` included)."""
        out = {}
        for f in self.ref_fields + self.optional_ref_fields + (WEIGHT_FROM,):
            value = getattr(self, f, None)
            if value is not None:
                out[f] = value
        return out

    def check_weight(self, specs: dict[str, Spec]) -> None:
        """The ``weight_from`` value must hold one float per sample: ``(B,)`` or ``(B, 1)``."""
        spec = specs.get(WEIGHT_FROM)
        if spec is None:
            return
        per_sample = (spec.kind == "labels" and spec.dtype == "float") or (spec.kind == "vector" and spec.features == 1)
        if not per_sample:
            raise SpecError(
                f"weight_from '{self.weight_from}' must hold one weight per sample, (B,) or (B, 1), got {spec}; "
                "for one column of (B, M) weights use the router's per-input port (`router.weight_<input>`)",
                field=WEIGHT_FROM,
            )

    def check(self, specs: dict[str, Spec]) -> None:
        """Raise :class:`~composer.configs._base.SpecError` when the referenced specs do not fit."""
        self.check_weight(specs)

    def parameter_shapes(self, specs: dict[str, Spec]) -> Shapes | None:
        """The loss module's parameters (training-only networks such as DLFR's decoders) by
        name, without building it; None when only building it tells (see
        :meth:`~composer.configs._base.BlockConfig.parameter_shapes`)."""
        return None


def _checking_weight(check):
    """``check`` preceded by :meth:`LossConfig.check_weight`, with ``weight_from`` hidden from it."""

    def wrapped(self: LossConfig, specs: dict[str, Spec]) -> None:
        self.check_weight(specs)
        check(self, {k: v for k, v in specs.items() if k != WEIGHT_FROM})

    wrapped.__doc__ = check.__doc__
    wrapped.__name__ = check.__name__
    wrapped.__qualname__ = check.__qualname__
    wrapped.checks_weight = True
    return wrapped
