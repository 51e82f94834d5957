"""Config of the MMD prior penalty of MFM (Tsai et al., ICLR 2019; the Wasserstein
autoencoder's MMD term, Tolstikhin et al., ICLR 2018).

``mmd``: the maximum mean discrepancy between a batch of codes ``z (B, D)`` and as many samples
of the prior ``N(0, I)``, drawn afresh at every call from PyTorch's global generator (seeded by
``training.seed``), with the kernel MMSA 2.2.1 writes (``MMSA/models/singleTask/MFM.py``,
``compute_kernel``, ``loss_MMD``)::

    k(a, b) = exp(-‖a - b‖² / D²)           (MMSA: the mean over the D features, divided by D again)
    MMD(z) = mean_ij k(p_i, p_j) + mean_ij k(z_i, z_j) - 2 mean_ij k(p_i, z_j),   p ~ N(0, I)_{B×D}

The means run over all pairs, the diagonal included (the biased estimate). MFM applies it to
every factor, ``Σ_m MMD(Z_{a_m}) + MMD(Z_y)``, weighted by ``λ_mmd`` (MMSA's ``lda_mmd``). No
parameters; a batch-level loss (no ``weight_from``). Module: :mod:`composer.losses.generative`.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from composer.configs._base import Shapes, SpecError
from composer.configs.losses._base import LossConfig
from composer.registry import loss_type
from composer.spec import Spec

__all__ = ["MMDConfig"]

MODULES = "composer.losses.generative"


@loss_type(implementation=f"{MODULES}:MMDLoss")
class MMDConfig(LossConfig):
    """MMD between codes ``x: vector (B, D)`` and a fresh sample of ``N(0, I)`` (MFM's prior penalty).

    ``mean k(p, p) + mean k(x, x) - 2 mean k(p, x)`` with ``k(a, b) = exp(-‖a - b‖² / D²)``
    (MMSA 2.2.1's ``loss_MMD``); ``p`` is drawn from the global generator at each call.
    """

    type: Literal["mmd"] = "mmd"
    x: str = Field(description="The codes to pull towards the prior, e.g. `text_code.code` (MFM: Z_{a_m} and Z_y).")
    prior: Literal["normal"] = Field(default="normal", description="The prior the codes are compared with: the standard normal N(0, I).")

    ref_fields: ClassVar[tuple[str, ...]] = ("x",)

    def check(self, specs: dict[str, Spec]) -> None:
        if specs["x"].kind != "vector" or not isinstance(specs["x"].features, int):
            raise SpecError(f"x must be codes of a known width, a vector (B, D); got {specs['x']}", field="x")

    def parameter_shapes(self, specs: dict[str, Spec]) -> Shapes:
        return {}
