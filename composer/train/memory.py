"""Training memory of one step, traced with fake tensors (issue #26): the figure to plan with.

:func:`trace_training_memory` builds the model on PyTorch's ``meta`` device (no weights read,
no memory), gives it fake storage under :class:`~torch._subclasses.fake_tensor.FakeTensorMode`
and runs one training step exactly as :func:`training_step` runs it for real: every view of
one batch of ``training.batch_size`` samples through the model, the loss, the backward pass and
the optimiser's step, with the optimiser's state already made (Adam's two moments, as from the
second step on). A dispatch mode (:class:`LiveBytes`) counts the bytes of every storage the step
allocates and frees them when the storage dies; the estimate is the peak of those live bytes plus
the batch itself, plus an allowance (:data:`KERNEL_ALLOWANCE`) for what kernels hold outside tensors.
Nothing is allocated: BERT-base at batch 32 traces in about 5 s on 2 cores; recurrent blocks
that PyTorch runs step by step (GRUs) cost one traced operation per step and are the slowest.

What the estimate is of, and what it leaves out:

* every sample at its modality's full ``length`` (the largest batch the blueprint allows; a
  real batch with shorter sequences packs them and needs less);
* PyTorch's CPU kernels in float32 (its fused attention, oneDNN's LSTM), as ``composer train``
  runs them on CPU; a GPU runs others;
* not the data set (the trainer holds it in memory besides: see ``docs/performance.md``), the
  Python interpreter or the libraries' code.

The batch itself is real (small: it is counted apart), and operations on it alone run for real,
so masks, lengths and checks of token ids hold their true values. A value read back to Python
(``.item()``, ``bool(tensor)``) from a fake tensor has no data: it reads as its constant where
PyTorch tracked one, else as 1. A kernel that needs the data itself (packing sequences by
lengths known only as a tensor) cannot be traced, and the trace says so. The traced step is
the one the measurement (``scripts/measure_memory.py``) runs for real, so the two agree by
construction on what runs; they differ by what kernels and the allocator keep besides live
tensors, which :data:`KERNEL_ALLOWANCE` stands for.
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from composer.errors import BlueprintError, ComposerError, Problem
from composer.graph.size import format_bytes, memory_budget

__all__ = ["KERNEL_ALLOWANCE", "FLOOR_MARGIN", "MemoryEstimate", "LiveBytes", "trace_training_memory", "check_training_memory", "check_memory_before_training", "step_batches", "make_optimizers", "prime_optimizers", "training_step"]


#: What PyTorch's CPU kernels and the allocator hold besides live tensors during a step, which no
#: tensor shows: oneDNN's RNN kernels reorder weights and keep scratch of their own, and glibc
#: keeps freed heap pages. An empirical allowance: a quarter of the step's tensor bytes, at most
#: this much. On the small blueprints measured (9 to 70 MB) the gap was 10 to 50% of the tensor
#: bytes and at most 18 MB (docs/performance.md, "Training memory"); beside a model of gigabytes
#: it is next to nothing either way.
KERNEL_ALLOWANCE = 8_000_000


@dataclass(frozen=True)
class MemoryEstimate:
    """One traced training step. ``tensor_bytes``: live tensor bytes at the step's peak
    (parameters, gradients, optimiser state, activations kept for backward, temporaries) plus
    the batch; ``peak_bytes``: that plus an allowance (:data:`KERNEL_ALLOWANCE`), the figure to plan with;
    ``state_bytes``: parameters and optimiser state between steps; ``batch_bytes``: the batch of
    every view; ``reads``: values the step read back to Python (answered without data)."""

    tensor_bytes: int
    state_bytes: int
    batch_bytes: int
    batch_size: int
    reads: int = 0

    @property
    def peak_bytes(self) -> int:
        return self.tensor_bytes + min(KERNEL_ALLOWANCE, self.tensor_bytes // 4)

    @property
    def activation_bytes(self) -> int:
        """What the step's tensors need on top of the parameters and optimiser state."""
        return self.tensor_bytes - self.state_bytes

    def describe(self) -> str:
        return f"training needs about {format_bytes(self.peak_bytes)} at batch {self.batch_size} (peak of one step, estimated)"


class LiveBytes(TorchDispatchMode):
    """Counts the bytes of live tensor storage: each storage an operation returns is added once
    (views share their base's) and subtracted when it is freed; ``peak`` is the most at once."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self.reads = 0
        self._storages: set[int] = set()
        self._backward_pages: dict[int, int] = {}  # an RNN workspace -> the bytes its backward writes besides

    def count_apart(self, tensors: Any) -> None:
        """Storages counted elsewhere (the batch): a view of them adds nothing."""
        self._storages.update(t.untyped_storage()._cdata for t in tree_flatten(tensors)[0] if isinstance(t, torch.Tensor))

    def reset_peak(self) -> None:
        self.peak = self.live

    def _track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key = storage._cdata
        if key in self._storages:
            return
        n = storage.nbytes()
        self._storages.add(key)
        self.live += n
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, key, n)

    def _free(self, key: int, n: int) -> None:
        if key in self._storages:
            self._storages.discard(key)
            self.live -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        if tensors and not any(_is_fake(t) or t.is_meta for t in tensors):
            out = _on_real_data(func, args, kwargs)  # the batch's own small arithmetic (masks, lengths, checks): exact
        elif func is torch.ops.aten._local_scalar_dense.default:  # a value read to Python: no data here
            self.reads += 1
            constant = getattr(args[0], "constant", None)
            return constant.item() if constant is not None else 1
        elif func is torch.ops.aten.mkldnn_rnn_layer_backward.default:
            # the backward writes the rest of its layer's workspace: held while it runs
            written = args[0].new_empty(self._backward_pages.get(args[-1].untyped_storage()._cdata, 0), dtype=torch.uint8)
            self._track(written)
            out = func(*args, **kwargs)
            del written
        else:
            out = func(*args, **kwargs)
        if func is torch.ops.aten.mkldnn_rnn_layer.default and _is_fake(out[3]):
            forward, backward = _rnn_workspace_bytes(args)
            out = (*out[:3], out[3].new_empty(forward))
            self._backward_pages[out[3].untyped_storage()._cdata] = backward
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._track(t)
        return out


def _on_real_data(func, args, kwargs):
    """An operation whose tensors are all real, run for real even inside a fake-tensor trace:
    they are the batch's (its masks, lengths, token ids), small, and values read from them to
    Python (``.item()``) then hold their true values."""
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    with unset_fake_temporarily():
        return func(*args, **kwargs)


def _is_fake(t: torch.Tensor) -> bool:
    """A fake tensor, also inside an ``nn.Parameter`` (whose class hides it)."""
    from torch._subclasses.fake_tensor import is_fake

    return is_fake(t)


_WORKSPACES: dict[tuple, tuple[int, int]] = {}
_PROBE_BATCH = 16  # samples at most, and
_PROBE_BYTES = 64_000_000  # about this much workspace at most, for the real kernel's run
_PAGE = 4096


def _written_bytes(workspace: torch.Tensor) -> int:
    """Bytes of the 4 KiB pages of a byte tensor made by :func:`_unwritten_filled` that the
    kernel wrote: those holding anything but the fill value 255."""
    flat = torch.cat([workspace, workspace.new_full(((-workspace.numel()) % _PAGE,), 255)])
    return int((flat.view(-1, _PAGE) != 255).any(1).sum()) * _PAGE


@contextmanager
def _unwritten_filled():
    """Fresh tensors filled (bytes with 255) instead of holding whatever the allocator reused,
    so the pages a kernel writes can be told from the others (PyTorch's deterministic mode)."""
    import torch.utils.deterministic as deterministic

    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(), deterministic.fill_uninitialized_memory)
    torch.use_deterministic_algorithms(True, warn_only=True)
    deterministic.fill_uninitialized_memory = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        deterministic.fill_uninitialized_memory = before[2]


def _rnn_workspace_bytes(args: tuple) -> tuple[int, int]:
    """The resident bytes of oneDNN's workspace for one RNN layer, which PyTorch's shape-only
    kernel gives as empty: ``(forward, backward)``, the bytes the forward writes and those the
    backward writes besides. oneDNN sizes the workspace for every use (the gates and states of
    each step, the backward's difference states), each section padded, and writes only part of
    it at a time: on CPU the pages written, not the size, take memory. So the real kernel runs
    forward and backward on random data at the layer's shapes (at most :data:`_PROBE_BATCH`
    samples and about :data:`_PROBE_BYTES` of workspace, scaled to the batch) on a workspace filled beforehand, and the pages it changed
    are counted after each; cached per shape."""
    inp, *weights, hx, cx = args[:7]
    batch = inp.shape[1]  # the layer runs time-major: (T, B, D), whatever the module's batch_first
    assert batch == hx.shape[0], f"mkldnn_rnn_layer input {tuple(inp.shape)} vs state {tuple(hx.shape)}"
    flags = tuple(tuple(a) if isinstance(a, list) else a for a in args[7:])
    key = (tuple(inp.shape), *(tuple(t.shape) for t in weights), tuple(hx.shape), tuple(cx.shape), flags)
    if key not in _WORKSPACES:
        from torch._subclasses.fake_tensor import unset_fake_temporarily

        reverse, batch_sizes, mode, hidden, layers, has_biases, bidirectional, batch_first, train = args[7:16]
        gen = torch.Generator().manual_seed(0)

        def probe(b: int) -> tuple[int, int, int]:
            real = [torch.randn((inp.shape[0], b, *inp.shape[2:]), generator=gen)]
            real += [torch.randn(t.shape, generator=gen) * 0.1 for t in weights]
            real += [torch.randn((b, *t.shape[1:]), generator=gen) for t in (hx, cx)]
            out, hy, cy, workspace = torch.ops.aten.mkldnn_rnn_layer.default(*real, *args[7:16])
            forward = _written_bytes(workspace)
            grads = [torch.randn(t.shape, generator=gen) for t in (out, hy, cy)]
            torch.ops.aten.mkldnn_rnn_layer_backward.default(
                *real, out, hy, cy, *grads, reverse, mode, hidden, layers, has_biases, train, bidirectional, batch_sizes, batch_first, workspace)
            return forward, _written_bytes(workspace) - forward, workspace.numel()

        with unset_fake_temporarily(), _unwritten_filled():  # (not under no_grad: the kernel then keeps no workspace)
            b, (forward, backward, size) = 1, probe(1)
            more = min(batch, _PROBE_BATCH, max(1, _PROBE_BYTES // max(size, 1)))
            if more > 1:
                b, (forward, backward, _) = more, probe(more)
        _WORKSPACES[key] = (forward * batch // b, backward * batch // b)
    return _WORKSPACES[key]


def step_batches(model, batch_size: int, seed: int = 0) -> dict[str, dict[str, Any]]:
    """One training batch of ``batch_size`` random samples laid out as Composer's loaders give
    it (:meth:`composer.data.base.TensorSplit.batch`): every sequence at its full length, its
    lengths also as Python ints, the samples' ``index`` in a split of ``batch_size`` samples;
    and every view of it the blueprint trains on (``{"main": batch, view: masked batch, ...}``)."""
    from composer.train.views import make_views

    batch = model.example_inputs(batch_size, seed=seed)
    host = {}
    for key in [k for k in batch if k.endswith("_lengths")]:
        name = key[: -len("_lengths")]
        batch[key] = torch.full_like(batch[key], batch[name].shape[1])
        host[name] = batch[key].tolist()
    for key in [k for k in batch if k.endswith("_mask") and batch[k].dim() == 2]:  # a token modality's
        host.setdefault(key[: -len("_mask")], batch[key].sum(1).tolist())
    batch["host_lengths"] = host
    batch["index"], batch["split_size"] = torch.arange(batch_size), batch_size
    return make_views(batch, model.blueprint, torch.Generator().manual_seed(seed))


def make_optimizers(model) -> list[torch.optim.Optimizer]:
    """The optimisers the trainer makes: the main one and one per ``training.stages`` entry."""
    from composer.train.optim import build_optimizer, build_stage_optimizers

    cfg = model.blueprint.training
    return [build_optimizer(model, cfg), *(build_stage_optimizers(model, cfg).values() if cfg.stages else ())]


def prime_optimizers(model, optimizers: list[torch.optim.Optimizer]) -> None:
    """Make each optimiser's state (Adam's moments) with one step on zero gradients, as it
    stands from the second training step on; the gradients are then dropped."""
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)
    for opt in optimizers:
        opt.step()
    model.zero_grad(set_to_none=True)


def training_step(model, batches: dict[str, dict[str, Any]], optimizers: list[torch.optim.Optimizer]) -> None:
    """The trainer's step on one batch: every view through the model, the loss, backward, the
    optimisers' steps, the gradients dropped."""
    outputs = {view: model(b) for view, b in batches.items()}
    total, _ = model.compute_loss(outputs, batches)
    del outputs
    total.backward()
    del total
    for opt in optimizers:
        opt.step()
    model.zero_grad(set_to_none=True)


def _batch_bytes(batches: dict[str, dict[str, Any]]) -> int:
    seen: dict[int, int] = {}
    for t in tree_flatten(batches)[0]:
        if isinstance(t, torch.Tensor):
            seen[t.untyped_storage()._cdata] = t.untyped_storage().nbytes()
    return sum(seen.values())


def trace_training_memory(checked, batch_size: int | None = None) -> MemoryEstimate:
    """Peak memory of one training step of a checked blueprint's model at ``batch_size``
    (``training.batch_size`` by default), traced with fake tensors: nothing is allocated."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from composer.graph.model import compile_blueprint

    batch_size = batch_size or checked.training.batch_size
    with torch.device("meta"):
        model = compile_blueprint(checked)  # shapes only: no weights read or initialised
    model.train()
    batches = step_batches(model, batch_size)  # real and small: the batch is counted apart
    batch_bytes = _batch_bytes(batches)
    live = LiveBytes()
    live.count_apart(batches)
    try:
        with FakeTensorMode(allow_non_fake_inputs=True), live:
            model.to_empty(device="cpu")
            optimizers = make_optimizers(model)
            prime_optimizers(model, optimizers)
            state = live.live
            live.reset_peak()
            training_step(model, batches, optimizers)
    except (RuntimeError, NotImplementedError) as exc:  # a kernel that needs data (PyTorch's fake-tensor errors are RuntimeErrors)
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise ComposerError(
            f"{checked.name}: one training step cannot be traced with fake tensors ({type(exc).__name__}: {reason}); "
            "no memory estimate beyond the floor `composer validate` prints"
        ) from exc
    return MemoryEstimate(live.peak + batch_bytes, state, batch_bytes, batch_size, live.reads)


def check_training_memory(checked, budget: int | None = None) -> MemoryEstimate:
    """:func:`trace_training_memory`, refusing a step above the memory budget
    (``COMPOSER_MAX_MEMORY``, by default 75% of this machine's memory) with a clear error."""
    budget = memory_budget() if budget is None else budget
    estimate = trace_training_memory(checked)
    if estimate.peak_bytes > budget:
        raise BlueprintError([Problem(("training", "batch_size"), (
            f"the model is too large to train here: {estimate.describe()}, above the budget of {format_bytes(budget)} "
            f"(lower training.batch_size or set COMPOSER_MAX_MEMORY to raise it, e.g. COMPOSER_MAX_MEMORY=64GB)"
        ))])
    return estimate


#: The traced step has measured 1.1 to 9 times the floor ``validate`` prints (docs/performance.md,
#: "Training memory"; 9 for late fusion, whose kernel allowance dominates): a blueprint whose
#: floor times this still fits the budget is not traced.
FLOOR_MARGIN = 20


def check_memory_before_training(checked, log=None, budget: int | None = None) -> MemoryEstimate | None:
    """The trainer's check on CPU: trace one step (:func:`check_training_memory`) when the floor
    leaves any doubt (floor × :data:`FLOOR_MARGIN` above the budget) and refuse a step above the
    budget before any memory is spent; None when the floor settles it. A step that cannot be
    traced is reported through ``log`` and training goes on (the floor already passed)."""
    budget = memory_budget() if budget is None else budget
    if checked.size.train_bytes * FLOOR_MARGIN <= budget:
        return None
    try:
        estimate = check_training_memory(checked, budget)
    except BlueprintError:
        raise
    except ComposerError as exc:
        if log is not None:
            log(f"note: {exc}")
        return None
    if log is not None:
        log(f"memory: {estimate.describe()} (budget {format_bytes(budget)})")
    return estimate

