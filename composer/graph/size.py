"""How big a blueprint's model is, known before a single weight is allocated.

:func:`estimate_size` builds every block of a :class:`~composer.graph.plan.Plan` on PyTorch's
``meta`` device (shapes only: no memory, no weight files read) and counts

* ``model_params``: the parameters of the model at inference (shared blocks once);
* ``training_params``: parameters that exist only for training (loss networks such as
  DLFR's projectors, predictors and decoders);
* ``train_bytes``: a floor of training memory, known without PyTorch: every parameter four
  times in float32 (weight, gradient and two Adam moments), the block outputs of one batch of
  ``training.batch_size`` kept for the backward pass, and inside every attention layer its
  ``(B, heads, T_query, T_key)`` float32 weights plus the block's boolean mask
  ``(B, T_query, T_key)``, which grow with the *square* of the sequence length. What blocks
  keep inside them and the other views come on top: the figure to plan with is the traced step
  of :mod:`composer.train.memory` (``composer validate --memory``), which runs after this floor
  has let the blueprint through.

:func:`check_size` refuses a model whose estimate exceeds the memory budget: the
``COMPOSER_MAX_MEMORY`` environment variable (``"8GB"``, ``"512MB"`` or bytes), by default
75% of this machine's physical memory. A plug-in config that does not declare its parameter
shapes is built on PyTorch's ``meta`` device instead (shapes only: no memory, no weight files
read); a block that cannot be built at its sizes is reported as a blueprint problem naming it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from composer.configs._base import Shapes
from composer.configs._limits import TENSORS
from composer.configs._shapes import count
from composer.errors import BlueprintError, ComposerError, Problem

__all__ = [
    "SizeEstimate", "estimate_size", "check_size", "memory_budget", "format_bytes", "weight_mismatches", "share_problem",
    "declared_shapes", "parameter_counts",
]

_UNITS = {"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
BYTES_PER_TRAINED_PARAM = 16  # float32 weight + gradient + two Adam moments


@dataclass(frozen=True)
class SizeEstimate:
    model_params: int
    training_params: int
    activation_bytes: int
    batch_size: int

    @property
    def train_bytes(self) -> int:
        return (self.model_params + self.training_params) * BYTES_PER_TRAINED_PARAM + self.activation_bytes

    def describe_parameters(self) -> str:
        extra = f" + {self.training_params:,} training-only" if self.training_params else ""
        return f"{self.model_params:,} parameters{extra}"

    def describe(self) -> str:
        return (f"{self.describe_parameters()}; training needs at least {format_bytes(self.train_bytes)} at batch {self.batch_size} "
                "(a floor; `composer validate --memory` traces the step)")


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def memory_budget() -> int:
    """Bytes a model may need for training: ``COMPOSER_MAX_MEMORY`` or 75% of physical memory."""
    text = os.environ.get("COMPOSER_MAX_MEMORY")
    if text:
        match = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", text)
        if not match or match.group(2).upper() not in _UNITS:
            raise ComposerError(f"COMPOSER_MAX_MEMORY={text!r}: expected a size such as 8GB, 512MB or a number of bytes")
        return int(float(match.group(1)) * _UNITS[match.group(2).upper()])
    try:
        return int(0.75 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # not a POSIX system
        return 16 * 10**9


def _dim_size(dim, sizes: dict[str, int]) -> int:
    if isinstance(dim, int):
        return dim
    if dim in sizes:
        return sizes[dim]
    base, _, times = dim.rpartition("_x")  # a joined axis such as T_text_x2
    if base in sizes and times.isdigit():
        return sizes[base] * int(times)
    shifted = re.fullmatch(r"(.+)([+-]\d+)", dim)  # a convolved axis such as T_text-4 (conv1d, padding valid)
    if shifted:
        return max(_dim_size(shifted.group(1), sizes) + int(shifted.group(2)), 1)
    return max(sizes.values(), default=1)


#: A parameter that marks one attention layer: ``in_proj_weight`` (MulT, ``nn.MultiheadAttention``),
#: ``query.weight`` (BERT), ``to_q.weight`` (EMT's MPU).
_ATTENTION_PARAM = re.compile(r"(^|\.)(in_proj_weight|query\.weight|to_q\.weight)$")
_HEAD_FIELDS = ("heads", "num_heads", "num_attention_heads")


def _time_sizes(the_plan, batch_size: int) -> dict[str, int]:
    sizes = {"B": batch_size}
    for name, m in the_plan.blueprint.modalities.items():
        if m.kind in ("sequence", "tokens"):
            sizes[m.time_symbol(name)] = m.length
    return sizes


def _attention_bytes(node, shapes: Shapes, sizes: dict[str, int]) -> int:
    """What a block's attention layers keep for the backward pass: per layer the softmax weights
    ``(B, heads, T_query, T_key)`` in float32 (PyTorch's math kernel, the CPU path), and once the
    boolean mask ``(B, T_query, T_key)``. ``T_query`` is the output's time (the target's), ``T_key``
    the longest other input's time (itself for self-attention); layers are counted from the
    parameters (:data:`_ATTENTION_PARAM`), heads read from the config (1 when it names none)."""
    layers = sum(1 for name in shapes if _ATTENTION_PARAM.search(name))
    times = [(spec.time, _dim_size(spec.time, sizes)) for spec in node.in_specs.values() if spec.kind in ("sequence", "tokens")]
    if not layers or not times:
        return 0
    heads = next((h for h in (getattr(node.config, f, None) for f in _HEAD_FIELDS) if isinstance(h, int) and not isinstance(h, bool)), 1)
    out = next((s for s in node.out_specs.values() if s.kind in ("sequence", "tokens")), None)
    query_symbol, query = (out.time, _dim_size(out.time, sizes)) if out is not None else max(times, key=lambda t: t[1])
    keys = [n for symbol, n in times if symbol != query_symbol]
    key = max(keys) if keys else query
    return sizes["B"] * query * key * (layers * heads * 4 + 1)


def _activation_bytes(the_plan, batch_size: int, blocks: dict[str, Shapes] | None = None) -> int:
    """Bytes of one batch's activations kept for backward: every block output, and the attention
    weights of every attention layer (:func:`_attention_bytes`, from the parameter shapes ``blocks``)."""
    sizes = _time_sizes(the_plan, batch_size)
    total = 0
    for node in the_plan.nodes:
        if blocks is not None and node.enabled and node.owner in blocks:
            total += _attention_bytes(node, blocks[node.owner], sizes)
    for key, spec in the_plan.values.items():
        if key in the_plan.inputs:
            continue
        n = 1
        for d in spec.shape:
            n *= _dim_size(d, sizes)
        total += n * 4
    return total


def weight_mismatches(own: Shapes, mine: Shapes) -> list[str]:
    """Weights (name -> shape) a sharing use needs that the owner lacks or holds in another shape,
    as readable lines; empty when the use can run on the owner's tensors."""
    return [f"{k}: {mine.get(k, 'absent')} vs the owner's {own.get(k, 'absent')}" for k in sorted(set(own) | set(mine)) if own.get(k) != mine.get(k)]


def share_problem(node, wrong: list[str]) -> Problem:
    return Problem(("blocks", node.id, "share"), (
        f"cannot share weights with '{node.owner}': on its own inputs this block needs other weights ({'; '.join(wrong[:3])})"
    ))


def _built_shapes(entry, config, specs) -> Shapes:
    """Parameter shapes of a module built on the meta device (for configs that do not declare them)."""
    import torch

    with torch.device("meta"):
        module = entry.impl(config, specs)
    return {name: tuple(p.shape) for name, p in module.named_parameters()}


def declared_shapes(entry, config, specs) -> Shapes:
    """A block's or loss's parameters by name: declared by its config, else read off a meta build."""
    shapes = config.parameter_shapes(specs)
    return _built_shapes(entry, config, specs) if shapes is None else shapes


_BUILD_ERRORS = (RuntimeError, ValueError, OverflowError, TypeError, MemoryError)


def _cannot_build(where: tuple, exc: Exception) -> Problem:
    reason = (str(exc).splitlines() or [""])[0][:200]
    return Problem(where, f"cannot be built at these sizes ({type(exc).__name__}{': ' + reason if reason else ''})")


def _too_many_tensors(where: tuple, n: int, limit: int) -> Problem:
    return Problem(where, f"the model lists more than {limit:,} parameter tensors (at this block); {TENSORS.exceeded(n, limit)}")


def _shapes_of_plan(the_plan) -> tuple[dict[str, Shapes], dict[int, Shapes], list[Problem]]:
    """Parameter shapes of every block that owns a module and of every loss, and the problems."""
    problems: list[Problem] = []
    needed = {n.owner for n in the_plan.nodes if n.enabled}
    blocks: dict[str, Shapes] = {}
    listed, limit = 0, TENSORS.value()  # one block's list is bounded by COMPOSER_MAX_LAYERS; all of them by this
    for node in the_plan.nodes:
        if node.config.share is not None or node.id not in needed:
            continue
        try:
            blocks[node.id] = declared_shapes(node.entry, node.config, node.in_specs)
        except _BUILD_ERRORS as exc:
            problems.append(_cannot_build(("blocks", node.id), exc))
            continue
        listed += len(blocks[node.id])
        if listed > limit:
            return blocks, {}, problems + [_too_many_tensors(("blocks", node.id), listed, limit)]
    for node in the_plan.nodes:  # every sharing use must fit the owner's weights
        if node.config.share is None or not node.enabled or node.owner not in blocks:
            continue
        try:
            wrong = weight_mismatches(blocks[node.owner], declared_shapes(node.entry, node.config, node.in_specs))
        except _BUILD_ERRORS as exc:
            wrong = [f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"]
        if wrong:
            problems.append(share_problem(node, wrong))
    losses: dict[int, Shapes] = {}
    for loss in the_plan.losses:
        try:
            losses[loss.index] = declared_shapes(loss.entry, loss.config, loss.specs)
        except _BUILD_ERRORS as exc:
            problems.append(_cannot_build(("losses", loss.index), exc))
    return blocks, losses, problems


def parameter_counts(the_plan) -> dict[str, int]:
    """Parameters per block id (0 for a sharing use, counted under its owner) and per loss
    with parameters (``losses.<i>``), as :meth:`ComposedModel.parameter_counts` gives them."""
    blocks, losses, problems = _shapes_of_plan(the_plan)
    if problems:
        raise BlueprintError(problems)
    counts = {node.id: count(blocks.get(node.id, {})) for node in the_plan.nodes}
    counts.update({f"losses.{i}": count(shapes) for i, shapes in losses.items() if count(shapes)})
    return counts


def estimate_size(the_plan) -> SizeEstimate:
    """Parameters and training memory of a plan's model, from the configs' parameter shapes."""
    blocks, losses, problems = _shapes_of_plan(the_plan)
    if problems:
        raise BlueprintError(problems)
    inference = the_plan.inference_owners
    model_params = sum(count(shapes) for bid, shapes in blocks.items() if bid in inference)
    # loss networks, and training-only blocks no inference block shares (e.g. MISA's decoders)
    training_params = sum(count(shapes) for shapes in losses.values()) + sum(count(s) for bid, s in blocks.items() if bid not in inference)
    batch = the_plan.blueprint.training.batch_size
    return SizeEstimate(model_params, training_params, _activation_bytes(the_plan, batch, blocks), batch)


def check_size(the_plan, budget: int | None = None) -> SizeEstimate:
    """:func:`estimate_size`, refusing a model above the memory budget with a clear error."""
    estimate = estimate_size(the_plan)
    budget = memory_budget() if budget is None else budget
    if estimate.train_bytes > budget:
        counts = {k: v for k, v in parameter_counts(the_plan).items() if not k.startswith("losses.")}
        largest = max(counts, key=counts.get, default=None)
        if largest is not None and counts[largest] * BYTES_PER_TRAINED_PARAM > budget:  # one block alone is too big: say which
            raise BlueprintError([Problem(("blocks", largest), (
                f"this block alone has {counts[largest]:,} parameters, too large to train here: {estimate.describe()}, "
                f"above the budget of {format_bytes(budget)} (set COMPOSER_MAX_MEMORY to raise it)"
            ))])
        raise BlueprintError([Problem((), (
            f"the model is too large to train here: {estimate.describe()}, above the budget of {format_bytes(budget)} "
            "(set COMPOSER_MAX_MEMORY to raise it, e.g. COMPOSER_MAX_MEMORY=64GB)"
        ))])
    return estimate
