"""Pretrained text encoder module: a BERT-family model from ``transformers``, built offline
(config, architectures, shapes and outputs: :mod:`composer.configs.text`)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from composer.blocks._base import Block, Context, building_on_meta
from composer.configs.text import TextEncoderConfig, find_weights, text_sizes
from composer.errors import DataError
from composer.spec import Spec

__all__ = ["TextEncoder", "resolve_text_config", "load_text_weights", "pack_valid"]


def resolve_text_config(config: TextEncoderConfig):
    """The ``transformers`` BertConfig of a block config (no network, no weights read), made from
    the torch-free :func:`~composer.configs.text.text_sizes`."""
    from transformers import BertConfig

    return BertConfig(**text_sizes(config).fields)


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


class TextEncoder(Block):
    """BERT-family text encoder (:class:`~composer.configs.text.TextEncoderConfig`)."""

    def __init__(self, config: TextEncoderConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        from transformers import BertModel

        # the one tokens input (a subclass such as ``mag_bert`` takes other inputs beside it)
        self._port = next(port for port, spec in inputs.items() if spec.kind == "tokens")
        self._spec = inputs[self._port]
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

    def tracks_gradients(self) -> bool:
        """Whether the BERT call records gradients (not for a frozen encoder)."""
        return not self.config.freeze

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> dict[str, torch.Tensor]:
        ids = inputs[self._port]  # (B, T) long
        # checked here for ids on the host (free); ids on a device were checked when the data was
        # loaded (composer.data checks every tokens modality against its `vocab`), so no sync per step
        if ids.device.type == "cpu" and not torch.compiler.is_compiling() and ids.numel() and int(ids.max()) >= self.vocab_size:
            raise DataError(
                f"token id {int(ids.max())} is outside the text encoder's vocabulary of {self.vocab_size}; "
                "match the tokens modality's `vocab` to the encoder"
            )
        valid = ctx.mask(self._spec)  # (B, T) True = real token, or None
        segments = ctx.batch.get(self.config.segment_key) if self.config.segment_key else None
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.tracks_gradients()):
            result = self.bert(
                input_ids=ids,
                attention_mask=None if valid is None else valid.long(),
                token_type_ids=segments,
                output_hidden_states=self.config.hidden_layers is not None,
                return_dict=True,
            )
        last = result.last_hidden_state  # (B, T, H)
        keep = valid is None or self.config.pad_states == "keep"  # keep: BERT's states at [PAD] positions (MMSA)
        out = {"cls": last[:, 0], "seq": last if keep else last.masked_fill(~valid[..., None], 0.0)}
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
