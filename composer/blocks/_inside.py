"""What is inside a composite block: parts read from the module tree, or from the block.

A block's inside is a list of :class:`InsidePart`. By default it is read generically from
``nn.Module.named_children()``, so any composite block (an MFP, an EMT, a hierarchical
crossmodal fusion, a plug-in) expands without code of its own:

* each named child becomes a part labelled with its class name and parameter count;
* a ``ModuleList``/``Sequential``/``ModuleDict`` of children of one class and size reads ``4 × MulTLayer`` (its
  first element is expanded on the next level, marked ``each``);
* parameter-free leaves from ``torch.nn`` (activations, dropout, identity) are left out;
* the children of a ``Sequential`` are chained by edges (its data flow is known);
* parameters a module owns directly (``nn.Parameter`` attributes) are one part, so the
  parts' counts add up to the block's count.

A block may instead define ``describe_inside(self) -> list`` returning parts (as
:class:`InsidePart` objects or dicts with the same keys); parts may name the parts that
feed them in ``inputs`` to draw the data flow inside the block. See ``docs/render.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Iterable

from torch import nn

from composer.layers.attention import Attention

__all__ = ["InsidePart", "inside_of", "leaf_summary"]


@dataclass(frozen=True)
class InsidePart:
    """One part of a block's inside.

    ``name``: unique among its siblings (a child module's attribute name); ``label``: what
    it is (a class name, ``Linear 300→64``); ``params``: its parameter count (None when
    unknown); ``inputs``: names of sibling parts that feed it (drawn as edges);
    ``parts``: its own inside (drawn as a nested cluster).
    """

    name: str
    label: str
    params: int | None = None
    inputs: tuple[str, ...] = ()
    parts: tuple["InsidePart", ...] = field(default_factory=tuple)


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def leaf_summary(module: nn.Module) -> str:
    """Short description of a common layer: ``Linear 300→64``, ``LSTM 5→16 bi``."""
    name = type(module).__name__
    if isinstance(module, nn.Linear):
        return f"{name} {module.in_features}→{module.out_features}"
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        k = module.kernel_size[0] if len(set(module.kernel_size)) == 1 else "×".join(map(str, module.kernel_size))
        return f"{name} {module.in_channels}→{module.out_channels}, k={k}"
    if isinstance(module, nn.RNNBase):
        extra = (f" ×{module.num_layers}" if module.num_layers > 1 else "") + (" bi" if module.bidirectional else "")
        return f"{name} {module.input_size}→{module.hidden_size}{extra}"
    if isinstance(module, nn.Embedding):
        return f"{name} {module.num_embeddings}×{module.embedding_dim}"
    if isinstance(module, nn.LayerNorm):
        return f"{name} {'×'.join(map(str, module.normalized_shape))}"
    if isinstance(module, (nn.MultiheadAttention, Attention)):
        return f"{name} d={module.embed_dim}, h={module.num_heads}"
    return name


def _hidden(module: nn.Module) -> bool:
    """Parameter-free torch.nn leaves (activations, dropout, identity) add nothing to a figure."""
    return (
        not any(True for _ in module.children())
        and _count(module) == 0
        and type(module).__module__.startswith("torch.nn")
    )


def _as_part(item: Any) -> InsidePart:
    if isinstance(item, InsidePart):
        return item
    if isinstance(item, dict):
        parts = tuple(_as_part(p) for p in item.get("parts", ()))
        return InsidePart(
            str(item["name"]), str(item.get("label", item["name"])), item.get("params"), tuple(item.get("inputs", ())), parts
        )
    raise TypeError(f"describe_inside() must return InsidePart objects or dicts, got {type(item).__name__}")


def _limit(parts: Iterable[InsidePart], depth: int) -> tuple[InsidePart, ...]:
    """Cut nested parts below ``depth`` levels (a block's own description may go deeper)."""
    out = []
    for p in parts:
        nested = _limit(p.parts, depth - 1) if depth > 1 else ()
        out.append(InsidePart(p.name, p.label, p.params, p.inputs, nested))
    return tuple(out)


def _uniform(children: list[tuple[str, nn.Module]]) -> bool:
    """A container of one repeated layer (same class, same size)."""
    return len(children) >= 1 and len({(type(m), _count(m)) for _, m in children}) == 1


def inside_of(module: nn.Module, depth: int = 1) -> tuple[InsidePart, ...]:
    """The parts of ``module`` down to ``depth`` levels (``depth >= 1``)."""
    describe = getattr(module, "describe_inside", None)
    if callable(describe):
        return _limit((_as_part(p) for p in describe()), depth)
    parts: list[InsidePart] = []
    own = [name for name, _ in module.named_parameters(recurse=False)]
    if own:
        n = sum(p.numel() for _, p in module.named_parameters(recurse=False))
        parts.append(InsidePart("(parameters)", ", ".join(own), n))
    for name, child in module.named_children():
        if _hidden(child):
            continue
        parts.append(_child_part(name, child, depth))
    if isinstance(module, nn.Sequential):  # a Sequential is a chain: draw its data flow
        parts = [p if i == 0 else replace(p, inputs=(parts[i - 1].name,)) for i, p in enumerate(parts)]
    return tuple(parts)


def _child_part(name: str, child: nn.Module, depth: int) -> InsidePart:
    grandchildren = [(n, m) for n, m in child.named_children() if not _hidden(m)]
    if isinstance(child, (nn.ModuleList, nn.Sequential, nn.ModuleDict)) and _uniform(grandchildren):
        first = grandchildren[0][1]
        label = f"{len(grandchildren)} × {type(first).__name__}"
        nested = (
            (InsidePart(f"{name} (each)", leaf_summary(first), _count(first), (), inside_of(first, depth - 1)),)
            if depth > 1 and any(True for _ in first.children())
            else ()
        )
        return InsidePart(name, label, _count(child), (), nested)
    label = leaf_summary(child) if not grandchildren else type(child).__name__
    nested = inside_of(child, depth - 1) if depth > 1 and grandchildren else ()
    return InsidePart(name, label, _count(child), (), nested)
