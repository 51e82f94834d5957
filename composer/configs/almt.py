"""ALMT (Zhang, Wang, Yin, Liu, Liu, Yu, "Learning Language-guided Adaptive Hyper-modality
Representation for Multimodal Sentiment Analysis", EMNLP 2023): configs of its three operators.
Module: :mod:`composer.blocks.almt`.

* ``almt_transformer`` — the ViT-style pre-LN encoder ALMT (and LNLN) compress each modality
  with (§3.1, eq. 1): ``H^0_m = E_m(concat(H_m, X_m W_m) + P)``, learned tokens ``H_m``
  prepended to the (optionally projected) input, learned positions ``P``, layers of
  ``x += MHA(LN_q x, LN_k x, LN_v x); x += FFN(LN x)`` with a GELU feed-forward. With
  ``tokens: n`` the block returns the n token states (``(B, n, d)``, the authors'
  ``[:, :n]``), the compact low-scale representation; without, every step.
* ``ahl`` — Adaptive Hyper-modality Learning (§3.2, eqs. 2-5): a language encoder gives the
  language features at ``L`` scales ``H^1_l, …, H^L_l`` (its input and its ``L-1`` layers), and
  ``L`` hyper-modality layers update the hyper-modality tokens ``H^0_hyper`` guided by them:
  ``H^i_hyper = LN(H^{i-1}_hyper) + W_o[softmax(Q_l K_aᵀ/√d_k) V_a + softmax(Q_l K_vᵀ/√d_k) V_v]``
  with ``Q_l = LN(H^i_l) W_q``, ``K_a = LN(H^0_a) W_ka``, ``V_a = LN(H^0_a) W_va`` and the same
  for vision (eqs. 3-5).
* ``almt_fusion`` — the cross-modality fusion transformer (§3.3, eq. 6): a learned [CLS]
  token and learned positions on both sequences, then layers where the language (target)
  attends to the hyper-modality (source): ``x += MHA(LN_q x, LN_k s, LN_v s); x += FFN(LN x)``.
  Outputs the [CLS] state (the paper's prediction input, eq. 7) and the other target states.

Attention follows the authors' ``Attention``: ``heads`` heads of ``dim_head`` (inner width
``h·e``, independent of ``d``), bias-free ``to_q``, ``to_k``, ``to_v``, and ``to_out``
(``Linear(h·e, d)`` with bias) unless ``heads = 1`` and ``dim_head = d``, where it is the
identity. Parameters of one encoder layer at width d, heads h, head width e, feed-forward m:
``6d + 3d·h·e + [h·e·d + d] + 2d + 2d·m + m + d``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from composer.configs._base import BlockConfig, Shapes, SpecError, expect_kind, expect_ports
from composer.configs._shapes import layer_norm, linear, under
from composer.registry import block_type
from composer.spec import Spec, sequence, vector

__all__ = [
    "ALMTLayerSettings",
    "ALMTTransformerConfig",
    "AHLConfig",
    "ALMTFusionConfig",
    "qkv_attention",
    "almt_encoder_layer",
    "almt_encoder",
    "almt_transformer_shapes",
    "token_encoder",
    "hyper_layer",
    "fixed_length",
    "projects_out",
]

MODULES = "composer.blocks.almt"

Padding = Literal["exclude", "include"]


class ALMTLayerSettings(BlockConfig):
    """Fields of the authors' pre-LN attention layers, shared by the ALMT blocks."""

    layers: int = Field(default=1, ge=1, description="Number of layers (the authors' `depth`).")
    heads: int = Field(default=8, ge=1, description="Attention heads.")
    dim_head: int = Field(default=64, ge=1, description="Width of one head (the inner width is heads·dim_head).")
    mlp: int | None = Field(default=None, ge=1, description="Feed-forward width (`mlp_dim`); default: the model width.")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout after the attention output and in the feed-forward.")


def projects_out(d: int, heads: int, dim_head: int) -> bool:
    """The authors' ``project_out``: ``to_out`` exists unless one head of width ``d``."""
    return not (heads == 1 and dim_head == d)


def qkv_attention(d: int, heads: int, dim_head: int) -> Shapes:
    """Parameters of :class:`composer.blocks.almt.QKVAttention` (without its LayerNorms)."""
    inner = heads * dim_head
    return {
        **under("to_q", linear(d, inner, bias=False)),
        **under("to_k", linear(d, inner, bias=False)),
        **under("to_v", linear(d, inner, bias=False)),
        **(under("to_out", linear(inner, d)) if projects_out(d, heads, dim_head) else {}),
    }


def almt_encoder_layer(d: int, heads: int, dim_head: int, mlp: int) -> Shapes:
    """Parameters of :class:`composer.blocks.almt.EncoderLayer`: three LayerNorms and the
    attention, then the feed-forward's LayerNorm and ``d -> m -> d``."""
    return {
        **under("attn.norm_q", layer_norm(d)),
        **under("attn.norm_k", layer_norm(d)),
        **under("attn.norm_v", layer_norm(d)),
        **under("attn", qkv_attention(d, heads, dim_head)),
        **under("ffn.norm", layer_norm(d)),
        **under("ffn.fc1", linear(d, mlp)),
        **under("ffn.fc2", linear(mlp, d)),
    }


def almt_encoder(d: int, layers: int, heads: int, dim_head: int, mlp: int) -> Shapes:
    """``layers`` encoder layers under ``layers.<i>``."""
    shapes: Shapes = {}
    for i in range(layers):
        shapes.update(under(f"layers.{i}", almt_encoder_layer(d, heads, dim_head, mlp)))
    return shapes


def fixed_length(port: str, spec: Spec, why: str) -> int:
    """The int time length of a fixed-length sequence (raises SpecError for a padded one)."""
    expect_kind(port, spec, "sequence")
    if not isinstance(spec.time, int):
        raise SpecError(
            f"input '{port}' must be a fixed-length sequence (an int time length, e.g. an almt_transformer's "
            f"`tokens` output), got {spec}: {why}",
            field="in",
        )
    return spec.time


def almt_transformer_shapes(d_in: int, d: int, frames: int, tokens: int | None, settings: ALMTLayerSettings) -> Shapes:
    """Parameters of :class:`composer.blocks.almt.ALMTTransformer`."""
    return {
        **(under("project", linear(d_in, d)) if d != d_in else {}),
        **under("encoder", token_encoder(d, frames, tokens, settings.layers, settings.heads, settings.dim_head, settings.mlp or d)),
    }


def token_encoder(d: int, frames: int, tokens: int | None, layers: int, heads: int, dim_head: int, mlp: int) -> Shapes:
    """Parameters of :class:`composer.blocks.almt.TokenEncoder`: positions ``(1, frames + n, d)``,
    the ``n`` tokens ``(1, n, d)`` (if any), then the layers."""
    return {
        "pos_embedding": (1, frames + (tokens or 0), d),
        **({"extra_token": (1, tokens, d)} if tokens else {}),
        **almt_encoder(d, layers, heads, dim_head, mlp),
    }


@block_type("encoder", implementation=f"{MODULES}:ALMTTransformer")
class ALMTTransformerConfig(ALMTLayerSettings):
    """ALMT's token encoder (§3.1, eq. 1): ``sequence (B, T, D) -> (B, n, d)`` with ``tokens: n``, else ``(B, T, d)``.

    ``x -> [Linear(D, d) if dim] -> [n learned tokens (zeros); x] + P[:n+T] -> layers`` where each
    layer is ``x += W_o MHA(LN_q x W_q, LN_k x W_k, LN_v x W_v); x += W_2 GELU(W_1 LN x)``
    (the authors' ``Transformer`` in ``almt_layer.py`` after ALMT's ``proj_l/a/v`` Linear).
    ``P`` is ``(1, frames + n, d)``, drawn from N(0, 1); ``frames`` is the longest input the block
    takes (default: the input's length when it is fixed). With ``tokens`` the output is the token
    states (the authors' ``[:, :n]``), a fixed-length sequence without padding; without, every
    step on the input's time axis (padded steps zeroed).

    ``padding: exclude`` (default) passes the input's padding mask as the key mask, so no
    output depends on padded steps; ``include`` attends to every step as the authors' code does
    (MMSA-style zero padding is then read, and BERT's states at padded positions too).
    Parameters: ``D·d + d`` (projection, if ``dim`` differs from D) ``+ (frames + n)·d + n·d +
    layers·(10d + 3d·h·e + h·e·d + 2d·m + m)`` (one head of width d: no ``to_out``, ``h·e·d + d`` less).
    """

    type: Literal["almt_transformer"] = "almt_transformer"
    dim: int | None = Field(default=None, ge=1, description="Model width d; an input of another width is first mapped by Linear(D, d) (ALMT's proj_m).")
    tokens: int | None = Field(default=None, ge=1, description="Learned tokens prepended (`token_len`); the output is their states.")
    frames: int | None = Field(default=None, ge=1, description="Positions for this many input steps (`num_frames`); default: the input's fixed length.")
    emb_dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout on the position-encoded input.")
    padding: Padding = Field(default="exclude", description="exclude: padded steps are never attended to; include: the authors' code (every step attended).")

    def width(self, spec: Spec) -> int:
        return self.dim or int(spec.features)

    def positions(self, spec: Spec) -> int:
        """``frames``, or the input's fixed length (raises SpecError when neither is known)."""
        if self.frames is not None:
            if isinstance(spec.time, int) and spec.time > self.frames:
                raise SpecError(f"the input has {spec.time} steps but `frames` is {self.frames}", field="frames")
            return self.frames
        if isinstance(spec.time, int):
            return spec.time
        raise SpecError(
            f"the input {spec} has a variable length: set `frames` to the longest it may be (the modality's `length`)",
            field="frames",
        )

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        expect_ports(inputs, exactly=1)
        (port, spec), = inputs.items()
        expect_kind(port, spec, "sequence")
        self.positions(spec)
        d = self.width(spec)
        out = spec.with_features(d)
        return {"out": out.with_time(self.tokens) if self.tokens else out}

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        (spec,) = inputs.values()
        return almt_transformer_shapes(int(spec.features), self.width(spec), self.positions(spec), self.tokens, self)

    @classmethod
    def examples(cls):
        return [
            ({"dim": 8, "tokens": 2, "frames": 12, "heads": 2, "dim_head": 3, "mlp": 5}, {"in": sequence("T_x", 4)}),
            ({"heads": 1, "dim_head": 6, "layers": 2}, {"in": sequence(5, 6)}),
            ({"heads": 2, "dim_head": 3, "frames": 12}, {"in": sequence("T_x", 4)}),
            ({"tokens": 1, "heads": 2, "dim_head": 4, "padding": "include", "frames": 12}, {"in": sequence("T_x", 6)}),
        ]


def hyper_layer(d: int, heads: int, dim_head: int) -> Shapes:
    """Parameters of :class:`composer.blocks.almt.HyperLayer` (eqs. 3-5)."""
    inner = heads * dim_head
    return {
        **under("norm_language", layer_norm(d)),
        **under("norm_audio", layer_norm(d)),
        **under("norm_vision", layer_norm(d)),
        **under("norm_hyper", layer_norm(d)),
        **under("to_q", linear(d, inner, bias=False)),
        **under("to_k_audio", linear(d, inner, bias=False)),
        **under("to_k_vision", linear(d, inner, bias=False)),
        **under("to_v_audio", linear(d, inner, bias=False)),
        **under("to_v_vision", linear(d, inner, bias=False)),
        **(under("to_out", linear(inner, d)) if projects_out(d, heads, dim_head) else {}),
    }


@block_type("fusion", implementation=f"{MODULES}:AHL")
class AHLConfig(BlockConfig):
    """Adaptive Hyper-modality Learning (ALMT §3.2, eqs. 2-5): ``{language (B, n, d), audio (B, n_a, d), vision (B, n_v, d)}``
    -> ``hyper (B, n, d)``, ``language (B, n, d)``.

    The language encoder (the authors' ``l_encoder``: learned positions and ``layers - 1``
    :class:`almt_transformer` layers) gives ``H^1_l = H^0_l + P`` and ``H^i_l`` after its layer
    ``i-1`` (eq. 2). The hyper-modality tokens ``H^0_hyper`` (``n`` learned vectors, initialised
    to ones) pass ``layers`` hyper-modality layers (eqs. 3-5), layer ``i`` guided by ``H^i_l``::

        Q = LN_1(H^i_l) W_q;  K_a, V_a = LN_2(H^0_a) W_ka, W_va;  K_v, V_v = LN_3(H^0_v) W_kv, W_vv
        H^i_hyper = LN_4(H^{i-1}_hyper) + W_o [softmax(Q K_aᵀ/√e) V_a + softmax(Q K_vᵀ/√e) V_v]

    (the residual adds to the *normalised* hyper tokens, as the authors' code does). Outputs:
    ``hyper`` = ``H^L_hyper`` and ``language`` = ``H^L_l`` (the encoder's last layer, the
    fusion's target). All inputs are fixed-length sequences of one width; ``n`` is the
    language's length. In LNLN (Zhang et al., NeurIPS 2024, §3.3, DMML) the language port takes
    the corrected dominant modality. Parameters: ``n·d`` (tokens) ``+ n·d`` (positions) ``+
    (layers-1)·(language layer) + layers·(8d + 5d·h·e + h·e·d + d)``.
    """

    type: Literal["ahl"] = "ahl"
    layers: int = Field(default=3, ge=1, description="Hyper-modality layers L (`AHL_depth`); the language encoder has L-1.")
    heads: int = Field(default=8, ge=1, description="Heads of the hyper-modality layers (`ahl_heads`).")
    dim_head: int = Field(default=16, ge=1, description="Head width of the hyper-modality layers (`ahl_dim_head`).")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout after the hyper-modality attention (`ahl_droup`).")
    language_heads: int = Field(default=8, ge=1, description="Heads of the language encoder (`l_enc_heads`).")
    language_dim_head: int = Field(default=64, ge=1, description="Head width of the language encoder (the authors' default 64).")
    language_mlp: int | None = Field(default=None, ge=1, description="Feed-forward width of the language encoder (`l_enc_mlp_dim`); default d.")

    main_port = "hyper"

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        if set(inputs) != {"language", "audio", "vision"}:
            raise SpecError(f"needs inputs `language`, `audio` and `vision` (a mapping), got {sorted(inputs)}", field="in")
        why = "ALMT's hyper-modality learning reads the compact token representations of §3.1"
        for port in ("language", "audio", "vision"):
            fixed_length(port, inputs[port], why)
        widths = {port: inputs[port].features for port in inputs}
        if len(set(widths.values())) != 1:
            raise SpecError(f"language, audio and vision need one width, got {widths}", field="in")
        return {"hyper": inputs["language"], "language": inputs["language"]}

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        spec = inputs["language"]
        d, n = int(spec.features), int(spec.time)
        shapes: Shapes = {"hyper_tokens": (1, n, d)}
        shapes.update(under("language_encoder", token_encoder(d, n, None, self.layers - 1, self.language_heads, self.language_dim_head, self.language_mlp or d)))
        for i in range(self.layers):
            shapes.update(under(f"hyper_layers.{i}", hyper_layer(d, self.heads, self.dim_head)))
        return shapes

    @classmethod
    def examples(cls):
        return [
            ({"layers": 2, "heads": 2, "dim_head": 3, "language_heads": 2, "language_dim_head": 4, "language_mlp": 5},
             {"language": sequence(3, 8), "audio": sequence(2, 8), "vision": sequence(4, 8)}),
            ({"layers": 1, "heads": 1, "dim_head": 6}, {"language": sequence(2, 6), "audio": sequence(2, 6), "vision": sequence(2, 6)}),
        ]


@block_type("fusion", implementation=f"{MODULES}:ALMTFusion")
class ALMTFusionConfig(ALMTLayerSettings):
    """ALMT's cross-modality fusion transformer (§3.3, eq. 6): ``{target (B, n_t, d), source (B, n_s, d)}``
    -> ``cls (B, d)``, ``seq (B, n_t, d)``.

    A learned [CLS] token (zeros; the same vector heads both sequences) is prepended to the
    source and to the target, each plus its own learned positions (``(1, n+1, d)``, N(0, 1));
    then ``layers`` layers ``t += W_o MHA(LN_q t W_q, LN_k s W_k, LN_v s W_v); t += FFN(LN t)``
    (the authors' ``CrossTransformer``: the target queries the source, the source stays as it
    is). ``cls`` is the target's [CLS] state (ALMT's prediction input, eq. 7: ``[:, 0]``);
    ``seq`` the other target states (LNLN averages them, §3.3). ALMT's source is the
    hyper-modality ``H^L_hyper``, its target the language ``H^L_l``. Both inputs are fixed-length.
    Parameters: ``(n_s + 1)·d + (n_t + 1)·d + d + layers·(layer)``.
    """

    type: Literal["almt_fusion"] = "almt_fusion"
    emb_dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout on the position-encoded inputs.")

    main_port = "cls"

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        if set(inputs) != {"target", "source"}:
            raise SpecError(f"needs inputs `target` and `source` (a mapping), got {sorted(inputs)}", field="in")
        for port in ("target", "source"):
            fixed_length(port, inputs[port], "its positions are learned per step")
        if inputs["target"].features != inputs["source"].features:
            raise SpecError(f"target and source need one width, got {inputs['target']} and {inputs['source']}", field="in")
        target = inputs["target"]
        return {"cls": vector(target.features, batch=target.batch), "seq": target}

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        d = int(inputs["target"].features)
        n_t, n_s = int(inputs["target"].time), int(inputs["source"].time)
        return {
            "pos_embedding_s": (1, n_s + 1, d),
            "pos_embedding_t": (1, n_t + 1, d),
            "extra_token": (1, 1, d),
            **almt_encoder(d, self.layers, self.heads, self.dim_head, self.mlp or d),
        }

    @classmethod
    def examples(cls):
        return [
            ({"layers": 2, "heads": 2, "dim_head": 3, "mlp": 5}, {"target": sequence(3, 8), "source": sequence(4, 8)}),
            ({"heads": 1, "dim_head": 6}, {"target": sequence(2, 6), "source": sequence(2, 6)}),
        ]
