"""Mutual Promotion Unit (EMT-DLFR, Sun et al., eq. 5): config of the ``mpu`` block and the
parameter shapes of the attention layers EMT is built from.

The modules (:mod:`composer.blocks.mpu`) are plain ``nn.Module``s that
:mod:`composer.blocks.fusion.emt` wires into the three fusion strategies, and the ``mpu``
block: one directional MPU as a block of its own, for hybrids that promote one sequence with
another (``{target: H_m, source: H_n} -> H_{n→m}``).

* ``MultiHeadAttention`` — ``(B, Tq, d), (B, Tk, d) -> (B, Tq, d)`` with a key padding
  mask; ``Q = x W_Q``, ``[K; V] = c W_KV`` (no bias by default, as in the authors' code),
  ``softmax(QKᵀ/√d_h)V`` per head, then ``W_O`` (eqs. 2-3).
* ``FeedForward`` — position-wise FFN, ``relu``/``gelu`` (``Linear(d, e·d) → act →
  Linear(e·d, d)``) or ``geglu`` (the authors' code: ``Linear(d, 2·e·d) → x·GELU(gate) →
  Linear(e·d, d)``), dropout on the output.
* ``PromotionUnit`` — one directional sub-MPU ``MPU_{n→m}(H_m, H_n)`` (eq. 5)::

      H'  = MHCA(LN(H_m), LN(H_n)) + H_m
      H'' = MHSA(LN(H'))           + H'
      out = FFN(LN(H''))           + H''

  Padding masks (True = padded step) are honoured as key masks in both attentions; padded
  query rows are computed but carry no information anybody reads.

Parameters of one unit at width ``d``, FFN expansion ``e``: LayerNorms ``8d``; two attentions
``2·(4d² + d)``; FFN ``2e·d² + e·d + d`` (relu/gelu) or ``3e·d² + 2e·d + d`` (geglu). At
``d = 128, e = 4`` that is 264,832 (relu) or 330,112 (geglu).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from composer.configs._base import BlockConfig, Shapes, SpecError, expect_kind
from composer.configs._shapes import layer_norm, linear, under
from composer.registry import block_type
from composer.spec import Spec, sequence

__all__ = ["FFNKind", "MPUConfig", "mpu_attention", "feed_forward", "promotion_unit"]

MODULES = "composer.blocks.mpu"

FFNKind = Literal["relu", "gelu", "geglu"]


def mpu_attention(d: int, qkv_bias: bool = False) -> Shapes:
    """Parameters of :class:`composer.blocks.mpu.MultiHeadAttention` at width ``d``:
    ``to_q d -> d``, ``to_kv d -> 2d`` (biases with ``qkv_bias``), ``to_out d -> d``."""
    return {
        **under("to_q", linear(d, d, qkv_bias)),
        **under("to_kv", linear(d, 2 * d, qkv_bias)),
        **under("to_out", linear(d, d)),
    }


def feed_forward(d: int, expansion: int, kind: str = "relu") -> Shapes:
    """Parameters of :class:`composer.blocks.mpu.FeedForward`: ``fc1 d -> e·d`` (``2e·d`` for
    geglu), ``fc2 e·d -> d``."""
    hidden = d * expansion
    return {**under("fc1", linear(d, 2 * hidden if kind == "geglu" else hidden)), **under("fc2", linear(hidden, d))}


def promotion_unit(d: int, expansion: int, ffn: str, qkv_bias: bool) -> Shapes:
    """Parameters of :class:`composer.blocks.mpu.PromotionUnit` at width ``d``: four LayerNorms,
    two attentions (:func:`mpu_attention`) and the FFN (:func:`feed_forward`)."""
    return {
        **under("norm_query", layer_norm(d)),
        **under("norm_context", layer_norm(d)),
        **under("cross_attn", mpu_attention(d, qkv_bias)),
        **under("norm_self", layer_norm(d)),
        **under("self_attn", mpu_attention(d, qkv_bias)),
        **under("norm_ffn", layer_norm(d)),
        **under("ffn", feed_forward(d, expansion, ffn)),
    }


@block_type("fusion", implementation=f"{MODULES}:MPU")
class MPUConfig(BlockConfig):
    """One Mutual Promotion Unit ``MPU_{n→m}`` (EMT-DLFR eq. 5): ``{target (B, Tm, d), source (B, Tn, d)} -> (B, Tm, d)``.

    ``H' = MHCA(LN(H_m), LN(H_n)) + H_m; H'' = MHSA(LN(H')) + H'; out = FFN(LN(H'')) + H''``, with
    both inputs' padding masks as key masks. The source may be EMT's global context as a token
    sequence (``stack`` the utterance vectors). Parameters at width d, expansion e: ``8d + 2(4d² + d)``
    plus the FFN (``2e·d² + e·d + d`` relu/gelu, ``3e·d² + 2e·d + d`` geglu).
    """

    type: Literal["mpu"] = "mpu"
    heads: int = Field(default=4, ge=1, description="Attention heads (divide the width d).")
    ffn_expansion: int = Field(default=4, ge=1, description="FFN hidden width = ffn_expansion · d.")
    ffn: FFNKind = Field(default="relu", description="relu/gelu (Transformer FFN, eq. 5) or geglu (the authors' code).")
    attn_dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout on attention weights.")
    ffn_dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout on the FFN output.")
    qkv_bias: bool = Field(default=False, description="Bias on the Q/K/V projections (authors' code: none).")

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        if set(inputs) != {"target", "source"}:
            raise SpecError(f"needs inputs `target` and `source` (a mapping), got {sorted(inputs)}", field="in")
        for port in ("target", "source"):
            expect_kind(port, inputs[port], "sequence")
        if inputs["target"].features != inputs["source"].features:
            raise SpecError(f"target and source need one width, got {inputs['target']} and {inputs['source']}", field="in")
        if int(inputs["target"].features) % self.heads:
            raise SpecError(f"width {inputs['target'].features} is not divisible by heads={self.heads}", field="heads")
        return {"out": inputs["target"]}

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        d = int(inputs["target"].features)
        return under("unit", promotion_unit(d, self.ffn_expansion, self.ffn, self.qkv_bias))

    @classmethod
    def examples(cls):
        return [
            ({"heads": 2, "ffn_expansion": 2}, {"target": sequence("T_a", 8), "source": sequence("T_b", 8)}),
            ({"heads": 2, "ffn": "geglu", "qkv_bias": True}, {"target": sequence("T_a", 4), "source": sequence(3, 4)}),
        ]
