"""TFR-Net's operators (Yuan et al., ACM MM 2021) as MMSA 2.2.1 computes them: the transformer
alignment, the transposed transformer of the reconstruction module and the gated recurrent
fusion encoder (configs, shapes and equations: :mod:`composer.configs.tfr_net`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from composer.blocks._base import Block, Context
from composer.blocks.recurrent import GRUEncoder
from composer.configs.recurrent import GRUConfig
from composer.configs.tfr_net import CGateConfig, TFRAlignmentConfig, TransposedTransformerConfig
from composer.errors import DataError
from composer.layers.mult import MulTEncoder, key_padding
from composer.layers.positional import cached_positions
from composer.spec import Spec

__all__ = ["PaddingAsDataEncoder", "TFRAlignment", "TransposedTransformer", "CGate"]


class PaddingAsDataEncoder(MulTEncoder):
    """:class:`~composer.layers.mult.MulTEncoder` with the public code's positions: a step whose
    first (unscaled) input channel is exactly 0 is taken for padding and gets no position
    embedding (fairseq's ``make_positions`` with padding index 0); the others get ``t + 1``."""

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        out = self.scale * x
        if self.positions:
            table = cached_positions(x.shape[1], self.dim, device=x.device, dtype=x.dtype)[None]  # (1, T, d)
            out = out + table * (x[..., :1] != 0).to(x.dtype)  # (B, T, 1): zero rows keep no position
        return F.dropout(out, self.embed_dropout, self.training)


def _encoder(config, dim: int, layers: int, attn_dropout: float, *, positions: bool = True) -> MulTEncoder:
    kind = PaddingAsDataEncoder if config.padding == "include" else MulTEncoder
    return kind(
        dim, config.heads, layers, attn_dropout=attn_dropout, relu_dropout=config.relu_dropout,
        res_dropout=config.res_dropout, embed_dropout=config.embed_dropout, causal=config.causal, positions=positions,
    )


class TFRAlignment(Block):
    """Intra- and inter-modal transformer alignment (:class:`~composer.configs.tfr_net.TFRAlignmentConfig`)."""

    def __init__(self, config: TFRAlignmentConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        self._specs, d = inputs, config.dim
        self.project = nn.ModuleDict({
            port: nn.Conv1d(int(spec.features), d, config.kernels.get(port, 1), padding=(config.kernels.get(port, 1) - 1) // 2, bias=False)
            for port, spec in inputs.items() if int(spec.features) != d
        })
        self.cross = nn.ModuleDict({
            f"{target}_{source}": _encoder(config, d, config.layers, config.attn_dropout.get(source, 0.0))
            for target in inputs for source in inputs if source != target
        })
        self.memory = nn.ModuleDict({port: _encoder(config, d, config.memory_depth, config.memory_attn_dropout) for port in inputs})

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> dict[str, torch.Tensor]:
        include = self.config.padding == "include"
        valid = {port: ctx.mask(spec) for port, spec in self._specs.items()}  # (B, T_m) or None
        x = {}
        for port, h in inputs.items():  # (B, T, D_m) -> (B, T, d)
            if port in self.project:
                if valid[port] is not None and not include:
                    h = h.masked_fill(~valid[port][..., None], 0.0)
                h = self.project[port](h.transpose(1, 2)).transpose(1, 2)
            x[port] = h
        pads = {port: None if include else key_padding(v) for port, v in valid.items()}
        out = {}
        for target in inputs:
            parts = [self.memory[target](x[target], key_padding_mask=pads[target])]  # SA_m: (B, T_m, d)
            parts += [self.cross[f"{target}_{source}"](x[target], x[source], key_padding_mask=pads[source])
                      for source in inputs if source != target]  # CM(x_n -> x_m)
            h = torch.cat(parts, dim=-1)  # (B, T_m, M·d)
            out[target] = h if include or valid[target] is None else h.masked_fill(~valid[target][..., None], 0.0)
        return out


class TransposedTransformer(Block):
    """A MulT transformer with the time axis as embedding (:class:`~composer.configs.tfr_net.TransposedTransformerConfig`)."""

    def __init__(self, config: TransposedTransformerConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        (self._spec,) = inputs.values()
        self.encoder = MulTEncoder(
            config.length, config.heads, config.layers, attn_dropout=config.attn_dropout, relu_dropout=config.relu_dropout,
            res_dropout=config.res_dropout, embed_dropout=config.embed_dropout, causal=config.causal, positions=config.positions,
        )

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        (x,) = inputs.values()  # (B, T, D)
        steps, length = x.shape[1], self.config.length
        valid = ctx.mask(self._spec) if self.config.padding == "exclude" else None
        if valid is not None:
            x = x.masked_fill(~valid[..., None], 0.0)
        if steps > length:  # only padding may be cut, and only when padding is excluded
            if valid is None or bool(valid[:, length:].any()):
                raise DataError(
                    f"transposed_transformer: the input has {steps} steps, more than length={length} (its embedding width)"
                    + (", and some are valid" if valid is not None else "; set `length` to the data's padded length")
                )
            x = x[:, :length]
        elif steps < length:
            x = F.pad(x, (0, 0, 0, length - steps))  # zero steps after the last
        if self.config.tokens == "features":
            h = self.encoder(x.transpose(1, 2)).transpose(1, 2)  # (B, D, T) tokens are channels -> (B, T, D)
        else:
            h = self.encoder(x.permute(2, 0, 1)).permute(1, 2, 0)  # (D, B, T): tokens are samples -> (B, T, D)
        if steps > length:
            h = F.pad(h, (0, 0, 0, steps - length))
        elif steps < length:
            h = h[:, :steps]
        return h if valid is None else h.masked_fill(~valid[..., None], 0.0)


class CGate(Block):
    """Gated recurrent encoder of one modality (:class:`~composer.configs.tfr_net.CGateConfig`)."""

    def __init__(self, config: CGateConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        (self._spec,) = inputs.values()
        h, width = config.hidden, int(self._spec.features)
        gru = GRUConfig.model_validate({"in": "x", "hidden": h, "layers": config.gru_layers, "bidirectional": True, "output": "sequence"})
        self.gru = GRUEncoder(gru, {"in": self._spec})  # packed by the mask: zeros after each length
        self.gate = nn.Conv1d(2 * h, 1, kernel_size=3, padding=1)
        self.fc = nn.Linear(2 * h + width, h)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        (x,) = inputs.values()  # (B, T, D)
        s = self.gru({"in": x}, ctx)  # (B, T, 2h)
        gate = torch.sigmoid(self.gate(s.transpose(1, 2)).transpose(1, 2))  # (B, T, 1)
        u = torch.tanh(self.fc(torch.cat([x, torch.tanh(s) * gate], dim=-1)))  # (B, T, h)
        valid = ctx.mask(self._spec) if self.config.padding == "exclude" else None
        if valid is not None:  # a sample without valid steps keeps all (its result is meaningless, not NaN)
            u = u.masked_fill(~(valid | ~valid.any(dim=1, keepdim=True))[..., None], float("-inf"))
        return self.dropout(u.max(dim=1).values)  # (B, h)
