"""One check, one object: a schema-valid blueprint -> :class:`CheckedBlueprint`.

:func:`check` is the driver behind :func:`~composer.blueprint.load.load_blueprint` and
``composer validate``. It runs every pass over one blueprint and reports every problem at
once, each with its YAML path and ``file:line``. The order (docs/validation.md):

1. schema (Pydantic: types, ranges, unknown keys; done by the loader before this driver)
2. references, shapes, sharing, outputs, losses (:data:`composer.graph.plan.PLAN_PASSES`)
3. search space: keys name fields; objectives name metrics
4. training: monitor, views, optimiser groups, scheduler, data section
5. size: parameters and training memory against ``COMPOSER_MAX_MEMORY``

Whatever ``train``, ``search``, ``evaluate`` or the protocols would refuse about a blueprint
is refused here first; those consumers take the checked object and never plan or check again.
"""

from __future__ import annotations

import copy
from functools import cached_property
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import yaml

from composer.blueprint._yaml import SourceMap
from composer.blueprint.paths import resolve_path, split_path
from composer.blueprint.templates import TemplateUse, expanded_block_path
from composer.errors import BlueprintError, ComposerError, Problem, did_you_mean
from composer.graph.plan import Plan, plan
from composer.graph.size import SizeEstimate, check_size
from composer.metric_names import metric_names
from composer.ref import MAIN_VIEW, SEPARATOR, Ref

__all__ = ["CheckedBlueprint", "check", "BLUEPRINT_PASSES", "SCHEMA_COMMENT", "loss_term_names", "maskable_modalities"]

SCHEMA_COMMENT = "# yaml-language-server: $schema=../docs/blueprint.schema.json"


@dataclass(frozen=True, eq=False)
class CheckedBlueprint:
    """A blueprint that passed every check, with what the checks found.

    ``blueprint``: the schema-valid model (templates expanded); ``plan``: the graph with every
    spec; ``size``: the parameter and memory estimate; ``source_map``: YAML paths -> lines;
    ``template_uses``: what each template use expanded into; ``written``: the data as written
    (templates and their uses) when the blueprint has templates. The blueprint's own fields
    (``name``, ``training``, ``modalities``, ...) read through: ``checked.training.lr``.
    """

    blueprint: Any
    plan: Plan
    size: SizeEstimate
    source_map: SourceMap = field(repr=False)
    template_uses: Mapping[str, TemplateUse] = field(default_factory=dict, repr=False)
    written: dict | None = field(default=None, repr=False)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("blueprint", "plan", "size", "source_map", "template_uses", "written", "_text"):
            raise AttributeError(name)
        return getattr(self.blueprint, name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CheckedBlueprint) and self.blueprint == other.blueprint

    __hash__ = None  # type: ignore[assignment]

    def __deepcopy__(self, memo: dict) -> "CheckedBlueprint":
        return self  # immutable: a copied model shares its checked blueprint

    @property
    def warnings(self) -> list[Problem]:
        """Warnings of the plan (unused blocks, modalities, loss groups), with ``file:line``."""
        return self.plan.warnings

    def to_data(self) -> dict:
        """Plain data of the expanded blueprint that reloads to an equal one."""
        return self.blueprint.to_data()

    def source_data(self) -> dict:
        """The blueprint as written, to save, override and reload: with templates, the templates
        and their uses (imported ones written in); otherwise the expanded data."""
        if self.written is not None:
            return copy.deepcopy(self.written)
        return self.blueprint.model_dump(mode="json", by_alias=True, exclude={"templates", "imports"})

    def text(self) -> str:
        """YAML text that reloads to an equal blueprint (what run folders and weights files keep)."""
        return self._text

    @cached_property
    def _text(self) -> str:  # made once: the check measures it, every checkpoint and weights file stores it
        return SCHEMA_COMMENT + "\n" + yaml.safe_dump(self.source_data(), sort_keys=False, default_flow_style=None, width=100)


# -- the passes after planning: they read the schema-valid blueprint ------------------------
@dataclass
class CheckContext:
    """What the passes after the plan read: the blueprint, its template uses and (when the graph
    passed) its plan."""

    bp: Any
    uses: Mapping[str, TemplateUse]
    plan: Plan | None = None
    size: SizeEstimate | None = None


def loss_term_names(bp) -> list[str]:
    """The name of each loss term as logs show it (``loss/<name>``): its ``name`` or ``<type>_<index>``."""
    return [cfg.name or f"{cfg.type}_{i}" for i, cfg in enumerate(bp.losses)]


def maskable_modalities(bp) -> list[str]:
    """Modalities with a time axis (``sequence`` and ``tokens``): the ones a view can mask."""
    return [n for n, m in bp.modalities.items() if m.kind in ("sequence", "tokens")]


def _run_metrics(ctx: "CheckContext") -> list[str]:
    outputs = ctx.plan.scored_outputs if ctx.plan is not None else ["prediction"]
    return metric_names(ctx.bp.task, loss_term_names(ctx.bp), outputs)


def _unknown(where: tuple, what: str, got: str, known: list[str]) -> Problem:
    hint = did_you_mean(got, known)
    return Problem(where, f"unknown {what} '{got}'" + ("" if hint else f" ({what}s: {', '.join(known) or 'none'})"), hint)


def search_space_pass(ctx: CheckContext) -> list[Problem]:
    """Each search-space key names a field the blueprint has (or a template use's parameter);
    each objective names a metric a run measures (or a model-size figure)."""
    bp = ctx.bp
    if bp.search is None:
        return []
    problems = []
    metrics = _run_metrics(ctx)
    objectives = bp.search.objective if isinstance(bp.search.objective, list) else [bp.search.objective]
    for i, o in enumerate(objectives):
        if not o.is_model_metric and o.metric not in metrics:
            where = ("search", "objective") + ((i,) if isinstance(bp.search.objective, list) else ()) + ("metric",)
            problems.append(_unknown(where, "metric", o.metric, metrics + ["params", "macs", "train_step_ms"]))
    full = bp.to_data()
    for key in bp.search.space:
        try:
            path = expanded_block_path(resolve_path(full, split_path(key), key), dict(ctx.uses), full["blocks"])
        except BlueprintError as exc:
            problems += [Problem(("search", "space", key), p.message, p.suggestion) for p in exc.problems]
            continue
        if path is None:  # a template use's parameter
            continue
        node: Any = full
        missing = None
        for part in path:
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and isinstance(part, int) and part < len(node):
                node = node[part]
            else:
                missing = part
                break
        if missing is None:
            continue
        hint = did_you_mean(str(missing), [str(k) for k in node]) if isinstance(node, dict) else None
        problems.append(Problem(("search", "space", key), f"'{key}' is not a field of this blueprint", hint))
    return problems


def monitor_pass(ctx: CheckContext) -> list[Problem]:
    """``training.monitor``: a metric the run logs, a view the run has."""
    monitor = ctx.bp.training.monitor
    problems = []
    metrics = _run_metrics(ctx)
    if monitor.metric not in metrics:
        problems.append(_unknown(("training", "monitor", "metric"), "metric", monitor.metric, metrics))
    views = [MAIN_VIEW, *ctx.bp.training.views]
    if monitor.view not in views:
        problems.append(_unknown(("training", "monitor", "view"), "view", monitor.view, views))
    return problems


def views_pass(ctx: CheckContext) -> list[Problem]:
    """``training.views``: each view masks modalities with a time axis, with one way of giving rates."""
    ok = maskable_modalities(ctx.bp)
    problems = []
    for name, view in ctx.bp.training.views.items():
        where = ("training", "views", name)
        if view.rates is not None and view.modalities is not None:
            problems.append(Problem(where + ("modalities",), "`rates` names the masked modalities; drop `modalities`"))
        if view.seeds is not None and view.resample != "split":
            problems.append(Problem(where + ("seeds",), "seeds fix a split's masks; they need `resample: split`"))
        for key in ("modalities", "rates", "seeds"):
            for m in getattr(view, key) or []:
                if m not in ok:
                    problems.append(Problem(where + (key,), (
                        f"'{m}' is not a sequence or token modality of the blueprint (maskable: {', '.join(ok) or 'none'})"
                    ), did_you_mean(str(m), ok)))
    return problems


def _group_ids(bp) -> list[str]:
    """Ids a parameter group may name: every block, and every template use (its blocks nest under it)."""
    ids = set(bp.blocks)
    for bid in bp.blocks:
        parts = bid.split(SEPARATOR)
        ids.update(SEPARATOR.join(parts[:i]) for i in range(1, len(parts)))
    return sorted(ids)


def optimiser_groups_pass(ctx: CheckContext) -> list[Problem]:
    """``training.param_groups`` and ``training.reinit.skip`` name blocks; no block is in two groups
    (unless both select by ``params``: the optimiser refuses a parameter they both match)."""
    cfg = ctx.bp.training
    ids = _group_ids(ctx.bp)
    problems = []
    claimed: list[tuple[str, int]] = []
    for i, group in enumerate(cfg.param_groups):
        for j, bid in enumerate(group.blocks):
            where = ("training", "param_groups", i, "blocks", j)
            if bid not in ids:
                problems.append(_unknown(where, "block", bid, ids))
                continue
            clash = next((g for other, g in claimed
                          if (other == bid or bid.startswith(other + SEPARATOR) or other.startswith(bid + SEPARATOR))
                          and (group.params is None or cfg.param_groups[g].params is None)), None)
            if clash is not None:
                problems.append(Problem(where, f"parameters of '{bid}' are already in param_groups[{clash}]; a parameter belongs to one group"))
            claimed.append((bid, i))
    if cfg.reinit is not None:
        blocks = sorted(ctx.bp.blocks)
        for j, bid in enumerate(cfg.reinit.skip):
            if bid not in ctx.bp.blocks:
                problems.append(_unknown(("training", "reinit", "skip", j), "block", bid, blocks))
    return problems


def stages_pass(ctx: CheckContext) -> list[Problem]:
    """``training.stages``: unique names; objectives name losses or loss groups; ``update`` names
    blocks, template uses or losses; no parameters in two stages or in a stage and a param group."""
    bp = ctx.bp
    losses = loss_term_names(bp)
    terms = losses + [g for g in bp.loss_groups if g not in losses]
    owners = _group_ids(bp) + [n for n in losses if n not in bp.blocks]
    problems = []
    seen_names: set[str] = set()
    claimed: dict[str, str] = {}
    grouped = {b for g in bp.training.param_groups for b in g.blocks}
    for i, stage in enumerate(bp.training.stages):
        where = ("training", "stages", i)
        if stage.name in seen_names or stage.name == "main":
            problems.append(Problem(where + ("name",), f"stage name '{stage.name}' is taken ('main' is the main update; names are unique)"))
        seen_names.add(stage.name)
        for j, term in enumerate(stage.objective):
            if term not in terms:
                problems.append(_unknown(where + ("objective", j), "loss or loss group", term, terms))
        for j, owner in enumerate(stage.update):
            if owner not in owners:
                problems.append(_unknown(where + ("update", j), "block or loss", owner, owners))
            elif owner in claimed or owner in grouped:
                other = f"stage '{claimed[owner]}'" if owner in claimed else "a training.param_groups entry"
                problems.append(Problem(where + ("update", j), f"the parameters of '{owner}' are already updated by {other}; a parameter has one optimiser"))
            claimed.setdefault(owner, stage.name)
    return problems


def scheduler_pass(ctx: CheckContext) -> list[Problem]:
    """``training.scheduler``: settings the chosen type does not read are a warning."""
    s = ctx.bp.training.scheduler
    reads = {"cosine": {"warmup_steps"}, "linear_warmup": {"warmup_steps"}, "step": {"step_size", "gamma"},
             "plateau": {"gamma", "patience"}, "none": set()}[s.type]
    return [Problem(("training", "scheduler", name), f"scheduler '{s.type}' does not read `{name}`", severity="warning")
            for name in sorted(s.model_fields_set - {"type"} - reads)]


def data_pass(ctx: CheckContext) -> list[Problem]:
    """``training.data``: a file source names its files; extra labels come from a reader that gives
    them; normalised modalities exist and have features."""
    bp = ctx.bp
    data = bp.training.data
    where = ("training", "data")
    problems = []
    if data.source in ("pickle", "mag_pickle") and not data.path:
        problems.append(Problem(where + ("path",), f"source '{data.source}' reads the file at `path`; give it"))
    if data.source == "csd":
        for m in list(bp.modalities) + ["label"]:
            if m not in data.paths:
                problems.append(Problem(where + ("paths",), f"source 'csd' needs a .csd file for '{m}' under `paths`"))
        for name in data.paths:
            if name not in bp.modalities and name != "label":
                problems.append(_unknown(where + ("paths", name), "modality", name, list(bp.modalities) + ["label"]))
        if data.split is None:
            problems.append(Problem(where + ("split",), "source 'csd' needs `split`: 'cmu_mosi', a JSON split file or the SDK's *_std_folds.py"))
    if data.extra_labels and data.source in ("mag_pickle", "csd"):
        problems.append(Problem(where + ("extra_labels",), (
            f"source '{data.source}' reads one label per sample; extra labels come from a standard-layout pickle "
            "(source: pickle) or the synthetic set"
        )))
    read = {Ref.parse(text).port for cfg in bp.losses for text in cfg.refs().values() if Ref.parse(text).source == "label"}
    for name, key in data.extra_labels.items():
        if name not in read:
            problems.append(Problem(where + ("extra_labels", name), (
                f"no loss reads extra label '{name}' (from '{key}'); a loss reads it as `target: label.{name}`"
            ), severity="warning"))
    if data.source == "synthetic":  # its size is the blueprint's: refused here rather than when train builds it
        from composer.data.budget import Budget, synthetic_bytes  # torch-free

        total = sum(data.samples.values())
        try:
            Budget(source="synthetic data").check(synthetic_bytes(bp, total), f"{total:,} synthetic samples of the modalities (their `length` and `features`)")
        except ComposerError as exc:
            problems.append(Problem(where + ("samples",), str(exc)))
    features = [n for n, m in bp.modalities.items() if m.kind in ("sequence", "vector")]
    for j, name in enumerate(data.normalize):
        if name not in features:
            problems.append(Problem(where + ("normalize", j), f"'{name}' is not a sequence or vector modality of the blueprint (those: {', '.join(features) or 'none'})",
                                    did_you_mean(str(name), features)))
    return problems


def _selected_across_a_start(metric: str, where: tuple, late: dict[str, int], what: str, before: str, compared: str) -> list[Problem]:
    """A metric that selects (``what``: the monitor, a search objective) and ``losses[].from_epoch``:
    ``loss/<name>`` of a term that starts later is refused (``before``: what it lacks); the summed
    ``loss``, whose values before and after a start (``compared``) sum different terms, warns."""
    term = metric.removeprefix("loss/") if metric.startswith("loss/") else None
    if term in late:
        return [Problem(where, (
            f"{what} '{metric}': that term starts at epoch {late[term]} (from_epoch), so {before}; "
            "use a term active from epoch 1 or a task metric"))]
    if metric == "loss":
        return [Problem(where, (
            f"{what} 'loss': the validation `loss` sums the terms active in each epoch, so {compared} before and after the start of "
            f"{', '.join(f'{n} (from_epoch {e})' for n, e in late.items())} are not comparable; "
            "use a task metric or one term (`loss/<name>`)"), severity="warning")]
    return []


def loss_epochs_pass(ctx: CheckContext) -> list[Problem]:
    """``losses[].from_epoch``: epoch 1 trains on some term; a term that starts later cannot be the
    monitored metric (its epochs before have no value); monitoring the summed ``loss`` across a
    term's start, or a start after ``training.epochs``, is a warning (``--set training.epochs=1``
    smoke runs and ``early_stop`` make a start the run never reaches a normal thing)."""
    bp = ctx.bp
    starts = {name: cfg.from_epoch for name, cfg in zip(loss_term_names(bp), bp.losses)}
    late = {name: start for name, start in starts.items() if start > 1}
    if not late:
        return []
    problems = []
    if len(late) == len(starts):
        problems.append(Problem(("losses",), (
            f"every loss starts after epoch 1 (from_epoch: {', '.join(f'{n} {e}' for n, e in late.items())}), so epoch 1 "
            "would train on no term; give one loss `from_epoch: 1`")))
    problems += _selected_across_a_start(bp.training.monitor.metric, ("training", "monitor", "metric"), late, "monitor",
                                         "the epochs before have no validation value to select by", "epochs")
    if bp.search is not None:
        listed = isinstance(bp.search.objective, list)
        for i, objective in enumerate(bp.search.objectives):  # trials are compared at their selected epochs
            problems += _selected_across_a_start(objective.metric, ("search", "objective") + ((i,) if listed else ()) + ("metric",), late,
                                                 "objective", "a trial whose selected epoch comes before has no value for it",
                                                 "trials whose selected epochs fall")
    for i, cfg in enumerate(bp.losses):
        if cfg.from_epoch > bp.training.epochs:
            problems.append(Problem(("losses", i, "from_epoch"), (
                f"from_epoch {cfg.from_epoch} is after training.epochs {bp.training.epochs}: this run never adds the term"), severity="warning"))
    return problems


def size_pass(ctx: CheckContext) -> list[Problem]:
    """Parameters and training memory within the budget (``COMPOSER_MAX_MEMORY``)."""
    try:
        ctx.size = check_size(ctx.plan)
    except BlueprintError as exc:
        return list(exc.problems)
    return []


#: The passes after the plan, in order; ``size`` runs only on a blueprint whose graph passed.
BLUEPRINT_PASSES: tuple[Callable[[CheckContext], list[Problem]], ...] = (
    search_space_pass, monitor_pass, views_pass, optimiser_groups_pass, stages_pass, scheduler_pass, data_pass,
    loss_epochs_pass,
)


def check(bp, smap: SourceMap, uses: Mapping[str, TemplateUse] | None = None, written: dict | None = None) -> CheckedBlueprint:
    """Run every pass on a schema-valid blueprint; return the :class:`CheckedBlueprint` or raise
    one :class:`BlueprintError` with every problem (and warning), each located in the source."""
    ctx = CheckContext(bp, dict(uses or {}))
    problems: list[Problem] = []
    try:
        ctx.plan = plan(bp)
    except BlueprintError as exc:
        problems += exc.problems
    for run in BLUEPRINT_PASSES:
        found = run(ctx)
        problems += [p for p in found if p.severity != "warning"]
        if ctx.plan is not None:
            ctx.plan.warnings.extend(p for p in found if p.severity == "warning")
    if ctx.plan is not None:  # the size depends on the plan only: reported with the training section's problems
        problems += size_pass(ctx)
    if any(p.severity == "error" for p in problems):
        raise BlueprintError([smap.locate(p) for p in problems])
    for w in ctx.plan.warnings:
        smap.locate(w)
    checked = CheckedBlueprint(bp, ctx.plan, ctx.size, smap, ctx.uses, written)
    _saved_copy_fits(checked)
    return checked


def _saved_copy_fits(checked: CheckedBlueprint) -> None:
    """Runs and weights files keep the blueprint as :meth:`CheckedBlueprint.text` writes it (imported
    templates written in, aliases expanded); a copy above the character limit could be trained
    but never evaluated or resumed, so it is refused now."""
    from composer.configs._limits import YAML_CHARS

    size, limit = len(checked.text()), YAML_CHARS.value()
    if size > limit:
        raise BlueprintError([Problem((), (
            f"the blueprint as a run saves it (templates and imports written in) is {size:,} characters, above the limit of "
            f"{limit:,} every saved copy is read back with; set {YAML_CHARS.env} to raise it"
        ), file=checked.source_map.file)])
