"""Optimiser, parameter groups, schedulers, device and precision from ``training``."""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch
from torch import nn

from composer.errors import ComposerError, did_you_mean

__all__ = ["select_device", "build_optimizer", "build_scheduler", "Precision", "STEP_SCHEDULERS"]

STEP_SCHEDULERS = {"cosine", "linear_warmup"}  # stepped after every optimiser step; others per epoch


def select_device(name: str | None = None) -> torch.device:
    """``name`` if given (``cpu``, ``cuda``, ``cuda:1``), else CUDA when available, else CPU."""
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ComposerError(f"unknown device '{name}' (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ComposerError(f"device '{name}' requested but CUDA is not available")
    return device


def build_optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    """Optimiser with one group per ``param_groups`` entry (parameters of the listed blocks) plus the rest.

    Parameter names start with block ids, so a group takes every parameter under
    ``<block>.``. A parameter can belong to one group only.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    block_ids = {n.split(".")[0] for n, _ in model.named_parameters()} | set(getattr(model, "plan").blueprint.blocks)
    taken: dict[str, int] = {}
    groups = []
    for i, group in enumerate(cfg.param_groups):
        params = []
        for bid in group.blocks:
            if bid not in block_ids:
                hint = did_you_mean(bid, sorted(block_ids))
                raise ComposerError(
                    f"training.param_groups[{i}].blocks: unknown block '{bid}'" + (f" (did you mean '{hint}'?)" if hint else "")
                )
            prefix = bid.replace("/", ".") + "."  # a template use's blocks nest under its id
            for name, p in named:
                if name.startswith(prefix):
                    if name in taken:
                        raise ComposerError(f"training.param_groups[{i}]: parameters of '{bid}' are already in group {taken[name]}")
                    taken[name] = i
                    params.append(p)
        entry = {"params": params, "lr": group.lr if group.lr is not None else cfg.lr, "name": "+".join(group.blocks)}
        entry["weight_decay"] = group.weight_decay if group.weight_decay is not None else cfg.weight_decay
        if params:
            groups.append(entry)
    rest = [p for n, p in named if n not in taken]
    if rest:
        groups.append({"params": rest, "lr": cfg.lr, "weight_decay": cfg.weight_decay, "name": "default"})
    if not groups:
        raise ComposerError("the model has no trainable parameters")
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg, steps_per_epoch: int, direction: str):
    """The learning-rate scheduler of ``training.scheduler`` (or None).

    ``cosine``: cosine decay to 0 over all optimiser steps of the run; ``linear_warmup``:
    linear increase over ``warmup_steps`` optimiser steps, then constant; ``step``: multiply
    by ``gamma`` every ``step_size`` epochs; ``plateau``: multiply by ``gamma`` after
    ``patience`` epochs without improvement of the monitored validation metric.
    """
    s = cfg.scheduler
    if s.type == "none":
        return None
    if s.type == "cosine":
        total = max(1, steps_per_epoch * cfg.epochs)
        warm = s.warmup_steps

        def cosine(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            progress = min(1.0, (step - warm) / max(1, total - warm))
            return 0.5 * (1.0 + math.cos(math.pi * progress))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, cosine)
    if s.type == "linear_warmup":
        warm = max(1, s.warmup_steps)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warm))
    if s.type == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=s.step_size, gamma=s.gamma)
    mode = "min" if direction == "minimize" else "max"
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=s.gamma, patience=s.patience)


class Precision:
    """Autocast and gradient scaling for ``training.precision`` on a device.

    ``auto``: bf16 autocast on CUDA devices that support it, fp16 with a gradient scaler on
    older ones, fp32 on CPU. ``bf16`` also works on CPU; ``fp16`` needs CUDA.
    """

    def __init__(self, precision: str, device: torch.device):
        if precision == "auto":
            if device.type == "cuda":
                precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
            else:
                precision = "fp32"
        if precision == "fp16" and device.type != "cuda":
            raise ComposerError("training.precision fp16 needs a CUDA device; use bf16 or fp32 on CPU")
        self.name = precision
        self.device = device
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None

    def autocast(self):
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)
