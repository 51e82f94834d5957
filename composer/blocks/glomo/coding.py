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
are concatenated step-major: ``[l_1; l_2; ...; l_n]``.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from composer.blocks._base import Block, BlockConfig, Context, SpecError, expect_kind
from composer.registry import get_block, register_block
from composer.blocks.pooling import masked_pool
from composer.spec import Spec, sequence, vector

__all__ = ["GLoMoTextCodingConfig", "GLoMoTextCoding", "GLoMoCodingConfig", "GLoMoCoding"]


def _sub_block(type_name: str, spec: Spec, **fields) -> Block:
    """Build a registered block on one input spec (composite blocks reuse the plain ones)."""
    entry = get_block(type_name)
    return entry.impl(entry.config(type=type_name, inputs="x", **fields), {"in": spec})


class _LocalPool(nn.Module):
    """``sequence (B, T, d) -> (B, n·d)``: adaptive max pooling to n steps, then concatenation."""

    def __init__(self, spec: Spec, n: int):
        super().__init__()
        self.pool = _sub_block("adaptive_max_pool", spec, steps=n)

    def forward(self, x: torch.Tensor, ctx: Context) -> torch.Tensor:
        pooled = self.pool({"in": x}, ctx)  # (B, n, d)
        return pooled.flatten(1)  # (B, n, d) -> (B, n·d)


class GLoMoTextCodingConfig(BlockConfig):
    type: Literal["glomo_text_coding"] = "glomo_text_coding"
    dim: int = Field(ge=1, description="Hidden width d of the global and local representations.")
    n: int = Field(default=3, ge=1, description="Number of local representations n.")
    kernel: int = Field(default=3, ge=1, description="Kernel size of the local Conv1d.")


@register_block(GLoMoTextCodingConfig, family="encoder")
class GLoMoTextCoding(Block):
    """GLoMo text coding (eqs. 1-2): ``{cls (B, H), layers (B, T', H)} -> global (B, d), local (B, n·d)``.

    ``global = Linear(H → d)(cls)``; ``local = flatten(AdaMaxPool_n(Conv1d(H → d, k, no bias)(layers)))``.
    Wire ``cls`` to ``<bert>.cls`` and ``layers`` to ``<bert>.layers`` (``hidden_layers: [-1, -2]``).
    Parameters: ``H·d + d + k·H·d``.
    """

    @classmethod
    def infer(cls, config: GLoMoTextCodingConfig, inputs: dict[str, Spec]) -> dict[str, Spec]:
        if set(inputs) != {"cls", "layers"}:
            raise SpecError(f"needs inputs `cls` and `layers` (a mapping), got {sorted(inputs)}", field="in")
        expect_kind("cls", inputs["cls"], "vector")
        expect_kind("layers", inputs["layers"], "sequence")
        return {"global": vector(config.dim), "local": vector(config.n * config.dim)}

    @classmethod
    def examples(cls):
        return [
            ({"dim": 4, "n": 3}, {"cls": vector(6), "layers": sequence("T_x", 6)}),
            ({"dim": 3, "n": 2, "kernel": 1}, {"cls": vector(5), "layers": sequence(8, 5)}),
        ]

    def __init__(self, config: GLoMoTextCodingConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        layers = inputs["layers"]
        self.global_proj = nn.Linear(int(inputs["cls"].features), config.dim)
        self.conv = _sub_block("conv1d", layers, out=config.dim, kernel=config.kernel, bias=False)
        self.local_pool = _LocalPool(self.conv.out_specs["out"], config.n)

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> dict[str, torch.Tensor]:
        local = self.conv({"in": inputs["layers"]}, ctx)  # (B, T', H) -> (B, T', d)
        return {"global": self.global_proj(inputs["cls"]), "local": self.local_pool(local, ctx)}


class GLoMoCodingConfig(BlockConfig):
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


@register_block(GLoMoCodingConfig, family="encoder")
class GLoMoCoding(Block):
    """GLoMo audio/vision coding (eqs. 3-4): ``sequence (B, T, D) -> global (B, d), local (B, n·d), seq (B, T, d)``.

    ``h = TE(Conv1d(D → d, k, no bias)(x))`` with TE the MulT-style ``transformer`` block
    (``layers`` layers, ``heads`` heads, √d scaling, sinusoidal positions, final LayerNorm);
    ``global = max_t h`` over valid steps; ``local = flatten(AdaMaxPool_n(h))``.
    Parameters: ``k·D·d + layers·(12d² + 13d) + 2d``.
    For ``layers >= 1`` it is the template ``glomo_sequence_coding`` (blueprints/templates/glomo.yaml);
    it stays a built-in for ``layers: 0``, which the template cannot say (a ``transformer`` has at least one layer).
    """

    @classmethod
    def infer(cls, config: GLoMoCodingConfig, inputs: dict[str, Spec]) -> dict[str, Spec]:
        if len(inputs) != 1:
            raise SpecError(f"expected 1 input, got {len(inputs)}", field="in")
        (port, spec), = inputs.items()
        expect_kind(port, spec, "sequence")
        if config.layers and config.dim % config.heads:
            raise SpecError(f"dim {config.dim} is not divisible by heads={config.heads}", field="heads")
        return {"global": vector(config.dim), "local": vector(config.n * config.dim), "seq": spec.with_features(config.dim)}

    @classmethod
    def examples(cls):
        return [
            ({"dim": 4, "n": 3, "heads": 2, "layers": 1}, {"in": sequence("T_x", 5)}),
            ({"dim": 6, "n": 2, "heads": 3, "layers": 2, "res_dropout": 0.1, "positions": False}, {"in": sequence(7, 3)}),
            ({"dim": 4, "n": 2, "layers": 0}, {"in": sequence("T_x", 3)}),
        ]

    def __init__(self, config: GLoMoCodingConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        (spec,) = inputs.values()
        self.conv = _sub_block("conv1d", spec, out=config.dim, kernel=config.kernel, bias=False)
        hidden = self.conv.out_specs["out"]
        self.encoder = None
        if config.layers:
            self.encoder = _sub_block(
                "transformer", hidden, heads=config.heads, layers=config.layers, attn_dropout=config.attn_dropout,
                relu_dropout=config.relu_dropout, res_dropout=config.res_dropout,
                embed_dropout=config.embed_dropout, positions=config.positions,
            )
        self._hidden_spec = hidden
        self.local_pool = _LocalPool(hidden, config.n)

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> dict[str, torch.Tensor]:
        (x,) = inputs.values()  # (B, T, D)
        h = self.conv({"in": x}, ctx)  # (B, T, d)
        if self.encoder is not None:
            h = self.encoder({"in": h}, ctx)  # (B, T, d)
        valid = ctx.mask(self._hidden_spec)
        global_ = masked_pool(h, valid, "max")  # (B, d), eq. 3
        seq = h if valid is None else h.masked_fill(~valid[..., None], 0.0)  # the encoded sequence, padding zeroed
        return {"global": global_, "local": self.local_pool(h, ctx), "seq": seq}  # eq. 4
