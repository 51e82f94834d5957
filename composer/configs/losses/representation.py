"""Configs of the representation losses of multimodal sentiment models: similarity,
difference, contrastive, distillation and mutual-information terms.

All compare codes ``vector (B, D)`` (predictions for ``kl``/``js``); the modules are in
:mod:`composer.losses.representation`. Sources and their equations:

* ``cmd`` — central moment discrepancy (Zellinger et al., ICLR 2017, Definition 1), MISA's
  similarity loss (Hazarika et al., ACM MM 2020, §3.5 "Similarity Loss"):
  ``CMD_K(X, Y) = 1/|b-a| ‖E(X) - E(Y)‖₂ + Σ_{k=2..K} 1/|b-a|^k ‖C_k(X) - C_k(Y)‖₂`` with
  ``C_k`` the k-th central moment over the batch, per feature. ``interval`` is ``|b - a|``;
  MISA's shared codes come out of a sigmoid and its code (MMSA 2.2.1 ``CMD``, K = 5) leaves the
  scale out, which ``interval: 1`` (the default) reproduces exactly.
* ``orthogonality`` — MISA's difference loss (§3.5 "Difference Loss"): ``‖S̃ᵀ P̃‖²_F`` with
  ``S̃, P̃`` the batch-centred codes, each row scaled to unit L2 norm. As in MMSA 2.2.1
  (``DiffLoss``) the norm is detached (a constant for the gradient), ``1e-6`` is added to it,
  and the squared entries are *averaged* (``‖·‖²_F / (D_s·D_p)``); the two widths may differ.
* ``info_nce`` — InfoNCE (van den Oord et al. 2018, eq. 4) with ``f(a, b) = exp(sim(a, b)/τ)``:
  ``ℓ_i = -log exp(s_ii/τ) / Σ_j exp(s_ij/τ)``, the other samples of the batch as negatives,
  averaged over both directions (``symmetric``). ``variant: nt_xent`` is SimCLR's NT-Xent
  (Chen et al., ICML 2020, eq. 1): the 2B codes are anchors, and the negatives of an anchor
  are all other 2B - 2 codes, same view included.
* ``kl`` / ``js`` — Kullback-Leibler ``KL(P_target ‖ P_input) = Σ_c p_t (log p_t - log p_i)``
  (distillation: Hinton et al. 2015, soft targets at temperature T, scaled by T²) and
  Jensen-Shannon ``½ KL(P ‖ M) + ½ KL(Q ‖ M)``, ``M = (P + Q)/2``, between two predictions
  given as logits, probabilities or log-probabilities over their last axis.
* ``cosine`` — ``1 - cos(a, b)`` per sample.
* ``cpc`` — MMIM's CPC bound between the fusion and a modality (Han et al., EMNLP 2021, §3.3;
  MMSA 2.2.1 ``CPC``): ``x̂ = G(z)`` (``layers = 1``: ``Linear(D_z → D_x)``), both L2-normalised,
  ``ℓ_i = -(x_i·x̂_i - log Σ_j exp(x_i·x̂_j))``.
* ``gaussian_ba`` — MMIM's MMILB likelihood term of the Barber-Agakov lower bound between two
  modalities (§3.2; MMSA 2.2.1 ``MMILB``): ``q(y|x) = N(μ(x), σ²(x))`` with ``μ`` and ``log σ²``
  each ``Linear(D_x → D_y) → ReLU → Linear(D_y → D_y)``; the loss is the negative
  log-likelihood up to constants, ``ℓ_i = Σ_d (μ_d(x_i) - y_id)² / (2 σ_d²(x_i))``, i.e. ``-lld``.
  MMIM's entropy term is the ``gaussian_entropy`` loss below.
* ``gaussian_entropy`` — MMIM's entropy estimate of a modality (§3.2, "entropy estimation" with
  a history memory; MMSA 2.2.1 ``MMILB``, its ``H``): the codes ``ỹ = tanh(W y + b)``
  (``D → D/4``) of the samples with positive and with negative labels, over this batch and the
  ``memory`` batches before it (detached), are taken as Gaussian, ``Σ = mean (ỹ - μ)(ỹ - μ)ᵀ``,
  and ``H = ¼ (log det Σ_pos + log det Σ_neg)``; the loss is ``-H`` (maximising the entropy).

The estimator networks of ``cpc`` and ``gaussian_ba`` belong to the loss: they are
training-only parameters (``parameter_summary()["training_only"]``), unused at inference.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from composer.configs._base import Shapes, SpecError
from composer.configs._shapes import linear, under
from composer.configs.losses._base import LossConfig
from composer.registry import loss_type
from composer.spec import Spec

__all__ = [
    "CMDConfig",
    "OrthogonalityConfig",
    "InfoNCEConfig",
    "KLConfig",
    "JSConfig",
    "CosineConfig",
    "CPCConfig",
    "GaussianBAConfig",
]

MODULES = "composer.losses.representation"


def _vectors(specs: dict[str, Spec], *fields: str, same_width: bool = True) -> None:
    """The referenced values must be vectors ``(B, D)`` (of one width when ``same_width``)."""
    for f in fields:
        if specs[f].kind != "vector":
            raise SpecError(f"{f} must be a vector (B, D) (pool a sequence first), got {specs[f]}", field=f)
    if same_width and len({specs[f].features for f in fields}) != 1:
        shown = " and ".join(f"{f} {specs[f]}" for f in fields)
        raise SpecError(f"{shown} must have one width (project them first, e.g. with a `linear` block)", field=fields[-1])


class _PairConfig(LossConfig):
    a: str = Field(description="One code, e.g. `shared_text`.")
    b: str = Field(description="The other code, e.g. `shared_audio`.")

    ref_fields: ClassVar[tuple[str, ...]] = ("a", "b")

    def check(self, specs: dict[str, Spec]) -> None:
        _vectors(specs, "a", "b")

    def parameter_shapes(self, specs: dict[str, Spec]) -> Shapes:
        return {}


@loss_type(implementation=f"{MODULES}:CMDLoss")
class CMDConfig(_PairConfig):
    """Central moment discrepancy of order K between two batches of codes (MISA's similarity loss).

    ``Σ_{k=1..K} |b-a|^-k ‖m_k(a) - m_k(b)‖₂`` with ``m_1`` the batch mean and ``m_k`` the k-th
    central moment per feature (Zellinger et al. 2017, Def. 1); MMSA 2.2.1's ``CMD`` with
    ``interval: 1``. ``a, b: vector (B, D)``. A batch-level loss: no ``weight_from``.
    """

    type: Literal["cmd"] = "cmd"
    moments: int = Field(default=5, ge=1, description="K, the highest moment (MISA: 5).")
    interval: float = Field(default=1.0, gt=0, description="|b - a|, the width of the codes' range; moment k is divided by its k-th power.")


@loss_type(implementation=f"{MODULES}:OrthogonalityLoss")
class OrthogonalityConfig(_PairConfig):
    """MISA's difference loss: mean of ``(S̃ᵀ P̃)²`` over batch-centred, row-normalised codes.

    ``a: vector (B, D_a)`` (e.g. a private code), ``b: vector (B, D_b)`` (the shared code or
    another private one); the widths may differ. Norms detached and ``+1e-6`` as in MMSA
    2.2.1's ``DiffLoss``. A batch-level loss: no ``weight_from``.
    """

    type: Literal["orthogonality"] = "orthogonality"

    def check(self, specs: dict[str, Spec]) -> None:
        _vectors(specs, "a", "b", same_width=False)


@loss_type(implementation=f"{MODULES}:InfoNCELoss")
class InfoNCEConfig(_PairConfig):
    """Contrastive InfoNCE between two codes of the same samples (Oord et al. 2018, eq. 4), or
    SimCLR's NT-Xent (Chen et al. 2020, eq. 1): positives are the pairs ``(a_i, b_i)``.

    ``a, b: vector (B, D)``; ``sim`` is the cosine (default) or the dot product, divided by
    the temperature τ. Per sample: the mean of the sample's two anchor losses (``a_i → b`` and
    ``b_i → a``; only ``a_i → b`` when ``symmetric: false``). Needs ``B ≥ 2``.
    """

    type: Literal["info_nce"] = "info_nce"
    temperature: float = Field(default=0.1, gt=0, description="τ: similarities are divided by it.")
    similarity: Literal["cosine", "dot"] = Field(default="cosine", description="cosine: L2-normalise the codes first; dot: raw dot products.")
    variant: Literal["info_nce", "nt_xent"] = Field(
        default="info_nce",
        description="info_nce: negatives from the other code only; nt_xent: SimCLR's, the other 2B-2 codes of both sides.",
    )
    symmetric: bool = Field(default=True, description="info_nce: average the a→b and b→a directions (nt_xent always uses both).")

    per_sample: ClassVar[bool] = True


class _DistributionConfig(LossConfig):
    input: str = Field(description="The prediction that learns, e.g. `fusion_head` (a student).")
    target: str = Field(description="The prediction it is compared with, e.g. `text_head` (a teacher).")
    inputs_are: Literal["logits", "probabilities", "log_probabilities"] = Field(
        default="logits", description="What both values hold over their last axis (logits: a softmax is taken)."
    )
    temperature: float = Field(default=1.0, gt=0, description="T: logits are divided by it (soft targets); the loss is scaled by T².")

    ref_fields: ClassVar[tuple[str, ...]] = ("input", "target")
    per_sample: ClassVar[bool] = True

    def check(self, specs: dict[str, Spec]) -> None:
        _vectors(specs, "input", "target")
        if specs["input"].features == 1:
            raise SpecError(f"input {specs['input']} has one class: a distribution needs at least 2 (for a binary logit use `bce`)", field="input")

    def parameter_shapes(self, specs: dict[str, Spec]) -> Shapes:
        return {}


@loss_type(implementation=f"{MODULES}:KLLoss")
class KLConfig(_DistributionConfig):
    """Kullback-Leibler divergence ``KL(P_target ‖ P_input)`` between two predictions (distillation).

    ``input, target: vector (B, C)``, ``C ≥ 2``. Per sample ``T² Σ_c p_t (log p_t - log p_i)``
    (Hinton et al. 2015); the target is a constant (``detach_target``) as a teacher is.
    """

    type: Literal["kl"] = "kl"
    detach_target: bool = Field(default=True, description="No gradient into the target (the teacher).")


@loss_type(implementation=f"{MODULES}:JSLoss")
class JSConfig(_DistributionConfig):
    """Jensen-Shannon divergence ``½ KL(P ‖ M) + ½ KL(Q ‖ M)``, ``M = (P+Q)/2``, between two predictions.

    ``input, target: vector (B, C)``, ``C ≥ 2``; symmetric, bounded by ``log 2`` (times T²).
    """

    type: Literal["js"] = "js"
    detach_target: bool = Field(default=False, description="No gradient into the target.")


@loss_type(implementation=f"{MODULES}:CosineLoss")
class CosineConfig(_PairConfig):
    """Cosine distance ``1 - cos(a_i, b_i)`` per sample, averaged over the batch.

    ``a, b: vector (B, D)``. No parameters.
    """

    type: Literal["cosine"] = "cosine"
    detach_b: bool = Field(default=False, description="No gradient into b (a fixed target).")

    per_sample: ClassVar[bool] = True


@loss_type(implementation=f"{MODULES}:CPCLoss")
class CPCConfig(LossConfig):
    """MMIM's CPC bound between the fusion and one modality (Han et al. 2021, §3.3; MMSA 2.2.1 ``CPC``).

    ``x: vector (B, D_x)`` (the modality code to predict), ``context: vector (B, D_z)`` (the
    fusion). ``G = Linear(D_z → D_x)``, or with ``layers = n > 1`` MMSA's ``Linear(D_z → D_x) →
    act → (n - 1) × Linear(D_x → D_x)``; ``ℓ_i = -(x̃_i·x̂_i - log Σ_j exp(x̃_i·x̂_j))`` on unit
    vectors. Parameters (training-only): ``D_z·D_x + D_x`` (+ ``(n-1)(D_x² + D_x)``).
    """

    type: Literal["cpc"] = "cpc"
    x: str = Field(description="The code to predict, e.g. `text_enc` (MMIM: each modality's h_m).")
    context: str = Field(description="The code that predicts it, e.g. `fusion` (MMIM: the fusion Z).")
    layers: int = Field(default=1, ge=1, description="Linear layers of the predictor G (MMIM: cpc_layers = 1).")
    activation: Literal["tanh", "relu", "sigmoid"] = Field(default="tanh", description="After G's first layer when layers > 1 (MMIM: Tanh).")

    ref_fields: ClassVar[tuple[str, ...]] = ("x", "context")
    per_sample: ClassVar[bool] = True

    def check(self, specs: dict[str, Spec]) -> None:
        _vectors(specs, "x", "context", same_width=False)

    def parameter_shapes(self, specs: dict[str, Spec]) -> Shapes:
        d_x, d_z = int(specs["x"].features), int(specs["context"].features)
        if self.layers == 1:
            return under("net", linear(d_z, d_x))
        out = under("net.0", linear(d_z, d_x))
        for i in range(1, self.layers):
            out.update(under(f"net.{i + 1}", linear(d_x, d_x)))
        return out


@loss_type(implementation=f"{MODULES}:GaussianBALoss")
class GaussianBAConfig(LossConfig):
    """MMIM's Gaussian Barber-Agakov bound between two modalities: ``-E log q(y|x)`` up to constants
    (Han et al. 2021, §3.2; MMSA 2.2.1 ``MMILB``, its ``lld`` negated).

    ``x: vector (B, D_x)``, ``y: vector (B, D_y)``; ``μ(x)`` and ``log σ²(x)`` are each
    ``Linear(D_x → D_y) → act → Linear(D_y → D_y)``; ``ℓ_i = Σ_d (μ_d - y_d)² / (2 exp(log σ²_d))``.
    Parameters (training-only): ``2 (D_x·D_y + D_y + D_y² + D_y)``.
    """

    type: Literal["gaussian_ba"] = "gaussian_ba"
    x: str = Field(description="The conditioning modality, e.g. `text_enc` (MMIM: text for t-v and t-a).")
    y: str = Field(description="The modality whose likelihood is estimated, e.g. `vision_enc`.")
    activation: Literal["relu", "tanh", "gelu"] = Field(default="relu", description="Between the two layers of μ and log σ² (MMIM: ReLU).")

    ref_fields: ClassVar[tuple[str, ...]] = ("x", "y")
    per_sample: ClassVar[bool] = True

    def check(self, specs: dict[str, Spec]) -> None:
        _vectors(specs, "x", "y", same_width=False)

    def parameter_shapes(self, specs: dict[str, Spec]) -> Shapes:
        d_x, d_y = int(specs["x"].features), int(specs["y"].features)
        out: Shapes = {}
        for net in ("mlp_mu", "mlp_logvar"):
            out.update(under(f"{net}.0", linear(d_x, d_y)))
            out.update(under(f"{net}.2", linear(d_y, d_y)))
        return out


@loss_type(implementation=f"{MODULES}:GaussianEntropyLoss")
class GaussianEntropyConfig(LossConfig):
    """MMIM's entropy estimate of a modality with a memory of past batches, negated (Han et al.
    2021, §3.2; MMSA 2.2.1 ``MMILB``'s ``H`` and its trainer's memory ``mem_size``).

    ``y: vector (B, D)`` (the modality: vision for the t-v bound, audio for t-a), ``label: labels
    (B,)``. ``ỹ = tanh(Linear(D → D/4)(y))``; the positive (``label > 0``) and negative
    (``label < 0``) codes of this batch and of the ``memory`` batches before it in the epoch
    (stored detached, the oldest replaced first) give ``Σ_± = mean (ỹ - μ_±)(ỹ - μ_±)ᵀ`` and
    ``H = ¼ (log det Σ_+ + log det Σ_-)`` (a class with at most ``D/4`` codes, whose ``Σ`` is
    singular, adds 0: MMSA's ``-inf`` makes its run diverge); the loss is ``-H`` from the
    ``memory + 2``-th training batch of each epoch on, 0 before it and out of training (MMSA's
    trainer adds ``-β H`` once ``i_batch > mem_size``; its validation loss is the task loss
    alone). The memory is emptied at every epoch's end (``composer_epoch_end``). Parameters
    (training-only): ``D·D/4 + D/4``.
    """

    type: Literal["gaussian_entropy"] = "gaussian_entropy"
    y: str = Field(description="The modality whose entropy is estimated, e.g. `vision_enc` (MMIM: vision, audio).")
    label: str = Field(default="label", description="The labels whose sign splits the samples (default: the batch label).")
    memory: int = Field(default=1, ge=1, le=1000, description="Past batches kept (MMIM: mem_size = 1).")

    ref_fields: ClassVar[tuple[str, ...]] = ("y", "label")

    def check(self, specs: dict[str, Spec]) -> None:
        _vectors(specs, "y")
        if int(specs["y"].features) < 4:
            raise SpecError(f"y must be at least 4 wide (its code is D/4 wide), got {specs['y']}", field="y")
        if specs["label"].kind != "labels" or specs["label"].dtype != "float":
            raise SpecError(f"label must be regression labels (B,) (their sign splits the samples), got {specs['label']}", field="label")

    def parameter_shapes(self, specs: dict[str, Spec]) -> Shapes:
        d = int(specs["y"].features)
        return under("projection.0", linear(d, d // 4))
