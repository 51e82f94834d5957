"""Config of HCT-MG's modality gate as a block (``modality_gate``, §4, §5, §5.3.2).

Three same-shaped inputs -> ports ``primary``, ``aux1``, ``aux2`` and ``weights (B, 3)``; the
gate itself (softmax weights, history, freezing) is the layer
:class:`composer.blocks.gating.ModalityGate`, also used by ``hierarchical_crossmodal``.
Modules: :mod:`composer.blocks.gating`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from composer.configs._base import BlockConfig, Shapes, SpecError
from composer.configs._shapes import under
from composer.registry import block_type
from composer.spec import Spec, sequence, vector

__all__ = ["GATED", "ModalityGateConfig", "gate_parameters"]

MODULES = "composer.blocks.gating"

#: The ``primary`` value of a learned gate (any other value names a fixed primary port).
GATED = "gated"


def gate_parameters(modalities: int, primary: str) -> Shapes:
    """Parameters of :class:`composer.blocks.gating.ModalityGate`: ``logits (M,)`` when gated, else none."""
    return {"logits": (modalities,)} if primary == GATED else {}


@block_type("fusion", implementation=f"{MODULES}:ModalityGateBlock")
class ModalityGateConfig(BlockConfig):
    """HCT-MG's modality gating as a block: three same-shaped inputs -> ports ``primary``,
    ``aux1``, ``aux2`` (the others in port order) and ``weights (B, 3)``.

    The primary is the input with the largest softmax weight for the batch (ties by
    ``tie_break``); the routed inputs are scaled by their weights (``scale``), which is how the
    weights learn; the history, freezing and epoch logs are :class:`~composer.blocks.gating.ModalityGate`'s. The inputs
    must share one spec (vectors, or sequences on one time axis), since the primary port takes
    whichever is chosen. Parameters: 3 (gated) or none (fixed primary).
    """

    type: Literal["modality_gate"] = "modality_gate"
    primary: str = Field(default=GATED, description="gated: learned (HCT-MG); or an input port for a fixed primary.")
    freeze_after: int | None = Field(default=None, ge=0, description="Freeze after this many epochs without a change of primary.")
    tie_break: str = Field(default="first", description="The primary while weights tie: first (port order) or a port name.")
    scale: Literal["weights", "relative", "none"] = Field(
        default="weights",
        description="Scale each routed input by its weight ω_m (HCT-MG), by M·ω_m (1 at initialisation), or not at all.",
    )

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        if len(inputs) != 3:
            raise SpecError(f"expected 3 inputs (a primary and two auxiliaries), got {len(inputs)}", field="in")
        specs = set(inputs.values())
        if len(specs) != 1:
            raise SpecError(
                "the inputs need one spec (vectors, or sequences on one time axis): "
                + ", ".join(f"{p}: {s}" for p, s in inputs.items()),
                field="in",
            )
        for name, field in ((self.primary, "primary"), (self.tie_break, "tie_break")):
            if name not in (GATED, "first") and name not in inputs:
                raise SpecError(f"{field} must be one of the input ports {list(inputs)}, got '{name}'", field=field)
        spec = specs.pop()
        return {"primary": spec, "aux1": spec, "aux2": spec, "weights": vector(3, batch=spec.batch)}

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        return under("gate", gate_parameters(len(inputs), self.primary))

    @classmethod
    def examples(cls):
        three = {"text": vector(4), "audio": vector(4), "vision": vector(4)}
        return [({}, three), ({"primary": "audio", "scale": "none"}, three),
                ({"scale": "relative", "tie_break": "c", "freeze_after": 1}, {k: sequence("T", 3) for k in ("a", "b", "c")})]
