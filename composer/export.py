"""Inference export: an ONNX file checked with onnxruntime, and a ``torch.export`` program (.pt2).

A :class:`~composer.graph.model.ComposedModel` takes a batch dict; an exported graph takes
tensors in a fixed order. :func:`input_specs` names that order, one modality after another
in the blueprint's order:

1. the modality itself: ``sequence (B, T, D)`` float32, ``tokens (B, T)`` int64 ids,
   ``vector (B, D)`` or ``map (B, D, *spatial)`` float32;
2. its padding: ``<m>_lengths (B,)`` int64 for a sequence (only the first modality of an
   aligned group, the others share its time axis), ``<m>_mask (B, T)`` bool for tokens
   (True = real token);
3. ``<m>_segment (B, T)`` int64 token type ids, for tokens a text encoder reads them from
   (``segment_key: <m>_segment``).

The output is the ``prediction`` tensor of the blueprint's head. ``B`` is dynamic in every
export; a time axis is dynamic when the model traces with it symbolic, else fixed at the
length of the traced batch (the modality's ``length``). :attr:`ExportResult.dynamic` says
which; the files record it.

Inference is what is exported: the model runs in eval mode (dropout off), and a learned,
unfrozen modality gate (HCT-MG) is fixed at the primary its weights choose now, as
:meth:`~composer.blocks.gating.ModalityGate.freeze` does (inference with these weights picks
the same one). Weights are exported under their state-dict names, except that a name part
that is a Python keyword gets a trailing ``_`` (GLoMo's ``attention.global`` becomes
``attention.global_``; torch 2.13's unlifting of a program writes parts as Python attributes).

The ONNX file's ``metadata_props`` (and the ``.pt2`` archive's extra files) hold the blueprint
(``composer.blueprint``), the inputs with their exported axes (``composer.inputs``, JSON) and
the output's name (``composer.output``). Nothing is
downloaded: ``onnx``, ``onnxruntime`` and ``onnxscript`` are the ``export`` extra
(``pip install fusion-composer[export]``).
"""

from __future__ import annotations

import copy
import json
import keyword
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from composer.errors import ComposerError, DiskFullError, disk_write
from composer.graph.model import ComposedModel

__all__ = [
    "ExportError",
    "ExportResult",
    "InputSpec",
    "InferenceModule",
    "input_specs",
    "sample_inputs",
    "trace",
    "export_onnx",
    "export_program",
    "load_program",
    "verify_onnx",
    "verify_program",
    "verification_batch",
    "data_inputs",
    "TOLERANCE",
]

#: Largest accepted max-abs difference between an exported graph and PyTorch.
TOLERANCE = 1e-4
BATCH = "B"
OUTPUT = "prediction"


class ExportError(ComposerError):
    """A model that cannot be exported, or an export that disagrees with PyTorch."""


@dataclass(frozen=True)
class InputSpec:
    """One positional input of ``modality``: ``role`` is ``values``, ``lengths``, ``mask`` or
    ``segment``; ``axes`` are ``"B"``, a time symbol (``"T_text"``) or a fixed size."""

    name: str
    modality: str
    role: str
    dtype: torch.dtype
    axes: tuple[str | int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "dtype": str(self.dtype).removeprefix("torch."), "axes": list(self.axes)}


def _segment_keys(model: ComposedModel) -> set[str]:
    """Batch keys of token type ids read by the model's enabled text encoders."""
    return {n.config.segment_key for n in model.plan.nodes
            if n.enabled and getattr(n.config, "segment_key", None) is not None}  # bert and mag_bert


def input_specs(model: ComposedModel) -> list[InputSpec]:
    """The exported graph's inputs, in order (see the module docstring)."""
    specs: list[InputSpec] = []
    segments = _segment_keys(model)
    timed: set[str] = set()
    for name, m in model.blueprint.modalities.items():
        time = m.time_symbol(name)
        if m.kind == "tokens":
            specs += [InputSpec(name, name, "values", torch.long, (BATCH, time)), InputSpec(f"{name}_mask", name, "mask", torch.bool, (BATCH, time))]
            if f"{name}_segment" in segments:
                specs.append(InputSpec(f"{name}_segment", name, "segment", torch.long, (BATCH, time)))
                segments.discard(f"{name}_segment")
            continue
        axes = tuple(BATCH if d == "B" else d for d in m.spec(name).shape)
        specs.append(InputSpec(name, name, "values", torch.float32, axes))
        if m.kind == "sequence" and time not in timed:
            timed.add(time)
            specs.append(InputSpec(f"{name}_lengths", name, "lengths", torch.long, (BATCH,)))
    if segments:
        raise ExportError(f"the text encoder reads {sorted(segments)}; export supports segment ids named <tokens modality>_segment only")
    return specs


def sample_inputs(model: ComposedModel, batch_size: int = 2, *, times: dict[str, int] | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random, padded batch of the exported inputs: every sample but the first is shorter than
    ``T`` (lengths drawn in ``[T/2, T]``), padded token ids are 0 and their mask False.
    ``times`` sets a time symbol's length (default: the modality's ``length``)."""
    gen = torch.Generator().manual_seed(seed)
    sizes = {m.time_symbol(n): m.length for n, m in model.blueprint.modalities.items()} | dict(times or {})
    lengths: dict[str, torch.Tensor] = {}
    for symbol, steps in sizes.items():
        lens = torch.randint(max(1, steps // 2), steps + 1, (batch_size,), generator=gen)
        lens[0] = steps
        lengths[symbol] = lens
    batch: dict[str, torch.Tensor] = {}
    modalities = model.blueprint.modalities
    for spec in input_specs(model):
        m = modalities[spec.modality]
        valid = lengths[m.time_symbol(spec.modality)]  # (B,)
        shape = tuple(batch_size if a == BATCH else (sizes[a] if isinstance(a, str) else a) for a in spec.axes)
        if spec.role == "lengths":
            batch[spec.name] = valid
        elif spec.role == "mask":
            batch[spec.name] = torch.arange(shape[1])[None, :] < valid[:, None]
        elif spec.role == "segment":
            batch[spec.name] = torch.zeros(shape, dtype=torch.long)
        elif m.kind == "tokens":  # ids: a [CLS]-like first id, 0 on padding
            ids = torch.randint(min(3, m.vocab - 1), m.vocab, shape, generator=gen)
            ids[:, 0] = 101 if m.vocab > 102 else 1
            batch[spec.name] = ids.masked_fill(torch.arange(shape[1])[None, :] >= valid[:, None], 0)
        else:
            batch[spec.name] = torch.randn(shape, generator=gen)
    return batch


def _safe(name: str) -> str:
    """A state-dict name with every Python-keyword part suffixed by ``_`` (``global`` -> ``global_``)."""
    return ".".join(f"{part}_" if keyword.iskeyword(part) else part for part in name.split("."))


class InferenceModule(nn.Module):
    """``forward(*inputs) -> prediction``: the model on positional tensors in :func:`input_specs` order.

    It holds an eval-mode copy of the model (learned gates fixed, see the module docstring);
    the copy's parameters and buffers live under ``weights`` with keyword-safe names and are
    swapped into the copy on each call (``torch.func.functional_call``), so a traced
    program's weight names never hold a Python keyword.
    """

    def __init__(self, model: ComposedModel):
        super().__init__()
        from composer.blocks.gating import ModalityGate

        inner = copy.deepcopy(model).eval()
        for module in inner.modules():
            if isinstance(module, ModalityGate):
                module.freeze()
        self.specs = input_specs(inner)
        self.names = [s.name for s in self.specs]
        object.__setattr__(self, "_model", inner)  # not a submodule: its weights are the ones below
        self.weights = nn.Module()
        self._tensors: dict[str, str] = {}  # model name -> name under `weights`
        persistent = {name for name in inner.state_dict(keep_vars=True)}
        training_only = inner.training_only_prefixes()
        for name, tensor in [*inner.named_parameters(), *inner.named_buffers()]:
            if name.startswith(training_only):  # loss networks (DLFR's decoders, ...) and training-only blocks only train
                continue
            *path, leaf = _safe(name).split(".")
            holder = self.weights
            for part in path:
                if part not in holder._modules:
                    holder.add_module(part, nn.Module())
                holder = holder._modules[part]
            if isinstance(tensor, nn.Parameter):
                holder.register_parameter(leaf, tensor)
            else:
                holder.register_buffer(leaf, tensor, persistent=name in persistent)
            self._tensors[name] = _safe(name)

    @property
    def model(self) -> ComposedModel:
        return self._model

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if len(inputs) != len(self.names):
            raise ExportError(f"expected {len(self.names)} inputs ({', '.join(self.names)}), got {len(inputs)}")
        held = dict(self.weights.named_parameters()) | dict(self.weights.named_buffers())
        weights = {name: held[safe] for name, safe in self._tensors.items()}
        out = torch.func.functional_call(self._model, weights, (dict(zip(self.names, inputs)),))
        return out[OUTPUT]


@dataclass
class ExportResult:
    """A traced inference program: its inputs, the axes left dynamic (``{input: {axis: name}}``,
    names ``B`` and time symbols), the sizes of the fixed ones, the files written from it and
    the verification's max-abs differences per file kind."""

    inputs: list[InputSpec]
    program: Any  # torch.export.ExportedProgram
    dynamic: dict[str, dict[int, str]] = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # the traced batch's shapes
    symbolic_time: bool = False  # time axes traced as symbols (some may have come out fixed)
    files: dict[str, Path] = field(default_factory=dict)
    max_abs_diff: dict[str, float] = field(default_factory=dict)

    def axes(self, name: str) -> list[str | int]:
        """An input's axes: the name of a dynamic one, the size of a fixed one."""
        dims = self.dynamic.get(name, {})
        return [dims.get(i, size) for i, size in enumerate(self.shapes[name])]

    def describe(self) -> list[str]:
        """One ``text_mask  bool  [B, T_text]`` line per input."""
        return [f"{s.name}  {str(s.dtype).removeprefix('torch.')}  [{', '.join(map(str, self.axes(s.name)))}]" for s in self.inputs]

    def metadata(self, model: ComposedModel) -> dict[str, str]:
        """What the files carry: the blueprint, the inputs (with their exported axes), the output."""
        from composer.blueprint.load import dump_blueprint

        inputs = [{**s.to_dict(), "exported": self.axes(s.name)} for s in self.inputs]
        return {"composer.blueprint": dump_blueprint(model.blueprint), "composer.inputs": json.dumps(inputs), "composer.output": OUTPUT}


def trace(model: ComposedModel, batch_size: int = 2, *, dynamic_time: bool = True, seed: int = 0) -> ExportResult:
    """``torch.export.export`` of :class:`InferenceModule` on a padded :func:`sample_inputs` batch.

    The batch axis is dynamic. With ``dynamic_time`` every time axis is traced symbolic
    (``Dim.AUTO``); one the model fixes (a loop over steps, a recurrent kernel, a table built
    for the length) comes out as a guard ``T == length`` and is reported fixed. Raises
    :class:`ExportError` when the model does not trace."""
    from torch.export import Dim

    if batch_size < 2:
        raise ExportError("export traces with a batch of 2 or more (a size of 1 would be fixed into the graph)")
    module = InferenceModule(model)
    batch = sample_inputs(module.model, batch_size, seed=seed)
    args = tuple(batch[n] for n in module.names)
    with torch.no_grad():
        module(*args)  # eager once first: shape-keyed caches hold real tensors before tracing
    attempts = (True, False) if dynamic_time else (False,)
    for symbolic_time in attempts:
        shapes = tuple({i: Dim.AUTO if a == BATCH or (symbolic_time and isinstance(a, str)) else Dim.STATIC
                        for i, a in enumerate(s.axes)} for s in module.specs)
        try:
            program = torch.export.export(module, args, dynamic_shapes=(shapes,))  # forward(*inputs): one varargs entry
            break
        except Exception as exc:  # torch raises many kinds of tracing errors
            if symbolic_time is attempts[-1]:
                raise ExportError(f"torch.export could not trace {model.blueprint.name}: {type(exc).__name__}: {_first_line(exc)}") from None
    result = ExportResult(module.specs, program, shapes={n: tuple(t.shape) for n, t in batch.items()}, symbolic_time=symbolic_time)
    result.dynamic = _dynamic_axes(result)
    if any(result.dynamic.get(s.name, {}).get(0) != BATCH for s in module.specs):
        raise ExportError(f"{model.blueprint.name}: the batch axis does not stay dynamic in the traced program")
    return result


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


def _placeholders(result: ExportResult) -> dict[str, Any]:
    """Input name -> the program's placeholder node."""
    nodes = {n.name: n for n in result.program.graph.nodes if n.op == "placeholder"}
    return {s.name: nodes[p] for s, p in zip(result.inputs, result.program.graph_signature.user_inputs)}


def _dynamic_axes(result: ExportResult) -> dict[str, dict[int, str]]:
    """``{input: {axis: name}}`` for the named axes the program keeps symbolic; a time symbol
    counts only when it is symbolic at every input that has it (aligned modalities share one)."""
    sizes: dict[str, list[Any]] = {}
    for spec, node in zip(result.inputs, _placeholders(result).values()):
        for a, size in zip(spec.axes, node.meta["val"].shape):
            if isinstance(a, str):
                sizes.setdefault(a, []).append(size)
    free = {a for a, found in sizes.items() if all(not str(z).isdigit() for z in found)}  # a fixed SymInt prints as its value
    return {s.name: {i: a for i, a in enumerate(s.axes) if a in free} for s in result.inputs if any(a in free for a in s.axes)}


def _symbol_names(result: ExportResult) -> dict[str, str]:
    """Program symbols (``s17``) -> axis names (``B``, ``T_text``)."""
    names = {}
    for name, node in _placeholders(result).items():
        for i, axis in result.dynamic.get(name, {}).items():
            names[str(node.meta["val"].shape[i])] = axis
    return names


def export_onnx(model: ComposedModel, path: str | Path, batch_size: int = 2, *, result: ExportResult | None = None,
                dynamic_time: bool = True, optimize: bool = True, opset: int | None = None) -> ExportResult:
    """Write ``model``'s inference graph to an ONNX file with torch's dynamo exporter, from the
    traced program (``result``: a :func:`trace` to reuse). Inputs are named as in
    :func:`input_specs`, the output ``prediction``; a dynamic axis carries its name (``B``,
    ``T_text``), a fixed one its size (onnxruntime refuses another). ``optimize``: onnxscript's
    graph optimiser (the default; off exports faster)."""
    _require("onnx", "onnxscript")
    import onnx_ir as ir

    result = result or trace(model, batch_size, dynamic_time=dynamic_time)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    quiet = logging.getLogger("torch.onnx._internal.exporter._registration")  # "torchvision is not installed"
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        onnx_program = torch.onnx.export(result.program, (), input_names=[s.name for s in result.inputs], output_names=[OUTPUT],
                                         opset_version=opset, dynamo=True, optimize=optimize, verbose=False)
    except Exception as exc:  # the exporter raises its own error types
        raise ExportError(f"the ONNX exporter failed on {model.blueprint.name}: {type(exc).__name__}: {_first_line(exc)}") from None
    finally:
        quiet.setLevel(level)
    graph = onnx_program.model.graph
    for value in graph.inputs:
        value.shape = ir.Shape(result.axes(value.name))
    symbols = _symbol_names(result)
    for value in graph.outputs:
        if value.shape is not None:
            value.shape = ir.Shape([d if isinstance(d, int) else symbols.get(str(d), str(d)) for d in value.shape])
    onnx_program.model.metadata_props.update(result.metadata(model))
    with disk_write(path, "nothing of this export (the model and its weights are untouched)"):
        onnx_program.save(str(path), external_data=False)
    result.files["onnx"] = path
    return result


def export_program(model: ComposedModel, path: str | Path, batch_size: int = 2, *, result: ExportResult | None = None,
                   dynamic_time: bool = True) -> ExportResult:
    """Save the ``torch.export`` program (``torch.export.save``, a ``.pt2`` archive) with the
    :meth:`ExportResult.metadata` as extra files; :func:`load_program` reads it back.

    torch 2.13 cannot serialise every symbolic size computation (``math.ceil`` of a length, as
    ``padding: same`` convolutions compute, even for a length the trace then fixed): such a
    program is traced again with fixed time axes, and the returned result (not ``result``) says so."""
    result = result or trace(model, batch_size, dynamic_time=dynamic_time)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with disk_write(path, "nothing of this export (the model and its weights are untouched)"):
            torch.export.save(result.program, str(path), extra_files=result.metadata(model))
    except DiskFullError:
        raise
    except Exception as exc:  # torch's SerializeError and friends
        if not result.symbolic_time:
            raise ExportError(f"torch.export.save failed on {model.blueprint.name}: {type(exc).__name__}: {_first_line(exc)}") from None
        result = trace(model, result.shapes[result.inputs[0].name][0], dynamic_time=False)
        torch.export.save(result.program, str(path), extra_files=result.metadata(model))
    result.files["program"] = path
    return result


def load_program(path: str | Path) -> tuple[nn.Module, list[str], dict[str, str]]:
    """A saved program as a callable module (positional inputs), its input names in order, and
    its metadata (``composer.blueprint``, ``composer.inputs``, ``composer.output``)."""
    extra = {k: "" for k in ("composer.blueprint", "composer.inputs", "composer.output")}
    try:
        with warnings.catch_warnings():  # torch 2.13's own pytree deprecation, raised while loading
            warnings.simplefilter("ignore", FutureWarning)
            program = torch.export.load(str(path), extra_files=extra)
    except Exception as exc:  # not a zip, not a program, a newer format
        raise ExportError(f"{path} is not a saved torch.export program: {_first_line(exc)}") from None
    names = [s["name"] for s in json.loads(extra["composer.inputs"] or "[]")]
    return program.module(), names, extra


def _reference(model: ComposedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The eager model's prediction in eval mode (its mode is restored)."""
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(dict(batch))[OUTPUT]
    finally:
        model.train(training)


def verify_onnx(model: ComposedModel, path: str | Path, batch: dict[str, torch.Tensor], *, tolerance: float = TOLERANCE) -> float:
    """Run the ONNX file with onnxruntime on ``batch`` (a dict holding the exported inputs, e.g.
    :func:`sample_inputs`) and compare with the eager model; returns the max abs difference,
    raises :class:`ExportError` above ``tolerance``."""
    _require("onnxruntime")
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    try:
        (got,) = session.run([OUTPUT], {i.name: batch[i.name].numpy() for i in session.get_inputs()})
    except Exception as exc:  # onnxruntime's own error types: wrong shapes, a failing kernel
        raise ExportError(f"onnxruntime could not run {path}: {_first_line(exc)}") from None
    return _compare(torch.from_numpy(got), _reference(model, batch), tolerance, "onnxruntime")


def verify_program(model: ComposedModel, path: str | Path, batch: dict[str, torch.Tensor], *, tolerance: float = TOLERANCE) -> float:
    """Load a saved program (:func:`load_program`), run it on ``batch`` and compare with the eager model."""
    module, names, _ = load_program(path)
    try:
        with torch.no_grad():
            got = module(*(batch[n] for n in names))
    except Exception as exc:  # a guard of the program: a fixed axis given another size
        raise ExportError(f"the program in {path} could not run: {_first_line(exc)}") from None
    return _compare(got, _reference(model, batch), tolerance, "the torch.export program")


def _compare(got: torch.Tensor, want: torch.Tensor, tolerance: float, what: str) -> float:
    if got.shape != want.shape:
        raise ExportError(f"{what} gives a prediction of shape {tuple(got.shape)}, PyTorch {tuple(want.shape)}")
    diff = float((got.float() - want.float()).abs().max()) if want.numel() else 0.0
    if not diff <= tolerance:
        raise ExportError(f"{what} differs from PyTorch by {diff:.2e} (tolerance {tolerance:.0e})")
    return diff


def _require(*packages: str) -> None:
    import importlib.util

    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    if missing:
        raise ExportError(f"ONNX export needs {', '.join(missing)}: pip install 'fusion-composer[export]'")


def verification_batch(model: ComposedModel, result: ExportResult, *, seed: int = 1) -> dict[str, torch.Tensor]:
    """A padded batch unlike the traced one where the program allows: one sample more, and each
    dynamic time axis one step longer (a fixed axis keeps its traced length)."""
    traced = result.shapes[result.inputs[0].name][0]
    times = {}
    for spec in result.inputs:
        for i, axis in result.dynamic.get(spec.name, {}).items():
            if axis != BATCH:
                times[axis] = result.shapes[spec.name][i] + 1
    return sample_inputs(model, traced + 1, times=times, seed=seed)


def data_inputs(model: ComposedModel, split, count: int) -> dict[str, torch.Tensor]:
    """The first ``count`` samples of a data split (a :class:`~composer.data.TensorSplit`) as the
    exported inputs: ``composer export --verify`` checks a run's files on the data it was trained
    on. A sequence without ``<m>_lengths`` in the data is full length, a token modality without
    ``<m>_mask`` is real where its id is not 0, absent segment ids are 0."""
    batch = split.batch(torch.arange(min(count, len(split))))
    out: dict[str, torch.Tensor] = {}
    for spec in input_specs(model):
        values = batch[spec.modality]
        if spec.name in batch and isinstance(batch[spec.name], torch.Tensor):
            out[spec.name] = batch[spec.name].to(spec.dtype)
        elif spec.role == "lengths":
            out[spec.name] = torch.full((values.shape[0],), values.shape[1], dtype=torch.long)
        elif spec.role == "mask":
            out[spec.name] = values != 0
        elif spec.role == "segment":
            out[spec.name] = torch.zeros(values.shape[:2], dtype=torch.long)
        else:
            raise ExportError(f"the data has no '{spec.name}' input for {model.blueprint.name}")
    return out
