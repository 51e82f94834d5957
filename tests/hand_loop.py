"""A training loop written by hand in plain PyTorch, to hold the trainer's step rules against:
the trainer's batches in its order, ``backward`` on each, a step every ``grad_accum`` batches,
the epoch's incomplete group as ``training.grad_accum_tail`` says, clipping before each step or
after every backward (``training.grad_clip_at``). Plain SGD without momentum, as the tests set."""

from __future__ import annotations

import torch

import composer
from composer.data import load_data
from composer.train.checkpoint import load_checkpoint, seed_everything
from composer.train.optim import reinitialise
from composer.train.trainer import batch_order


def clip(model, cfg) -> None:
    """``training.grad_clip_value`` then ``training.grad_clip``, as the trainer clips."""
    if cfg.grad_clip_value is not None:
        torch.nn.utils.clip_grad_value_([p for p in model.parameters() if p.requires_grad], cfg.grad_clip_value)
    if cfg.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)


def by_hand(bp, clip_at: str = "step") -> tuple[dict[str, torch.Tensor], list[int]]:
    """The weights after ``bp``'s training by hand, and the optimiser steps of each epoch."""
    cfg = bp.training
    seed_everything(cfg.seed)
    model = composer.compile_blueprint(bp)
    reinitialise(model, cfg)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.0)
    split = load_data(bp, None)["train"]
    steps = []
    for epoch in range(1, cfg.epochs + 1):
        if cfg.grad_accum_tail != "carry":
            opt.zero_grad(set_to_none=True)
        batches = list(split.batches(cfg.batch_size, device="cpu", shuffle=True, generator=batch_order(cfg.seed, epoch)))
        steps.append(0)
        for i, batch in enumerate(batches):
            loss, _ = model.compute_loss({"main": model(batch)}, {"main": batch})
            (loss / cfg.grad_accum if cfg.grad_accum_reduction == "mean" else loss).backward()
            if clip_at == "backward":
                clip(model, cfg)
            if (i + 1) % cfg.grad_accum == 0 or (cfg.grad_accum_tail == "step" and i + 1 == len(batches)):
                if clip_at == "step":
                    clip(model, cfg)
                opt.step()
                opt.zero_grad(set_to_none=True)
                steps[-1] += 1
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, steps


def trained(bp, out, data=None, **kw) -> dict[str, torch.Tensor]:
    """The weights ``composer.train`` leaves in ``out/last.ckpt``."""
    composer.train(bp, data, out=out, progress=False, device="cpu", **kw)
    return load_checkpoint(out / "last.ckpt")["model"]


def close(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6, rtol=0) for k in a)
