"""The blueprint schema (version 1), validated with Pydantic v2.

The top level is fixed; ``blocks`` and ``losses`` are discriminated unions on ``type``
generated from the registries, so the model class is built on demand by
:func:`blueprint_model` and rebuilt when a new block type is registered.
"""

from __future__ import annotations

import copy
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

import composer.configs  # noqa: F401  (registers the built-in blocks and losses)
from composer.configs._limits import OUTPUTS
from composer.ref import BATCH_REFS
from composer.registry import _UNION_CACHE, block_union, loss_union
from composer.blueprint.expr import REFERENCE
from composer.blueprint.templates import TemplateConfig
from composer.spec import Spec, feature_map, sequence, tokens, vector
from composer.blueprint.training import TrainingConfig

__all__ = [
    "StrictModel",
    "TaskConfig",
    "ModalityConfig",
    "SearchSpaceEntry",
    "ObjectiveConfig",
    "SearchConfig",
    "ReportedResult",
    "BlueprintBase",
    "blueprint_model",
    "RESERVED_IDS",
    "MODULE_ATTRIBUTES",
    "block_id_clash",
]

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED_IDS = {*BATCH_REFS, "main", "aux_losses", "outputs", "forward", "blocks", "losses", "blueprint", "training", "shared_uses", "vars"}

#: The public attributes of the compiled model (a ``torch.nn.Module``) and of a template's module:
#: a block is registered under its id (a template's blocks under each part of ``use/inner``), so
#: one of these names would collide with the module's own attribute when the model is built.
#: Kept here, torch-free, so ``validate`` refuses them; tests/test_blueprint_errors.py checks the
#: list against the installed torch (and transformers, which adds ``smart_apply`` to every module).
#: Names starting with ``_`` are the module machinery's too.
MODULE_ATTRIBUTES = frozenset({
    "T_destination", "add_module", "apply", "bfloat16", "block", "blueprint", "buffers", "call_super_init", "children",
    "compile", "compute_loss", "cpu", "cuda", "double", "dump_patches", "eval", "example_inputs", "extra_repr", "float",
    "forward", "get_buffer", "get_extra_state", "get_parameter", "get_submodule", "half", "ipu", "load_state_dict",
    "modules", "mtia", "named_buffers", "named_children", "named_modules", "named_parameters", "parameter_counts",
    "parameter_summary", "parameters", "plan", "register_backward_hook", "register_buffer", "register_forward_hook",
    "register_forward_pre_hook", "register_full_backward_hook", "register_full_backward_pre_hook",
    "register_load_state_dict_post_hook", "register_load_state_dict_pre_hook", "register_module", "register_parameter",
    "register_state_dict_post_hook", "register_state_dict_pre_hook", "requires_grad_", "save", "set_extra_state",
    "set_submodule", "share_memory", "size", "smart_apply", "state_dict", "to", "to_empty", "train", "training",
    "training_only_prefixes", "type", "xpu", "zero_grad",
})


def block_id_clash(block_id: str) -> str | None:
    """The part of a block id (``use/inner``: each part) that would collide with an attribute of
    the compiled module, or None."""
    for part in str(block_id).split("/"):
        if part in MODULE_ATTRIBUTES or part.startswith("_"):
            return part
    return None


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)  # lr: .inf / nan are refused


class TaskConfig(StrictModel):
    """What the model predicts.

    ``regression``: ``outputs`` real values per sample (labels ``(B,)`` or ``(B, outputs)``).
    ``classification``: one of ``outputs`` classes (labels are class indices).
    ``multilabel``: ``outputs`` independent binary decisions (one-vs-rest, e.g. IEMOCAP emotions).
    """

    kind: Literal["regression", "classification", "multilabel"] = "regression"
    outputs: int = Field(default=1, ge=1, description="Number of regression outputs, classes or labels.")
    classes: list[str] | None = Field(default=None, description="Names of the classes or labels.")
    label_range: tuple[float, float] = Field(
        default=(-3.0, 3.0), description="Range of regression labels (sentiment intensity on MOSI/MOSEI: [-3, 3])."
    )

    _outputs_within_budget = field_validator("outputs")(lambda cls, value: OUTPUTS.check(value))  # COMPOSER_MAX_OUTPUTS

    @model_validator(mode="after")
    def _classes_match(self) -> "TaskConfig":
        if self.classes is not None and len(self.classes) != self.outputs:
            raise ValueError(f"classes lists {len(self.classes)} names but outputs is {self.outputs}")
        if self.kind == "classification" and self.outputs < 2:
            raise ValueError("a classification task needs outputs >= 2 classes")
        if not self.label_range[0] < self.label_range[1]:
            raise ValueError(f"label_range {list(self.label_range)}: the lower bound first (e.g. [-3, 3])")
        return self

    def label_spec(self) -> Spec:
        from composer.spec import labels

        if self.kind == "classification":
            return labels("long")
        if self.kind == "regression" and self.outputs == 1:
            return labels("float")
        return vector(self.outputs)


class ModalityConfig(StrictModel):
    """One input modality.

    ``sequence``: float features ``(B, T, features)``; ``tokens``: token ids ``(B, T)`` for a
    text encoder; ``vector``: ``(B, features)``; ``map``: ``(B, features, *spatial)``.
    ``length`` is the time length used for example and synthetic batches (real batches may
    differ). Modalities that name the same ``time`` symbol are aligned (same length and mask).
    """

    kind: Literal["sequence", "tokens", "vector", "map"] = "sequence"
    features: int | None = Field(default=None, ge=1, description="Feature width (not for tokens).")
    length: int = Field(default=50, ge=1, description="Time steps of example/synthetic batches.")
    vocab: int = Field(default=30522, ge=2, description="Vocabulary size for token inputs.")
    spatial: list[int] = Field(default_factory=list, description="Spatial sizes of a feature map.")
    time: str | None = Field(default=None, description="Time symbol; modalities sharing it are aligned.")

    @model_validator(mode="after")
    def _features_needed(self) -> "ModalityConfig":
        if self.kind != "tokens" and self.features is None:
            raise ValueError(f"a {self.kind} modality needs `features`")
        if self.kind == "tokens" and self.features is not None:
            raise ValueError("token inputs have no `features`; the text encoder sets the width")
        if self.kind == "map" and not self.spatial:
            raise ValueError("a map modality needs `spatial` sizes, e.g. [7, 7]")
        return self

    def time_symbol(self, name: str) -> str:
        return self.time or f"T_{name}"

    def spec(self, name: str) -> Spec:
        if self.kind == "tokens":
            return tokens(self.time_symbol(name))
        if self.kind == "sequence":
            return sequence(self.time_symbol(name), self.features)
        if self.kind == "vector":
            return vector(self.features)
        return feature_map(self.features, *self.spatial)


class SearchSpaceEntry(StrictModel):
    """One searchable field: exactly one of ``choice``, ``int`` or ``float``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    choice: list[Any] | None = None
    int_range: tuple[int | str, int | str] | None = Field(
        default=None, alias="int", description="[low, high]; a bound may be an expression of sampled values, e.g. \"${vars.experts}\"."
    )
    float_range: tuple[float | str, float | str] | None = Field(default=None, alias="float")
    log: bool = False
    step: float | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "SearchSpaceEntry":
        given = [k for k in ("choice", "int_range", "float_range") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of `choice: [...]`, `int: [low, high]`, `float: [low, high]`")
        bounds = self.int_range or self.float_range
        if bounds is not None:
            for b in bounds:
                if isinstance(b, str) and not REFERENCE.fullmatch(b.strip()):
                    raise ValueError(f"bound {b!r}: a bound is a number or one ${{expression}}")
            if not any(isinstance(b, str) for b in bounds) and bounds[0] > bounds[1]:
                raise ValueError(f"low {bounds[0]} is above high {bounds[1]}")
        if self.choice is not None and not self.choice:
            raise ValueError("`choice` needs at least one value")
        return self


#: Objectives measured on the built model, before (or instead of) training.
MODEL_METRICS = ("params", "macs", "train_step_ms")


class ObjectiveConfig(StrictModel):
    metric: str = Field(
        default="loss",
        description=(
            "A validation metric (mae, corr, acc2_nonzero, f1_weighted, ...) or a model-size figure measured before "
            "training: params (model parameters), macs (per sample), train_step_ms (one training step at the batch size)."
        ),
    )
    split: Literal["train", "valid", "test"] = "valid"
    direction: Literal["minimize", "maximize"] = "minimize"

    @property
    def is_model_metric(self) -> bool:
        return self.metric in MODEL_METRICS

    @property
    def label(self) -> str:
        return self.metric if self.is_model_metric else f"{self.split}_{self.metric}"


class SearchConfig(StrictModel):
    """Architecture and hyper-parameter search with Optuna; keys of ``space`` are blueprint paths."""

    objective: ObjectiveConfig | list[ObjectiveConfig] = Field(
        default_factory=ObjectiveConfig,
        description="One objective, or a list for a multi-objective search (a Pareto front of blueprints).",
    )
    space: dict[str, SearchSpaceEntry] = Field(default_factory=dict)
    seeds: int = Field(default=1, ge=1, le=100, description="Seeds per configuration; the objective is their mean (std kept as a trial attribute).")
    limits: dict[Literal["params", "macs", "train_step_ms"], float] = Field(
        default_factory=dict,
        description="Upper bounds on model-size figures, checked before training: a configuration above one is pruned untrained.",
    )
    trials: int = Field(default=20, ge=1)
    sampler: Literal["tpe", "random", "grid", "nsga2"] = "tpe"
    pruner: Literal["median", "none"] = "median"
    epochs: int | None = Field(default=None, ge=1, description="Epochs per trial (default: training.epochs).")
    constraints: list[str] = Field(
        default_factory=list,
        description="Boolean expressions over sampled values (e.g. 'blocks.moe.top_k <= blocks.moe.experts'); a trial breaking one is pruned with its reason.",
    )
    heartbeat: int = Field(
        default=10, ge=1, le=3600,
        description="Seconds between a worker's heartbeats (SQL storages); a trial silent for 3 heartbeats is failed and retried once.",
    )

    @property
    def objectives(self) -> list[ObjectiveConfig]:
        return self.objective if isinstance(self.objective, list) else [self.objective]

    @model_validator(mode="after")
    def _objectives_ok(self) -> "SearchConfig":
        if isinstance(self.objective, list):
            if not self.objective:
                raise ValueError("objective: give at least one")
            labels = [o.label for o in self.objective]
            if len(set(labels)) != len(labels):
                raise ValueError(f"objective: {labels} repeats an objective")
        return self


class ReportedResult(StrictModel):
    """Numbers a paper reports for this blueprint's experiment, printed beside Composer's own by
    ``composer reproduce`` (metric names as Composer computes them: mae, corr, acc2_nonzero,
    f1_nonzero, acc2_haszero, f1_haszero, acc7; for the robustness protocols ``auilc_<metric>``
    or ``mean_<metric>`` over the rates)."""

    source: str = Field(description="Where the numbers are printed: paper, table and page, e.g. 'Sun et al. 2023, Table 2, p. 7'.")
    dataset: str = Field(description="The dataset (and setting) of the numbers, e.g. 'CMU-MOSI, unaligned'.")
    protocol: Literal["standard", "per_rate", "lnln"] = Field(
        default="standard",
        description="standard: train per seed, test on clean inputs; per_rate: one model per missing rate (EMT-DLFR); lnln: one model, tested at rates 0-0.9 (LNLN).",
    )
    metrics: dict[str, float] = Field(min_length=1, description="Metric name -> reported value (percentages as printed, e.g. 84.5).")
    rates: list[Annotated[float, Field(ge=0.0, le=1.0)]] | None = Field(
        default=None, description="per_rate / lnln: the missing rates the paper's numbers cover (default: the protocol's, 0-1 or 0-0.9 by 0.1)."
    )
    seeds: list[int] | None = Field(
        default=None,
        min_length=1,
        description="The seeds the reported numbers average over (e.g. MMSA's 1111-1115); composer reproduce / robustness train these by default.",
    )
    note: str = Field(default="", description="What the paper's number means where it is not obvious (e.g. which Acc-2).")

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int] | None) -> list[int] | None:
        if seeds is not None and len(set(seeds)) != len(seeds):
            raise ValueError(f"{seeds} repeat a seed: the reported numbers average over distinct seeds")
        return seeds


class BlueprintBase(StrictModel):
    blueprint: Literal[1] = Field(description="Blueprint language version.")
    name: str = Field(description="Model name, used for run folders.")
    description: str = ""
    task: TaskConfig = Field(default_factory=TaskConfig)
    modalities: dict[str, ModalityConfig] = Field(min_length=1)
    outputs: dict[str, str] = Field(
        default_factory=dict,
        description="Named outputs; `prediction` is what losses and metrics use (default: the one block nothing consumes).",
    )
    vars: dict[str, Any] = Field(
        default_factory=dict,
        description="Variables, referenced anywhere as ${name} (or ${2 * name}); --set vars.NAME=... and search reach them.",
    )
    aux_loss_weight: float = Field(default=1.0, ge=0.0, description="Multiplier of the blocks' auxiliary losses.")
    aux_loss_views: list[str] = Field(
        default_factory=lambda: ["main"],
        min_length=1,
        description="Views whose forward passes contribute the blocks' auxiliary losses (e.g. MoE balance); default: main only.",
    )
    loss_groups: dict[str, float] = Field(
        default_factory=dict,
        description="Named weights; a loss with `group: NAME` is scaled by it (on top of its own weight).",
    )
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    search: SearchConfig | None = None
    reported: list[ReportedResult] = Field(
        default_factory=list, description="The paper's reported numbers for this experiment (composer reproduce prints them beside its own)."
    )
    templates: dict[str, TemplateConfig] = Field(
        default_factory=dict,
        description="Named, parameterised sub-graphs used like blocks (`type: <template>`); expanded when the blueprint is loaded.",
    )
    imports: list[str] = Field(
        default_factory=list, description="Files whose `templates:` this blueprint uses (paths relative to this file)."
    )
    plugins: list[str] = Field(
        default_factory=list,
        description="Python modules that register extra blocks; imported only with --allow-plugins.",
    )
    datasets: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description=(
            "Per-dataset settings: dataset name -> {blueprint path: value} (paths as --set takes them), applied like "
            "--set when the dataset is chosen (--dataset NAME or `dataset: NAME`)."
        ),
    )
    dataset: str | None = Field(
        default=None,
        description="The dataset whose `datasets:` settings were applied (recorded in run folders and saved blueprints).",
    )

    @field_validator("vars")
    @classmethod
    def _vars_ok(cls, v: dict) -> dict:
        for key, value in v.items():
            if not NAME_RE.match(str(key)):
                raise ValueError(f"'{key}' cannot name a variable (letters, digits and '_')")
            items = value if isinstance(value, list) else [value]
            if not all(isinstance(x, (int, float, str, bool)) for x in items):
                raise ValueError(f"variable '{key}' must be a number, string, boolean or a list of them")
        return v

    @field_validator("loss_groups")
    @classmethod
    def _groups_ok(cls, v: dict) -> dict:
        for key, weight in v.items():
            if not NAME_RE.match(str(key)):
                raise ValueError(f"'{key}' cannot name a loss group (letters, digits and '_')")
            if weight < 0:
                raise ValueError(f"loss group '{key}' has a negative weight {weight}")
        return v

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not re.match(r"^[A-Za-z0-9_.-]+$", v):
            raise ValueError("use letters, digits, '_', '-' and '.' only")
        return v

    @field_validator("modalities")
    @classmethod
    def _modality_names(cls, v: dict) -> dict:
        lengths: dict[str, tuple[str, int]] = {}
        for key, m in v.items():
            if not NAME_RE.match(key) or key in RESERVED_IDS:
                raise ValueError(f"'{key}' cannot name a modality (letters, digits, '_'; not a reserved word)")
            if m.kind in ("sequence", "tokens"):
                symbol = m.time_symbol(key)
                first = lengths.setdefault(symbol, (key, m.length))
                if first[1] != m.length:
                    raise ValueError(
                        f"'{key}' and '{first[0]}' share time '{symbol}' (aligned) but have lengths {m.length} and {first[1]}"
                    )
        return v

    # -- convenience -------------------------------------------------------------
    def input_specs(self) -> dict[str, Spec]:
        return {name: m.spec(name) for name, m in self.modalities.items()}

    def to_data(self) -> dict:
        """Plain data of the validated blueprint (templates expanded) that reloads to an equal one."""
        return self.model_dump(mode="json", by_alias=True, exclude_defaults=False)

    def source_data(self) -> dict:
        """The blueprint as written, to save, override and reload: for a blueprint with templates
        the templates and their uses (imported ones written in), else :meth:`to_data`."""
        return self.model_dump(mode="json", by_alias=True, exclude={"templates", "imports"})


def blueprint_model() -> type[BlueprintBase]:
    """The Blueprint model class with the current registries' unions."""
    key = "blueprint-model"
    if key not in _UNION_CACHE:
        _UNION_CACHE[key] = create_model(
            "Blueprint",
            __base__=BlueprintBase,
            blocks=(dict[str, block_union()], Field(min_length=1)),
            losses=(list[loss_union()], Field(default_factory=list)),
        )
    return _UNION_CACHE[key]


def json_schema_text() -> str:
    """The blueprint JSON Schema (validation mode, YAML spellings such as ``in``), as text."""
    import json

    schema = blueprint_model().model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Composer blueprint (version 1)"
    return json.dumps(schema, indent=2, sort_keys=False) + "\n"
