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
from composer.blocks._registry import block_adapter, get_block
from composer.graph.spec import Spec

__all__ = ["SIZES", "concrete_shape", "random_tensor", "random_inputs", "make_config", "check_block", "config_round_trip"]

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
    if backward:
        total = sum(v.float().sum() for p, v in outputs.items() if p in out_specs and v.is_floating_point())
        params = [p for p in module.parameters() if p.requires_grad]
        if params or any(t.requires_grad for t in tensors.values()):
            total.backward()
            if params:
                assert any(p.grad is not None and torch.isfinite(p.grad).all() for p in params), f"{type_name}: no finite gradient reached the parameters"
    return module, outputs
