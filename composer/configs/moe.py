"""Sparsely-gated mixture of experts (Shazeer et al., ICLR 2017), as used by GLoMo (eqs. 5-7).

Block ``moe``: ``vector (B, D) -> out (B, d), gates (B, s), balance ()``.

* Gating (GLoMo eq. 5, Shazeer eqs. 3-5): ``G(x) = Softmax(KeepTopK(H(x), k))`` with
  ``H(x) = x W_g + N(0, 1) · softplus(x W_noise) + ε`` while training (``noisy``) and
  ``x W_g`` otherwise; ``W_g`` and ``W_noise`` are ``(D, s)``, zero-initialised, no bias.
* Experts: ``E_i = Linear(D → h) → ReLU → Linear(h → d)`` (``h = hidden``, default ``d``).
* Combination (GLoMo eq. 6): ``y = Σ_i G(x)_i E_i(x)`` (``combine: weighted_sum``, the
  paper). The GLoMo authors' code combines in log space, ``y = log Σ_i G(x)_i exp(E_i(x))``
  (``combine: log_sum_exp``); it is offered as an explicit option.
* Balance loss (GLoMo eq. 7, Shazeer eqs. 6-10): ``ω (CV(Importance)² + CV(Load)²)`` with
  ``Importance = Σ_batch G(x)`` and ``Load`` the expected number of samples per expert,
  ``Σ_batch Φ((x W_g - threshold) / noise_std)`` while training with noise (a smooth
  estimate), the count of samples routed to each expert otherwise. ``CV² = var / mean²``
  (unbiased variance, as in the reference code; 0 for a single expert). The loss is the
  auxiliary port ``balance``, added to the total loss by the model.

Parameters: ``2·D·s`` (gates) ``+ s·(D·h + h + h·d + d)``. Modules: :mod:`composer.blocks.moe`.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from composer.configs._base import BlockConfig, Shapes, SpecError, expect_kind, expect_ports
from composer.configs._shapes import mlp, under
from composer.registry import block_type
from composer.spec import Spec, scalar, vector

__all__ = ["MoEConfig"]

MODULES = "composer.blocks.moe"


@block_type("other", implementation=f"{MODULES}:MixtureOfExperts")
class MoEConfig(BlockConfig):
    """Noisy top-k mixture of experts: ``vector (B, D) -> out (B, d), gates (B, s), balance ()``.

    GLoMo eqs. 5-7 on Shazeer et al.'s sparsely-gated layer: zero-initialised gate and
    noise weights ``(D, s)``; s experts ``Linear(D→h) → ReLU → Linear(h→d)``; output
    ``Σ_i g_i E_i(x)`` (paper) or ``log Σ_i g_i exp(E_i(x))`` (``combine: log_sum_exp``, the
    authors' code); ``balance = ω (CV²(importance) + CV²(load))`` is an auxiliary loss.
    Every expert runs on every sample (s is small) and unselected ones get gate 0, so only
    the k selected experts of a sample receive gradient from it.
    Parameters: ``2·D·s + s·(D·h + h + h·d + d)``.
    """

    main_port: ClassVar[str | None] = "out"  # a bare reference to the block means this output

    aux_loss_ports: ClassVar[tuple[str, ...]] = ("balance",)

    type: Literal["moe"] = "moe"
    out: int = Field(ge=1, description="Output width d of every expert.")
    experts: int = Field(default=3, ge=1, description="Number of experts s.")
    top_k: int = Field(default=2, ge=1, description="Experts used per sample k (at most `experts`).")
    hidden: int | None = Field(default=None, ge=1, description="Hidden width of each expert (default: `out`).")
    noisy: bool = Field(default=True, description="Add trainable Gaussian noise to the gate logits while training.")
    noise_epsilon: float = Field(default=0.01, ge=0.0, description="Floor added to the noise standard deviation.")
    balance_weight: float = Field(default=0.01, ge=0.0, description="ω of the balance loss (GLoMo eq. 7).")
    combine: Literal["weighted_sum", "log_sum_exp"] = Field(
        default="weighted_sum",
        description="weighted_sum: Σ g·E (the paper, eq. 6); log_sum_exp: log Σ g·exp(E) (the GLoMo authors' code).",
    )

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        expect_ports(inputs, exactly=1)
        (port, spec), = inputs.items()
        expect_kind(port, spec, "vector")
        if self.top_k > self.experts:
            raise SpecError(f"top_k={self.top_k} exceeds the number of experts ({self.experts})", field="top_k")
        return {"out": vector(self.out), "gates": vector(self.experts), "balance": scalar()}

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        (spec,) = inputs.values()
        width, hidden = int(spec.features), self.hidden or self.out
        shapes: Shapes = {"w_gate": (width, self.experts)}
        if self.noisy:
            shapes["w_noise"] = (width, self.experts)
        for i in range(self.experts):  # Linear(D, h) -> ReLU -> Linear(h, d)
            shapes.update(under(f"experts.{i}", mlp(width, [hidden], self.out)))
        return shapes

    @classmethod
    def examples(cls):
        return [
            ({"out": 4, "experts": 3, "top_k": 2}, {"in": vector(6)}),
            ({"out": 3, "experts": 4, "top_k": 1, "hidden": 5, "combine": "log_sum_exp"}, {"in": vector(6)}),
            ({"out": 2, "experts": 2, "top_k": 2, "noisy": False}, {"in": vector(3)}),
        ]
