"""Optimiser, parameter groups, schedulers, device and precision from ``training``."""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch
from torch import nn

from composer.errors import ComposerError, did_you_mean

__all__ = ["select_device", "build_optimizer", "build_stage_optimizers", "stage_terms", "stage_parameter_names", "build_scheduler", "Precision", "STEP_SCHEDULERS"]

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


def owner_prefix(model: nn.Module, owner: str) -> str:
    """The parameter-name prefix of a block, template use or loss (by name): ``pair.ab.``, ``losses.3.``."""
    for node in model.plan.losses:
        if node.name == owner and owner not in model.plan.blueprint.blocks:
            return f"losses.{node.index}."
    return owner.replace("/", ".") + "."


def stage_parameter_names(model: nn.Module, cfg) -> dict[str, set[str]]:
    """Per ``training.stages`` entry, the names of the parameters its optimiser steps."""
    named = [n for n, p in model.named_parameters() if p.requires_grad]
    out = {}
    for stage in cfg.stages:
        prefixes = tuple(owner_prefix(model, o) for o in stage.update)
        out[stage.name] = {n for n in named if n.startswith(prefixes)}
    return out


def stage_terms(bp, stage) -> set[str]:
    """The loss names a stage's objective sums: named losses, and every member of a named group."""
    names = [cfg.name or f"{cfg.type}_{i}" for i, cfg in enumerate(bp.losses)]
    return {n for n, cfg in zip(names, bp.losses) if n in stage.objective or cfg.group in stage.objective}


def build_stage_optimizers(model: nn.Module, cfg) -> dict[str, torch.optim.Optimizer]:
    """One optimiser per ``training.stages`` entry over its parameters (its own optimiser type,
    lr and weight decay, else the training section's)."""
    params = dict(model.named_parameters())
    out = {}
    for stage in cfg.stages:
        names = stage_parameter_names(model, cfg)[stage.name]
        if not names:
            raise ComposerError(f"training.stages '{stage.name}': {', '.join(stage.update)} hold no trainable parameters")
        lr = stage.lr if stage.lr is not None else cfg.lr
        decay = stage.weight_decay if stage.weight_decay is not None else cfg.weight_decay
        group = [{"params": [params[n] for n in sorted(names)], "lr": lr, "weight_decay": decay, "name": stage.name}]
        out[stage.name] = _make_optimizer(stage.optimizer or cfg.optimizer, group, lr, cfg.momentum)
    return out


def _make_optimizer(kind: str, groups: list[dict], lr: float, momentum: float) -> torch.optim.Optimizer:
    if kind == "adam":
        return torch.optim.Adam(groups, lr=lr)
    if kind == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum)


def build_optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    """Optimiser with one group per ``param_groups`` entry (parameters of the listed blocks) plus the rest.

    Parameter names start with block ids, so a group takes every parameter under
    ``<block>.``; with ``params``, only those whose name contains one of its strings (an
    ``lr`` of 0 leaves them unchanged). A parameter can belong to one group only. With ``no_weight_decay``, each
    group is split in two: the parameters whose name contains one of its strings get weight
    decay 0 (the usual exemption of biases and LayerNorm weights). Parameters that a
    ``training.stages`` entry updates are left to that stage's optimiser.
    """
    staged = set().union(*stage_parameter_names(model, cfg).values()) if cfg.stages else set()
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad and n not in staged]
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
                if name.startswith(prefix) and (group.params is None or name_matches(name, group.params)):
                    if name in taken:
                        raise ComposerError(f"training.param_groups[{i}]: parameter '{name}' of '{bid}' is already in group {taken[name]}")
                    taken[name] = i
                    params.append((name, p))
        if group.params is not None:
            unmatched = [s for s in group.params if not any(name_matches(n, [s]) for n, _ in params)]
            if unmatched:
                inside = [n for n, _ in named if n.startswith(tuple(b.replace("/", ".") + "." for b in group.blocks))]
                raise ComposerError(
                    f"training.param_groups[{i}].params: no trainable parameter of {', '.join(group.blocks)} contains '{unmatched[0]}'"
                    f" (their names: {', '.join(inside) or 'none'})"
                )
        lr = group.lr if group.lr is not None else cfg.lr
        decay = group.weight_decay if group.weight_decay is not None else cfg.weight_decay
        label = "+".join(group.blocks) + (f"[{','.join(group.params)}]" if group.params is not None else "")
        groups += _decay_split(params, lr, decay, label, cfg.no_weight_decay)
    rest = [(n, p) for n, p in named if n not in taken]
    groups += _decay_split(rest, cfg.lr, cfg.weight_decay, "default", cfg.no_weight_decay)
    if not groups:
        raise ComposerError("the model has no trainable parameters")
    return _make_optimizer(cfg.optimizer, groups, cfg.lr, cfg.momentum)


def name_matches(name: str, patterns: list[str]) -> bool:
    """Whether a parameter name contains one of ``patterns`` (``no_weight_decay``, ``param_groups[].params``)."""
    return any(s in name for s in patterns)


def _decay_split(params: list[tuple[str, nn.Parameter]], lr: float, decay: float, name: str, exempt: list[str]) -> list[dict]:
    """One optimiser group, or two when some names match ``exempt`` (those get weight decay 0)."""
    free = [p for n, p in params if name_matches(n, exempt)]
    kept = [p for n, p in params if not name_matches(n, exempt)]
    out = []
    if kept:
        out.append({"params": kept, "lr": lr, "weight_decay": decay, "name": name})
    if free:
        out.append({"params": free, "lr": lr, "weight_decay": 0.0, "name": f"{name} (no decay)"})
    return out


def reset_optimizer(old: torch.optim.Optimizer, model: nn.Module, cfg, scheduler) -> torch.optim.Optimizer:
    """A fresh optimiser (moments and step counts zeroed) at the old one's current learning rates;
    the scheduler is re-bound to it and keeps its own count (``training.reset_optimizer: epoch``)."""
    new = build_optimizer(model, cfg)
    for fresh, used in zip(new.param_groups, old.param_groups):
        for key in ("lr", "initial_lr"):
            if key in used:
                fresh[key] = used[key]
    if scheduler is not None:
        scheduler.optimizer = new
    return new


def reinitialise(model: nn.Module, cfg) -> None:
    """``training.reinit``: outside the skipped blocks, every ``nn.Linear`` (weight drawn, bias set)
    or every trainable parameter of dimension >= 2 (``tensors: matrices``, in parameter order) is
    drawn from N(0, std) or by ``xavier_normal_``, with torch's global generator (seeded by
    ``training.seed``)."""
    reinit = cfg.reinit
    if reinit is None:
        return
    blocks = set(model.plan.blueprint.blocks)
    unknown = [b for b in reinit.skip if b not in blocks]
    if unknown:
        hint = did_you_mean(unknown[0], sorted(blocks))
        raise ComposerError(f"training.reinit.skip: unknown block '{unknown[0]}'" + (f" (did you mean '{hint}'?)" if hint else ""))
    skipped = tuple(b.replace("/", ".") + "." for b in reinit.skip)

    def draw(weight: torch.Tensor) -> None:
        if reinit.init == "xavier_normal":
            nn.init.xavier_normal_(weight)
        else:
            weight.normal_(0.0, reinit.std)

    with torch.no_grad():
        if reinit.tensors == "matrices":
            for name, p in model.named_parameters():
                if p.requires_grad and p.dim() > 1 and not name.startswith(skipped):
                    draw(p)
            return
        # a sharing use (``share:``) holds its owner's tensors: they are the owner's to draw (or skip), once
        owners: dict[int, str] = {}
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear):
                owners.setdefault(id(module.weight), name)  # the owner comes first: shared uses are built after
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear) and owners[id(module.weight)] == name and not (name + ".").startswith(skipped):
                draw(module.weight)
                if module.bias is not None:
                    module.bias.fill_(reinit.bias or 0.0)


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
