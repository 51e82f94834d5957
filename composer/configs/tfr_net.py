"""Configs of TFR-Net's operators (Yuan, Li, Xu, Yu, "Transformer-based Feature Reconstruction
Network for Robust Multimodal Sentiment Analysis", ACM MM 2021), as MMSA 2.2.1 writes them
(``models/missingTask/TFR_NET``). Modules: :mod:`composer.blocks.tfr_net`.

The paper's text was not available to this work: the equations below are what MMSA's code
computes (proven equal by ``tests/test_mmsa_tfr_net.py``), named after the paper's modules, and no
equation numbers of the paper are cited.

* ``tfr_alignment`` — the intra- and inter-modal transformer alignment (MMSA's ``CM_ATTN``
  without its last transformers): each modality is projected to ``d`` by a bias-free
  temporal convolution, then ``h_m = [SA_m(x_m); CM(x_n1 → x_m); CM(x_n2 → x_m)]`` (``3d`` wide),
  the self-attention and crossmodal transformers being MulT's (:mod:`composer.layers.mult`).
* ``transposed_transformer`` — the transformer of the feature-reconstruction module (MMSA's
  ``trans_<m>_final``) whose embedding is the *time* axis: tokens are the ``3d`` feature
  channels of a sample (``tokens: features``, the batch-first reading of ``(B, 3d, T)``) or, as MMSA 2.2.1 runs it
  (its sequence-first encoder is given a ``(B, 3d, T)`` tensor), the samples of the batch, one
  per feature channel (``tokens: samples``).
* ``c_gate`` — the gated recurrent fusion encoder of one modality (MMSA's ``C_GATE``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from composer.configs._base import BlockConfig, Shapes, SpecError, expect_kind, expect_ports
from composer.configs._shapes import conv1d, linear, mult_encoder, rnn, under
from composer.configs.transformer import MulTLayerSettings
from composer.registry import block_type
from composer.spec import Spec, sequence, vector

__all__ = ["TFRAlignmentConfig", "TransposedTransformerConfig", "CGateConfig"]

MODULES = "composer.blocks.tfr_net"

PaddingMode = Literal["exclude", "include"]
PADDING_HELP = (
    "exclude: padded steps are never attended to and padded outputs are zero (a sample's result does not "
    "depend on its padding); include: MMSA 2.2.1's behaviour: padded steps are attended like real ones, a "
    "step whose first input channel is exactly 0 gets no position embedding (fairseq's make_positions with "
    "padding index 0), padded outputs are kept. Depends on padding."
)


@block_type("fusion", implementation=f"{MODULES}:TFRAlignment")
class TFRAlignmentConfig(BlockConfig):
    """TFR-Net's intra- and inter-modal alignment: ``{m: (B, T_m, D_m)} -> {m: (B, T_m, 3d)}``.

    Per modality ``m`` (ports in order, e.g. text, audio, vision), ``x_m = Conv1d_k(X_m)`` (no bias,
    ``k = kernels[m]``, ``(k-1)/2`` zeros each side; skipped when ``D_m = d``), then
    ``h_m = [SA_m(x_m); CM(x_n1 → x_m); CM(x_n2 → x_m)]`` (intra-modal self-attention
    and the inter-modal crossmodal attention of each other modality ``n`` in port order). ``SA``
    and ``CM`` are MulT's transformers (√d scaling, sinusoidal positions, pre-LN layers, final
    LayerNorm): ``CM`` has ``layers`` layers, ``SA`` ``memory_layers`` (MMSA: ``max(nlevels, 3)``);
    ``CM(x_n → ·)`` drops attention weights with ``attn_dropout[n]`` (its source), ``SA`` with
    ``memory_attn_dropout``. Parameters: ``Σ_m k_m·D_m·d`` (projections)
    ``+ (M(M-1)·layers + M·memory_layers)(12d² + 13d) + M(M+1)·2d`` (M modalities).
    """

    type: Literal["tfr_alignment"] = "tfr_alignment"
    dim: int = Field(default=30, ge=1, description="Model width d (MMSA's dst_feature_dim_nheads[0]).")
    heads: int = Field(default=6, ge=1, description="Attention heads, dividing d (dst_feature_dim_nheads[1]).")
    layers: int = Field(default=3, ge=1, description="Layers of each crossmodal transformer (nlevels).")
    memory_layers: int | None = Field(default=None, ge=1, description="Layers of each self-attention transformer (default: max(layers, 3), as MMSA).")
    kernels: dict[str, int] = Field(
        default_factory=dict, description="Projection kernel per modality port (odd; conv1d_kernel_size_l/a/v); default 1."
    )
    attn_dropout: dict[str, float] = Field(
        default_factory=dict,
        description="Attention dropout of the crossmodal transformers whose source is this port (attn_dropout, _a, _v); default 0.",
    )
    memory_attn_dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Attention dropout of the self-attention transformers (attn_dropout).")
    relu_dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout after the feed-forward ReLU (relu_dropout).")
    res_dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout on each residual branch (res_dropout).")
    embed_dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout on the scaled, position-encoded inputs (embed_dropout).")
    causal: bool = Field(default=True, description="MulT's future mask (attn_mask): step i attends source steps j <= i + |T_src - T_tgt|.")
    padding: PaddingMode = Field(default="exclude", description=PADDING_HELP)

    @model_validator(mode="after")
    def _odd_kernels(self) -> "TFRAlignmentConfig":
        even = {m: k for m, k in self.kernels.items() if k < 1 or k % 2 == 0}
        if even:
            raise ValueError(f"kernels must be odd and >= 1 (MMSA pads (k-1)/2 steps each side to keep the length), got {even}")
        for m, p in self.attn_dropout.items():
            if not 0.0 <= p < 1.0:
                raise ValueError(f"attn_dropout.{m} must lie in [0, 1), got {p}")
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not divisible by heads={self.heads}")
        return self

    @property
    def memory_depth(self) -> int:
        return self.memory_layers if self.memory_layers is not None else max(self.layers, 3)

    def _check(self, inputs: dict[str, Spec]) -> None:
        expect_ports(inputs, at_least=2)
        for port, spec in inputs.items():
            expect_kind(port, spec, "sequence")
        unknown = sorted((set(self.kernels) | set(self.attn_dropout)) - set(inputs))
        if unknown:
            raise SpecError(f"kernels / attn_dropout name ports {unknown} that are not inputs ({sorted(inputs)})", field="kernels")

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        self._check(inputs)
        width = len(inputs) * self.dim
        return {port: spec.with_features(width) for port, spec in inputs.items()}

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        self._check(inputs)
        d, out = self.dim, {}
        for port, spec in inputs.items():
            if int(spec.features) != d:
                out.update(under(f"project.{port}", conv1d(int(spec.features), d, self.kernels.get(port, 1), bias=False)))
        for target in inputs:
            for source in inputs:
                if source != target:
                    out.update(under(f"cross.{target}_{source}", mult_encoder(d, self.layers)))
        for port in inputs:
            out.update(under(f"memory.{port}", mult_encoder(d, self.memory_depth)))
        return out

    @classmethod
    def examples(cls):
        return [
            ({"dim": 4, "heads": 2, "layers": 1, "memory_layers": 1, "kernels": {"audio": 3}},
             {"text": sequence("T_t", 6), "audio": sequence("T_a", 3), "vision": sequence("T_v", 4)}),
            ({"dim": 4, "heads": 2, "layers": 1, "memory_layers": 1, "causal": False, "attn_dropout": {"a": 0.1}},
             {"a": sequence("T_a", 4), "b": sequence("T_b", 5)}),
        ]


@block_type("encoder", implementation=f"{MODULES}:TransposedTransformer")
class TransposedTransformerConfig(MulTLayerSettings):
    """A MulT transformer along the other axes: ``sequence (B, T, D) -> (B, T, D)``, embedding width ``length``.

    TFR-Net's feature reconstruction: the aligned sequence ``h_m (B, T, 3d)`` is read with the
    time axis as the embedding, so each token is a length-``T`` vector. ``tokens: features``: the
    ``D`` feature channels of each sample attend to each other (``(B, D, T)``); ``tokens: samples``:
    MMSA 2.2.1's code, whose sequence-first encoder is given ``(B, D, T)`` and so attends across the
    ``B`` samples of the batch, separately for each feature channel (``(D, B, T)``): a sample's
    output then depends on the other samples of its batch (TFR-Net uses it for the reconstruction
    only, a training-only branch). Then ``√T`` scaling, ``layers`` pre-LN layers, final LayerNorm
    (MMSA: no positions, ``num_temporal_head`` heads, ``max(nlevels, 3)`` layers, the future mask).

    The time axis must have exactly ``length`` steps (MMSA's ``seq_lens``, the pickle's padded
    length): padding beyond it is cut, shorter inputs are zero-padded to it (an error if a valid
    step would be cut). ``padding: exclude`` zeroes padded steps first (and in the output), so a sample
    does not depend on its padding; ``include`` reads them as MMSA does. Parameters:
    ``layers·(12T² + 13T) + 2T`` at ``T = length``.
    """

    type: Literal["transposed_transformer"] = "transposed_transformer"
    length: int = Field(ge=1, description="Steps of the time axis, the embedding width (MMSA's seq_lens of the modality).")
    tokens: Literal["features", "samples"] = Field(
        default="features",
        description="features: a sample's feature channels attend to each other; samples: MMSA 2.2.1: the batch's samples attend to each other per channel.",
    )
    positions: bool = Field(default=False, description="Add sinusoidal position embeddings over the tokens (MMSA: none).")
    padding: Literal["exclude", "include"] = Field(
        default="exclude", description="exclude: padded steps are zeroed before and after; include: read as they are (MMSA)."
    )

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        expect_ports(inputs, exactly=1)
        (port, spec), = inputs.items()
        expect_kind(port, spec, "sequence")
        if self.length % self.heads:
            raise SpecError(f"length {self.length} (the embedding width) is not divisible by heads={self.heads}", field="heads")
        if isinstance(spec.time, int) and spec.time != self.length:
            raise SpecError(f"the input has {spec.time} steps, length says {self.length}", field="length")
        return {"out": spec}

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        return under("encoder", mult_encoder(self.length, self.layers))

    @classmethod
    def examples(cls):
        return [
            ({"length": 6, "heads": 2, "layers": 1}, {"in": sequence("T_x", 3)}),
            ({"length": 6, "heads": 3, "layers": 1, "tokens": "samples", "causal": True}, {"in": sequence("T_x", 5)}),
        ]


@block_type("encoder", implementation=f"{MODULES}:CGate")
class CGateConfig(BlockConfig):
    """TFR-Net's gated recurrent encoder of one modality (MMSA's ``C_GATE``): ``sequence (B, T, D) -> vector (B, hidden)``.

    ``s = BiGRU(x)`` (``gru_layers`` layers, packed by the mask, ``(B, T, 2h)``),
    ``g = σ(Conv1d_3(s))`` (one channel, one zero step each side), ``u = tanh(W [x; tanh(s) ⊙ g] + b)``
    ``(B, T, h)``, ``r = max_t u_t``, then dropout. ``padding: exclude`` takes the maximum over
    valid steps; ``include`` over all ``T`` steps, as MMSA does (depends on padding). Parameters:
    the GRU's, ``2h·3 + 1`` (gate), ``(2h + D)·h + h`` (``W``).
    """

    type: Literal["c_gate"] = "c_gate"
    hidden: int = Field(ge=1, description="Width h (fusion_t_hid / fusion_a_hid / fusion_v_hid).")
    gru_layers: int = Field(default=3, ge=1, description="Stacked bidirectional GRU layers (fusion_gru_layers).")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout on the pooled vector (fusion_drop).")
    padding: Literal["exclude", "include"] = Field(
        default="exclude", description="exclude: max over valid steps; include: max over every step, padded ones too (MMSA)."
    )

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        expect_ports(inputs, exactly=1)
        (port, spec), = inputs.items()
        expect_kind(port, spec, "sequence")
        return {"out": vector(self.hidden)}

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        (spec,) = inputs.values()
        h = self.hidden
        return {
            **under("gru.rnn", rnn("gru", int(spec.features), h, self.gru_layers, bidirectional=True)),
            **under("gate", conv1d(2 * h, 1, 3)),
            **under("fc", linear(2 * h + int(spec.features), h)),
        }

    @classmethod
    def examples(cls):
        return [({"hidden": 4, "gru_layers": 2}, {"in": sequence("T_x", 3)}), ({"hidden": 3, "dropout": 0.1}, {"in": sequence("T_x", 5)})]
