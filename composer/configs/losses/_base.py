"""What every loss config is: the reference fields it compares, known without PyTorch.

A loss config lists *reference fields* (``ref_fields``): each holds a reference of the form
``[view:]name[.port]`` where ``name`` is a block id, a modality (the view's input) or
``label`` (the batch's target), and ``view`` is ``main`` (the default, the batch as given)
or a view defined under ``training.views``. The model resolves the references and calls the
loss module (:mod:`composer.losses`) with a dict keyed by field name; it returns a scalar.
The total loss is ``sum(group weight * weight * loss)`` plus the blocks' auxiliary losses.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from composer.configs._base import Shapes
from composer.spec import Spec

__all__ = ["LossConfig", "parse_ref", "MAIN_VIEW"]

MAIN_VIEW = "main"


def parse_ref(ref: str) -> tuple[str, str, str | None]:
    """``"incomplete:fusion.global"`` -> ``("incomplete", "fusion", "global")``."""
    view, _, rest = ref.rpartition(":")
    name, _, port = rest.partition(".")
    return (view or MAIN_VIEW), name, (port or None)


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

    ref_fields: ClassVar[tuple[str, ...]] = ()
    optional_ref_fields: ClassVar[tuple[str, ...]] = ()

    def refs(self) -> dict[str, str]:
        """Field -> reference for every reference field that is set."""
        out = {}
        for f in self.ref_fields + self.optional_ref_fields:
            value = getattr(self, f, None)
            if value is not None:
                out[f] = value
        return out

    def check(self, specs: dict[str, Spec]) -> None:
        """Raise :class:`~composer.configs._base.SpecError` when the referenced specs do not fit."""

    def parameter_shapes(self, specs: dict[str, Spec]) -> Shapes | None:
        """The loss module's parameters (training-only networks such as DLFR's decoders) by
        name, without building it; None when only building it tells (see
        :meth:`~composer.configs._base.BlockConfig.parameter_shapes`)."""
        return None
