"""Helpers for testing blocks: random tensors from specs and a one-call block check.

``check_block(type_name, fields, inputs)`` validates the config, infers the output specs,
builds the module, runs forward and backward on random inputs (with padding masks for
symbolic time axes), and asserts every output matches its inferred spec. The registry-wide
test runs it on every block's ``examples()``; block authors can call it directly.
"""

from __future__ import annotations

from typing import Any

import torch
import yaml

from composer.blocks._base import Block, BlockConfig, Context
from composer.registry import block_adapter, get_block
from composer.spec import Spec

__all__ = [
    "SIZES", "concrete_shape", "random_tensor", "random_inputs", "make_config", "check_block", "config_round_trip",
    "check_padding_invariance", "check_content_sensitivity", "padded_batch", "grow_padding", "HostReads", "HOST_READS",
]

SIZES = {"B": 3}
DEFAULT_TIME = 6


def concrete_shape(spec: Spec, sizes: dict[str, int]) -> tuple[int, ...]:
    """Shape with symbols bound from ``sizes``; unbound symbols get a default, recorded in ``sizes``."""
    for key, value in SIZES.items():
        sizes.setdefault(key, value)
    return tuple(d if isinstance(d, int) else sizes.setdefault(d, DEFAULT_TIME) for d in spec.shape)


def random_tensor(spec: Spec, sizes: dict[str, int], generator: torch.Generator | None = None) -> torch.Tensor:
    shape = concrete_shape(spec, sizes)
    if spec.dtype == "long":
        x = torch.randint(5, 100, shape, generator=generator)
        if spec.kind == "tokens":
            x[:, 0] = 101
        return x
    if spec.dtype == "bool":
        return torch.rand(shape, generator=generator) > 0.5
    return torch.randn(shape, generator=generator)


def random_inputs(inputs: dict[str, Spec], sizes: dict[str, int] | None = None, seed: int = 0) -> tuple[dict[str, torch.Tensor], Context, dict[str, int]]:
    """Random tensors for input specs, a Context with a padding mask per symbolic time axis."""
    sizes = {**SIZES, **(sizes or {})}
    gen = torch.Generator().manual_seed(seed)
    tensors = {port: random_tensor(spec, sizes, gen) for port, spec in inputs.items()}
    masks = {}
    for spec in inputs.values():
        if spec.kind in ("sequence", "tokens") and isinstance(spec.time, str) and spec.time not in masks:
            T = sizes[spec.time]
            lengths = torch.randint(max(1, T // 2), T + 1, (sizes["B"],), generator=gen)
            lengths[0] = T
            masks[spec.time] = torch.arange(T)[None, :] < lengths[:, None]
    return tensors, Context(masks=masks, batch={}), sizes


def make_config(type_name: str, fields: dict[str, Any], ports: list[str]) -> BlockConfig:
    if ports == ["in"]:
        ref: Any = "x_in"
    elif all(p.isdigit() for p in ports):
        ref = [f"x_{p}" for p in ports]
    else:
        ref = {p: f"x_{p}" for p in ports}
    return block_adapter().validate_python({"type": type_name, "in": ref, **fields})


def config_round_trip(config: BlockConfig) -> BlockConfig:
    """Dump a config to YAML text and validate it back."""
    text = yaml.safe_dump(config.model_dump(mode="json", by_alias=True))
    return block_adapter().validate_python(yaml.safe_load(text))


def check_block(type_name: str, fields: dict[str, Any], inputs: dict[str, Spec], *, seed: int = 0, backward: bool = True) -> tuple[Block, dict[str, torch.Tensor]]:
    """Build, run and check one block; returns the module and its outputs."""
    entry = get_block(type_name)
    config = make_config(type_name, fields, list(inputs))
    assert config_round_trip(config) == config, f"{type_name}: YAML round-trip changed the config"
    torch.manual_seed(seed)
    module = entry.impl(config, inputs)
    out_specs = module.out_specs
    tensors, ctx, sizes = random_inputs(inputs, seed=seed)
    for t in tensors.values():
        if t.is_floating_point():
            t.requires_grad_(True)
    result = module(tensors, ctx)
    outputs = result if isinstance(result, dict) else {"out": result}
    assert set(outputs) >= set(out_specs), f"{type_name}: outputs {sorted(outputs)} lack ports {sorted(out_specs)}"
    for port, spec in out_specs.items():
        value = outputs[port]
        assert isinstance(value, torch.Tensor), f"{type_name}.{port}: expected a tensor, got {type(value)}"
        assert spec.matches(tuple(value.shape), sizes), f"{type_name}.{port}: inferred {spec}, got {tuple(value.shape)} (sizes {sizes})"
    if config.targets_only:  # targets for losses: no gradient flows through them by design
        assert not any(v.requires_grad for v in outputs.values()), f"{type_name}: a targets-only block's outputs carry gradients"
    elif backward:
        total = sum(v.float().sum() for p, v in outputs.items() if p in out_specs and v.is_floating_point())
        params = [p for p in module.parameters() if p.requires_grad]
        if params or any(t.requires_grad for t in tensors.values()):
            total.backward()
            if params:
                assert any(p.grad is not None and torch.isfinite(p.grad).all() for p in params), f"{type_name}: no finite gradient reached the parameters"
    return module, outputs


# -- padding invariance ---------------------------------------------------------------------
EXTRA_PADDING = 3


def _noisy_padding(tensors: dict[str, torch.Tensor], specs: dict[str, Spec], masks: dict[str, torch.Tensor], extra: int, seed: int):
    """The same samples with noise written into every padded step and ``extra`` padded steps
    appended to every masked time axis; returns (tensors, masks)."""
    gen = torch.Generator().manual_seed(seed + 1)
    new_masks = {sym: torch.cat([m, torch.zeros(m.shape[0], extra, dtype=torch.bool)], dim=1) for sym, m in masks.items()}
    out = {}
    for port, x in tensors.items():
        spec = specs[port]
        mask = masks.get(spec.time) if spec.kind in ("sequence", "tokens") and isinstance(spec.time, str) else None
        if mask is None:
            out[port] = x
            continue
        pad_shape = (x.shape[0], extra) + tuple(x.shape[2:])
        if x.is_floating_point():
            grown = torch.cat([x.detach(), torch.zeros(pad_shape)], dim=1)
            noise = torch.randn(grown.shape, generator=gen) * 3.0
        else:
            grown = torch.cat([x, torch.zeros(pad_shape, dtype=x.dtype)], dim=1)
            noise = torch.randint(5, 100, grown.shape, generator=gen)
        pad = ~new_masks[spec.time]
        out[port] = torch.where(pad.reshape(pad.shape + (1,) * (x.dim() - 2)), noise.to(x.dtype), grown)
    return out, new_masks


def _valid_parts(value: torch.Tensor, spec: Spec, ctx: Context) -> list[torch.Tensor]:
    """The parts of an output that must not depend on padding: per sample, its valid prefix of a
    masked time axis, or the whole value otherwise (prefix masks, see docs/masks.md)."""
    mask = ctx.mask(spec)
    if mask is None:
        return [value]
    lengths = mask.sum(1).tolist()
    return [value[b, : int(n)] for b, n in enumerate(lengths)]


def check_padding_invariance(type_name: str, fields: dict[str, Any], inputs: dict[str, Spec], *, seed: int = 0, atol: float = 1e-5) -> int:
    """Eval-mode outputs at valid positions do not change when noise is written into padded steps
    and extra padded steps are appended (lengths unchanged). Returns the number of masked axes
    checked (0: the block has no masked input and nothing was checked)."""
    entry = get_block(type_name)
    config = make_config(type_name, fields, list(inputs))
    torch.manual_seed(seed)
    module = entry.impl(config, inputs).eval()
    tensors, ctx, sizes = random_inputs(inputs, seed=seed)
    if not ctx.masks:
        return 0
    with torch.no_grad():
        plain = module(tensors, ctx)
        noisy_tensors, noisy_masks = _noisy_padding(tensors, inputs, ctx.masks, EXTRA_PADDING, seed)
        noisy_ctx = Context(masks=noisy_masks, batch={})
        noisy = module(noisy_tensors, noisy_ctx)
    plain = plain if isinstance(plain, dict) else {"out": plain}
    noisy = noisy if isinstance(noisy, dict) else {"out": noisy}
    for port, spec in module.out_specs.items():
        if spec.kind == "scalar":
            continue
        a = _valid_parts(plain[port], spec, ctx)
        b = _valid_parts(noisy[port], spec, noisy_ctx)
        for i, (x, y) in enumerate(zip(a, b)):
            assert x.shape == y.shape and torch.allclose(x, y, atol=atol, rtol=1e-4), (
                f"{type_name}.{port}: sample {i} changed with padding (max diff {(x - y).abs().max() if x.shape == y.shape else 'shape'})"
            )
    return len(ctx.masks)


def check_content_sensitivity(type_name: str, fields: dict[str, Any], inputs: dict[str, Spec], *, seed: int = 0) -> list[str]:
    """Every float input port influences the outputs: a non-zero gradient on its valid steps.
    Returns the ports checked."""
    entry = get_block(type_name)
    config = make_config(type_name, fields, list(inputs))
    if config.targets_only:
        return []  # no gradient by design: the block's own tests prove what its outputs depend on
    torch.manual_seed(seed)
    module = entry.impl(config, inputs).eval()
    tensors, ctx, _ = random_inputs(inputs, seed=seed)
    checked = [p for p, t in tensors.items() if t.is_floating_point() and p not in config.shape_only_ports]
    if not checked:
        return []
    for p in checked:
        tensors[p].requires_grad_(True)
    result = module(tensors, ctx)
    outputs = result if isinstance(result, dict) else {"out": result}
    total = sum((v.float() * torch.randn_like(v.float())).sum() for p, v in outputs.items()
                if p in module.out_specs and module.out_specs[p].kind != "scalar" and v.is_floating_point())
    total.backward()
    for p in checked:
        grad = tensors[p].grad
        assert grad is not None, f"{type_name}: input '{p}' does not reach any output"
        parts = _valid_parts(grad, inputs[p], ctx)
        assert all(part.abs().sum() > 0 for part in parts), f"{type_name}: input '{p}' has no influence on the outputs at its valid steps"
    return checked


# -- whole blueprints ---------------------------------------------------------------------
def padded_batch(model, batch_size: int = 3, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """``model.example_inputs`` with real padding on every sequence *and* token modality:
    random lengths (the first sample full, the last at most a third), padded steps zeroed
    (token id 0, mask False)."""
    batch = model.example_inputs(batch_size, seed=seed)
    gen = torch.Generator().manual_seed(seed + 7)
    for name, m in model.blueprint.modalities.items():
        if m.kind != "tokens":
            continue
        T = batch[name].shape[1]
        lengths = torch.randint(max(2, T // 3), T + 1, (batch_size,), generator=gen)
        lengths[0] = T
        lengths[-1] = max(2, T // 3)  # a short sentence too: at most half the padded length
        mask = torch.arange(T)[None] < lengths[:, None]
        batch[name] = batch[name].masked_fill(~mask, 0)
        batch[f"{name}_mask"] = mask
    return batch


def grow_padding(model, batch: dict[str, torch.Tensor], extra: int = EXTRA_PADDING, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """The same samples with noise in every padded step and ``extra`` more padded steps."""
    gen = torch.Generator().manual_seed(seed + 11)
    out = dict(batch)
    for name, m in model.blueprint.modalities.items():
        if m.kind not in ("sequence", "tokens"):
            continue
        x = batch[name]
        T = x.shape[1]
        if f"{name}_mask" in batch:
            valid = batch[f"{name}_mask"]
        elif f"{name}_lengths" in batch:
            valid = torch.arange(T)[None] < batch[f"{name}_lengths"][:, None]
        else:
            continue
        valid = torch.cat([valid, torch.zeros(x.shape[0], extra, dtype=torch.bool)], dim=1)
        pad_shape = (x.shape[0], extra) + tuple(x.shape[2:])
        grown = torch.cat([x, torch.zeros(pad_shape, dtype=x.dtype)], dim=1)
        if x.is_floating_point():
            noise = torch.randn(grown.shape, generator=gen) * 3.0
        else:
            low = 1000 if m.vocab > 2000 else 3  # ordinary (non-special) ids, within the modality's vocabulary
            noise = torch.randint(low, max(low + 1, min(2000, m.vocab)), grown.shape, generator=gen)
        pad = ~valid.reshape(valid.shape + (1,) * (x.dim() - 2))
        out[name] = torch.where(pad, noise.to(x.dtype), grown)
        if f"{name}_mask" in batch:
            out[f"{name}_mask"] = valid
        if f"{name}_segment" in batch:
            seg = batch[f"{name}_segment"]
            out[f"{name}_segment"] = torch.cat([seg, torch.zeros(seg.shape[0], extra, dtype=seg.dtype)], dim=1)
    return out


# -- host reads ---------------------------------------------------------------------------------
#: Tensor methods that copy a value to the host: on CUDA each one waits for the device.
HOST_READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__")


class HostReads:
    """Count the tensor-to-host reads Composer's own code makes while the context is open, by
    ``file:line`` (on CPU too, where they cost nothing, so a CPU test sees the reads that would
    make a CUDA step wait)::

        with HostReads() as reads:
            step()
        assert reads.total == 0, reads.where

    A read is attributed to the code that calls the tensor method; reads inside libraries
    (torch's packing utilities read their CPU metadata, transformers' mask helpers) are
    counted apart in ``library`` — on CUDA, ``torch.cuda.set_sync_debug_mode("error")`` is the
    check that covers them.
    """

    def __init__(self) -> None:
        self.where: dict[str, int] = {}
        self.library: dict[str, int] = {}
        self._saved: dict[str, Any] = {}

    @property
    def total(self) -> int:
        return sum(self.where.values())

    def __enter__(self) -> "HostReads":
        import sys
        from pathlib import Path

        package = str(Path(__file__).resolve().parent)
        for name in HOST_READS:
            original = getattr(torch.Tensor, name)
            self._saved[name] = original

            def counted(tensor, *args, _original=original, _name=name, **kwargs):
                caller = sys._getframe(1)
                where = f"{_name} at {Path(caller.f_code.co_filename).name}:{caller.f_lineno}"
                table = self.where if caller.f_code.co_filename.startswith(package) else self.library
                table[where] = table.get(where, 0) + 1
                return _original(tensor, *args, **kwargs)

            setattr(torch.Tensor, name, counted)
        return self

    def __exit__(self, *exc) -> None:
        for name, original in self._saved.items():
            setattr(torch.Tensor, name, original)
