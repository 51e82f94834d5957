"""Routing modules: ``activation``, ``scale`` and ``router`` (configs, shapes and equations:
:mod:`composer.configs.routing`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from composer.blocks._base import Block, Context
from composer.blocks.heads import make_mlp
from composer.blocks.pooling import masked_pool
from composer.configs.routing import GATE, WEIGHTS, ActivationConfig, RouterConfig, ScaleConfig, weight_port
from composer.spec import Spec

__all__ = ["ActivationBlock", "Scale", "Router", "broadcast_weight", "entropy_balance", "load_balance"]

_FUNCTIONS = {
    "softmax": lambda x: x.softmax(dim=-1),
    "log_softmax": lambda x: x.log_softmax(dim=-1),
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": F.relu,
    "gelu": F.gelu,
}


def broadcast_weight(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``weight (B,)`` or ``(B, 1)`` times ``x (B, D)`` or ``(B, T, D)``, broadcast per sample."""
    return weight.reshape(x.shape[0], *([1] * (x.dim() - 1))).to(x.dtype) * x


def entropy_balance(weights: torch.Tensor) -> torch.Tensor:
    """EMOE's entropy term: ``mean_b M Σ_m w_bm log w_bm`` for ``weights (B, M)`` (weights
    clamped at 1e-9); the negative entropy times M, lowest (``-M log M``) at uniform weights."""
    w = weights.clamp_min(1e-9)
    return (w.shape[1] * (w * w.log()).sum(dim=1)).mean()


def load_balance(weights: torch.Tensor) -> torch.Tensor:
    """Switch Transformer's load balance (Fedus et al. 2022, eq. 4): ``M Σ_m f_m P_m`` for
    ``weights (B, M)``, ``f_m`` the share of samples whose largest weight is m (no gradient),
    ``P_m`` the mean weight of m; 1 when the load is balanced."""
    m = weights.shape[1]
    shares = F.one_hot(weights.argmax(dim=1), m).to(weights.dtype).mean(dim=0)  # (M,)
    return m * (shares * weights.mean(dim=0)).sum()


class ActivationBlock(Block):
    """``f(x / τ)`` on the last axis (:class:`~composer.configs.routing.ActivationConfig`)."""

    config: ActivationConfig

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        (x,) = inputs.values()
        if self.config.temperature != 1.0:
            x = x / self.config.temperature
        return _FUNCTIONS[self.config.function](x)


class Scale(Block):
    """Per-sample weights broadcast over codes (:class:`~composer.configs.routing.ScaleConfig`)."""

    def __init__(self, config: ScaleConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        self.ports = [p for p in inputs if p != WEIGHTS]
        width = int(inputs[WEIGHTS].features)
        if config.column is not None:
            self.columns = [config.column] * len(self.ports)
        else:
            self.columns = [0 if width == 1 else m for m in range(len(self.ports))]

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor | dict[str, torch.Tensor]:
        weights = inputs[WEIGHTS]  # (B, W)
        out = {p: broadcast_weight(weights[:, c], inputs[p]) for p, c in zip(self.ports, self.columns)}
        return next(iter(out.values())) if len(out) == 1 else out


class Router(Block):
    """Per-sample softmax weights over M inputs and their weighted combination (:class:`~composer.configs.routing.RouterConfig`)."""

    def __init__(self, config: RouterConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        self.ports = [p for p in inputs if p != GATE]
        self.gate = make_mlp(config.gate_width(inputs), config.hidden, len(self.ports), config.activation, config.dropout)

    def _gate_input(self, inputs: dict[str, torch.Tensor], ctx: Context) -> torch.Tensor:
        """``(B, D_g)``: the ``gate`` port, or every input, with sequences averaged over valid steps."""
        ports = [GATE] if GATE in inputs else self.ports
        parts = []
        for port in ports:
            x, spec = inputs[port], self.in_specs[port]
            parts.append(masked_pool(x, ctx.mask(spec), "mean") if spec.kind == "sequence" else x)
        return torch.cat(parts, dim=-1)

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> dict[str, torch.Tensor]:
        c = self.config
        weights = (self.gate(self._gate_input(inputs, ctx)) / c.temperature).softmax(dim=-1)  # (B, M)
        scaled = [broadcast_weight(weights[:, m], inputs[p]) for m, p in enumerate(self.ports)]
        out = torch.stack(scaled, dim=0).sum(dim=0) if c.combine == "sum" else torch.cat(scaled, dim=-1)
        if c.rescale:
            out = out * len(self.ports)
        result = {"out": out, "weights": weights}
        result.update({weight_port(p): weights[:, m : m + 1] for m, p in enumerate(self.ports)})
        if c.entropy_weight > 0:
            result["entropy"] = c.entropy_weight * entropy_balance(weights)
        if c.balance_weight > 0:
            result["balance"] = c.balance_weight * load_balance(weights)
        return result
