"""GLoMo unimodal coding (§3.3, eqs. 1-4): a global and ``n`` local representations per modality.

* ``glomo_text_coding`` (eqs. 1-2): ``{cls: (B, H), layers: (B, T', H)} -> global (B, d), local (B, n·d)``.
  Global ``X_t^g = FF(CLS^{-1})`` is ``Linear(H → d)`` on the last layer's [CLS]; local
  ``X_t^l = CONCAT(AdaMaxPool_n(Conv1D([BERT^{-1}, BERT^{-2}])))``: the hidden layers already
  joined along time by the ``bert`` block (``hidden_layers: [-1, -2]``), then
  ``Conv1d(H → d, k, padding same, no bias)``, adaptive max pooling to ``n`` steps, and the
  ``n`` vectors concatenated.
* ``glomo_coding`` (eqs. 3-4, audio and vision): ``sequence (B, T, D) -> global (B, d), local (B, n·d)``,
  and ``seq (B, T, d)``, the encoded sequence ``TE(Conv1D(U_m))`` itself (for hybrids that attend over it).
  ``Conv1d(D → d, k, padding same, no bias)`` then a MulT-style transformer encoder (the
  ``transformer`` block); global ``X_m^g = MAX(TE(Conv1D(U_m)))`` is the max over valid
  steps, local ``X_m^l = CONCAT(AdaMaxPool_n(TE(Conv1D(U_m))))``.

Both honour the padding mask of their input's time axis (padded steps are zeroed before
the convolution, never attended to, and excluded from every max). The ``n`` local vectors
are concatenated step-major: ``[l_1; l_2; ...; l_n]``. Modules: :mod:`composer.blocks.glomo.coding`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from composer.configs._base import BlockConfig, Shapes, SpecError, expect_kind
from composer.configs._shapes import linear, under
from composer.configs.pooling import AdaptiveMaxPoolConfig
from composer.configs.projection import Conv1dConfig
from composer.configs.transformer import TransformerConfig
from composer.registry import block_type
from composer.spec import Spec, sequence, vector

__all__ = ["GLoMoTextCodingConfig", "GLoMoCodingConfig"]

MODULES = "composer.blocks.glomo.coding"


@block_type("encoder", implementation=f"{MODULES}:GLoMoTextCoding")
class GLoMoTextCodingConfig(BlockConfig):
    """GLoMo text coding (eqs. 1-2): ``{cls (B, H), layers (B, T', H)} -> global (B, d), local (B, n·d)``.

    ``global = Linear(H → d)(cls)``; ``local = flatten(AdaMaxPool_n(Conv1d(H → d, k, no bias)(layers)))``.
    Wire ``cls`` to ``<bert>.cls`` and ``layers`` to ``<bert>.layers`` (``hidden_layers: [-1, -2]``).
    Parameters: ``H·d + d + k·H·d``.
    """

    type: Literal["glomo_text_coding"] = "glomo_text_coding"
    dim: int = Field(ge=1, description="Hidden width d of the global and local representations.")
    n: int = Field(default=3, ge=1, description="Number of local representations n.")
    kernel: int = Field(default=3, ge=1, description="Kernel size of the local Conv1d.")

    def conv_config(self) -> Conv1dConfig:
        """The local ``Conv1d(H → d, k, padding same, no bias)`` as a ``conv1d`` block config."""
        return Conv1dConfig(inputs="x", out=self.dim, kernel=self.kernel, bias=False)

    def pool_config(self) -> AdaptiveMaxPoolConfig:
        """Adaptive max pooling to ``n`` steps as an ``adaptive_max_pool`` block config."""
        return AdaptiveMaxPoolConfig(inputs="x", steps=self.n)

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        if set(inputs) != {"cls", "layers"}:
            raise SpecError(f"needs inputs `cls` and `layers` (a mapping), got {sorted(inputs)}", field="in")
        expect_kind("cls", inputs["cls"], "vector")
        expect_kind("layers", inputs["layers"], "sequence")
        return {"global": vector(self.dim), "local": vector(self.n * self.dim)}

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        layers = {"in": inputs["layers"]}
        conv = self.conv_config()
        hidden = {"in": conv.infer(layers)["out"]}
        return {
            **under("global_proj", linear(int(inputs["cls"].features), self.dim)),
            **under("conv", conv.parameter_shapes(layers)),
            **under("local_pool.pool", self.pool_config().parameter_shapes(hidden)),
        }

    @classmethod
    def examples(cls):
        return [
            ({"dim": 4, "n": 3}, {"cls": vector(6), "layers": sequence("T_x", 6)}),
            ({"dim": 3, "n": 2, "kernel": 1}, {"cls": vector(5), "layers": sequence(8, 5)}),
        ]


@block_type("encoder", implementation=f"{MODULES}:GLoMoCoding")
class GLoMoCodingConfig(BlockConfig):
    """GLoMo audio/vision coding (eqs. 3-4): ``sequence (B, T, D) -> global (B, d), local (B, n·d), seq (B, T, d)``.

    ``h = TE(Conv1d(D → d, k, no bias)(x))`` with TE the MulT-style ``transformer`` block
    (``layers`` layers, ``heads`` heads, √d scaling, sinusoidal positions, final LayerNorm);
    ``global = max_t h`` over valid steps; ``local = flatten(AdaMaxPool_n(h))``.
    Parameters: ``k·D·d + layers·(12d² + 13d) + 2d``.
    For ``layers >= 1`` it is the template ``glomo_sequence_coding`` (blueprints/templates/glomo.yaml);
    it stays a built-in for ``layers: 0``, which the template cannot say (a ``transformer`` has at least one layer).
    """

    type: Literal["glomo_coding"] = "glomo_coding"
    dim: int = Field(ge=1, description="Hidden width d.")
    n: int = Field(default=3, ge=1, description="Number of local representations n.")
    kernel: int = Field(default=3, ge=1, description="Kernel size of the input Conv1d.")
    heads: int = Field(default=4, ge=1, description="Attention heads of the transformer encoder (divide d).")
    layers: int = Field(default=4, ge=0, description="Transformer encoder layers (0: none).")
    attn_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    relu_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    res_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    embed_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    positions: bool = Field(default=True, description="Sinusoidal positions in the transformer encoder (MulT style).")

    def conv_config(self) -> Conv1dConfig:
        """The input ``Conv1d(D → d, k, padding same, no bias)`` as a ``conv1d`` block config."""
        return Conv1dConfig(inputs="x", out=self.dim, kernel=self.kernel, bias=False)

    def encoder_config(self) -> TransformerConfig | None:
        """The encoder TE as a ``transformer`` block config (None for ``layers: 0``)."""
        if not self.layers:
            return None
        return TransformerConfig(
            inputs="x", heads=self.heads, layers=self.layers, attn_dropout=self.attn_dropout,
            relu_dropout=self.relu_dropout, res_dropout=self.res_dropout,
            embed_dropout=self.embed_dropout, positions=self.positions,
        )

    def pool_config(self) -> AdaptiveMaxPoolConfig:
        """Adaptive max pooling to ``n`` steps as an ``adaptive_max_pool`` block config."""
        return AdaptiveMaxPoolConfig(inputs="x", steps=self.n)

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        if len(inputs) != 1:
            raise SpecError(f"expected 1 input, got {len(inputs)}", field="in")
        (port, spec), = inputs.items()
        expect_kind(port, spec, "sequence")
        if self.layers and self.dim % self.heads:
            raise SpecError(f"dim {self.dim} is not divisible by heads={self.heads}", field="heads")
        return {"global": vector(self.dim), "local": vector(self.n * self.dim), "seq": spec.with_features(self.dim)}

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        (spec,) = inputs.values()
        conv = self.conv_config()
        hidden = {"in": conv.infer({"in": spec})["out"]}
        encoder = self.encoder_config()
        return {
            **under("conv", conv.parameter_shapes({"in": spec})),
            **(under("encoder", encoder.parameter_shapes(hidden)) if encoder is not None else {}),
            **under("local_pool.pool", self.pool_config().parameter_shapes(hidden)),
        }

    @classmethod
    def examples(cls):
        return [
            ({"dim": 4, "n": 3, "heads": 2, "layers": 1}, {"in": sequence("T_x", 5)}),
            ({"dim": 6, "n": 2, "heads": 3, "layers": 2, "res_dropout": 0.1, "positions": False}, {"in": sequence(7, 3)}),
            ({"dim": 4, "n": 2, "layers": 0}, {"in": sequence("T_x", 3)}),
        ]
