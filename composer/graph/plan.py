"""The blueprint as a graph: references, cycles, shapes — before any tensor exists.

:func:`plan` turns a validated blueprint into a :class:`Plan`: a NetworkX ``DiGraph`` of
modalities and blocks plus the blocks in one topological order, each with its resolved
input references and inferred input/output specs. The same ordered nodes drive shape
inference here, execution in :class:`~composer.graph.model.ComposedModel` and the labels of
:mod:`composer.render`, so the three can never disagree.

Problems (dangling references, cycles, missing outputs, shape mismatches, bad sharing,
disabled blocks that cannot pass through) are collected and raised together.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from composer.configs._base import BlockConfig, SpecError
from composer.registry import Entry, get_block, get_loss
from composer.errors import BlueprintError, Problem, did_you_mean
from composer.spec import Spec, labels
from composer.ref import BATCH_REFS, MAIN_VIEW, Ref

__all__ = ["Ref", "Node", "LossNode", "Plan", "PlanContext", "PLAN_PASSES", "plan", "resolve_reference", "check_references"]


@dataclass
class Node:
    """One use of a block: its id, config, resolved inputs and inferred specs."""

    id: str
    config: BlockConfig
    entry: Entry
    inputs: dict[str, Ref]
    in_specs: dict[str, Spec]
    out_specs: dict[str, Spec]

    @property
    def owner(self) -> str:
        """The block whose weights this node uses (itself unless ``share`` is set)."""
        return self.config.share or self.id

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    def value_key(self, port: str) -> str:
        return self.id if port == "out" and list(self.out_specs) == ["out"] else f"{self.id}.{port}"


@dataclass
class LossNode:
    index: int
    name: str
    config: object
    entry: Entry
    refs: dict[str, tuple[str, str, str | None]]  # field -> (view, name, port)
    specs: dict[str, Spec]


@dataclass
class Plan:
    blueprint: object
    graph: nx.DiGraph
    nodes: list[Node]
    inputs: dict[str, Spec]
    values: dict[str, Spec]  # value key ("audio", "enc", "emt.global") -> spec
    outputs: dict[str, str]  # output name -> value key
    losses: list[LossNode] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    #: Blocks whose outputs reach only losses (no output): built and run in training and for the
    #: validation loss, skipped when the model only predicts (evaluation metrics, export), and
    #: counted apart from the model's parameters.
    training_only: frozenset[str] = frozenset()

    def node(self, block_id: str) -> Node:
        return next(n for n in self.nodes if n.id == block_id)

    @property
    def prediction_spec(self) -> Spec:
        return self.values[self.outputs["prediction"]]

    @property
    def inference_owners(self) -> set[str]:
        """Blocks whose weights the model uses when it predicts (the owners of every enabled block
        that is not training-only); the weights of any other block are training-only."""
        return {n.owner for n in self.nodes if n.enabled and n.id not in self.training_only}

    @property
    def scored_outputs(self) -> list[str]:
        """The outputs the task's metrics score: ``prediction`` first, then every named output of
        the prediction's spec (a unimodal head); logs name their metrics ``<output>/<metric>``."""
        spec = self.prediction_spec
        return ["prediction"] + [o for o, key in self.outputs.items() if o != "prediction" and self.values[key] == spec]


def resolve_reference(
    text: str, values: dict[str, Spec], block_ports: dict[str, list[str]], names: list[str], main_ports: dict[str, str] | None = None
) -> tuple[str | None, str | None, str | None]:
    """Reference text -> (value key, error message, suggestion). A bare id of a block with several
    outputs means its ``main_port`` when the block declares one."""
    ref = Ref.parse(text)
    if ref.source not in names:
        return None, f"unknown reference '{text}'", did_you_mean(ref.source, names)
    ports = block_ports.get(ref.source)
    if ports is None and ref.source in values:  # a modality
        if ref.port is not None:
            return None, f"modality '{ref.source}' has no ports; use '{ref.source}'", ref.source
        return ref.source, None, None
    if not ports:
        return None, f"'{ref.source}' has no outputs (it failed to build)", None
    if ref.port is None:
        if ports == ["out"]:
            return ref.source, None, None
        main = (main_ports or {}).get(ref.source)
        if main is not None and main in ports:
            return f"{ref.source}.{main}", None, None
        return None, f"block '{ref.source}' has several outputs ({', '.join(ports)}); name one as '{ref.source}.<port>'", f"{ref.source}.{ports[0]}"
    if ref.port not in ports:
        hint = did_you_mean(ref.port, ports)
        return None, f"block '{ref.source}' has no output '{ref.port}' (outputs: {', '.join(ports)})", (f"{ref.source}.{hint}" if hint else None)
    key = ref.source if ports == ["out"] else f"{ref.source}.{ref.port}"
    return key, None, None


def check_references(blocks: dict[str, BlockConfig], modalities: list[str], invalid: frozenset[str] = frozenset()) -> tuple[nx.DiGraph, list[Problem]]:
    """Graph layer: build the DiGraph and report dangling references, self loops and cycles.

    ``invalid`` names blocks left out because their settings failed the schema: references to
    them are not dangling (their consumers are skipped by :func:`plan`)."""
    problems: list[Problem] = []
    graph = nx.DiGraph()
    for m in modalities:
        graph.add_node(m, kind="modality")
    names = list(modalities) + list(blocks) + sorted(invalid)
    for bid, cfg in blocks.items():
        graph.add_node(bid, kind="block")
    for bid, cfg in blocks.items():
        for port, ref in cfg.input_map().items():
            where = ("blocks", bid, "in") if isinstance(cfg.inputs, str) else ("blocks", bid, "in", int(port) if isinstance(cfg.inputs, list) else port)
            source = Ref.parse(ref).source
            if ref in BATCH_REFS:
                continue  # the batch's label, index, split size: no node of the graph
            if source not in names:
                problems.append(Problem(where, f"unknown reference '{ref}' (expected a modality or block id)", did_you_mean(source, names)))
            elif source == bid:
                problems.append(Problem(where, f"block '{bid}' cannot read its own output"))
            elif source not in invalid:
                graph.add_edge(source, bid, port=port, ref=ref)
        if cfg.share is not None and cfg.share not in invalid:
            if cfg.share not in blocks:
                problems.append(Problem(("blocks", bid, "share"), f"unknown block '{cfg.share}' to share weights with", did_you_mean(cfg.share, list(blocks))))
            elif blocks[cfg.share].share is not None:
                problems.append(Problem(("blocks", bid, "share"), f"'{cfg.share}' itself shares weights with '{blocks[cfg.share].share}'; share with that block directly"))
            elif cfg.share == bid:
                problems.append(Problem(("blocks", bid, "share"), "a block cannot share weights with itself"))
            elif blocks[cfg.share].type != cfg.type:
                problems.append(Problem(("blocks", bid, "share"), f"cannot share weights between type '{cfg.type}' and '{blocks[cfg.share].type}'"))
    try:
        cycle = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        cycle = None
    if cycle:
        path = " -> ".join([u for u, _ in cycle] + [cycle[0][0]])
        problems.append(Problem(("blocks", cycle[0][1]), f"cycle in the block graph: {path}"))
    return graph, problems


def _disabled_outputs(node_id: str, cfg: BlockConfig, in_specs: dict[str, Spec], out_specs: dict[str, Spec]) -> None:
    """A disabled block passes its inputs through: its outputs must equal its inputs."""
    if list(out_specs) == ["out"] and len(in_specs) >= 1:
        main = next(iter(in_specs.values()))
        if out_specs["out"] != main:
            raise SpecError(f"cannot disable: output {out_specs['out']} differs from main input {main}", field="enabled")
        return
    for port, spec in out_specs.items():
        if port not in in_specs or in_specs[port] != spec:
            raise SpecError(f"cannot disable: output '{port}' has no input of the same shape to pass through", field="enabled")


def _vocabulary_problems(bp, node: Node) -> list[Problem]:
    """A tokens modality may hold ids up to its ``vocab``; the block that embeds them must cover them."""
    size = node.config.vocabulary()
    if size is None:
        return []
    problems = []
    for ref in node.inputs.values():
        m = bp.modalities.get(ref.source)
        if m is not None and m.kind == "tokens" and m.vocab > size:
            problems.append(Problem(("modalities", ref.source, "vocab"), (
                f"vocab {m.vocab} is larger than the {size} token ids block '{node.id}' embeds; "
                f"set modalities.{ref.source}.vocab to {size} or use an encoder with a larger vocabulary"
            )))
    return problems


def _share_signature(node: Node) -> list[tuple]:
    """What a shared module needs of its inputs: port names and widths. Time axes may differ (every
    use runs with its own masks and lengths) and so may kinds where the block accepts both (a
    linear map shared by a sequence and a vector): each use's own shape inference has checked
    that, and the weight shapes of every use are compared with the owner's by the size estimate."""
    return [(port, None if s.kind in ("tokens", "labels") else s.features) for port, s in node.in_specs.items()]


def batch_specs(bp) -> dict[str, Spec]:
    """``label`` (the task's label spec), ``index`` ``(B,)`` and ``split_size`` (a scalar)."""
    return {"label": bp.task.label_spec(), "index": labels("long"), "split_size": Spec("scalar", (), dtype="long")}


@dataclass
class PlanContext:
    """What the passes of :func:`plan` share: the blueprint, the graph and the values found so far.

    Each pass reads what earlier passes left here, adds its findings and returns its problems."""

    bp: object
    invalid: frozenset[str]
    inputs: dict[str, Spec]
    graph: nx.DiGraph = field(default_factory=nx.DiGraph)
    values: dict[str, Spec] = field(default_factory=dict)  # value key -> spec
    block_ports: dict[str, list[str]] = field(default_factory=dict)
    main_ports: dict[str, str] = field(default_factory=dict)
    nodes: list[Node] = field(default_factory=list)
    failed: set[str] = field(default_factory=set)  # blocks whose consumers are skipped
    outputs: dict[str, str] = field(default_factory=dict)
    losses: list[LossNode] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    training_only: frozenset[str] = frozenset()
    stop: bool = False  # a pass found something that makes the later ones meaningless (a cycle)

    @property
    def modalities(self) -> list[str]:
        return list(self.bp.modalities)

    @property
    def names(self) -> list[str]:
        """Every name a reference may use: modalities, blocks, and blocks left out by the schema."""
        return self.modalities + list(self.bp.blocks) + sorted(self.invalid)

    @property
    def batch_specs(self) -> dict[str, Spec]:
        """What blocks may read of the batch besides its inputs (training-only blocks: see branches_pass)."""
        return batch_specs(self.bp)

    def resolve(self, text: str, extra_names: tuple[str, ...] = ()) -> tuple[str | None, str | None, str | None]:
        return resolve_reference(text, self.values, self.block_ports, self.names + list(extra_names), self.main_ports)


def references_pass(ctx: PlanContext) -> list[Problem]:
    """Dangling references, self loops, sharing with unknown blocks, cycles (the graph layer)."""
    ctx.graph, problems = check_references(ctx.bp.blocks, ctx.modalities, ctx.invalid)
    ctx.stop = any("cycle" in p.message for p in problems)
    return problems


def _block_inputs(ctx: PlanContext, bid: str, cfg: BlockConfig, problems: list[Problem]) -> tuple[dict[str, Ref], dict[str, Spec]] | None:
    """The resolved inputs of one block, or None when one of them cannot be resolved."""
    refs: dict[str, Ref] = {}
    in_specs: dict[str, Spec] = {}
    ok = True
    for port, text in cfg.input_map().items():
        if text in BATCH_REFS:
            refs[port], in_specs[port] = Ref(text), ctx.batch_specs[text]
            continue
        if Ref.parse(text).source in ctx.failed:
            ok = False
            continue
        key, err, hint = ctx.resolve(text)
        if err:
            if "unknown reference" not in err:  # unknown references were reported by the references pass
                problems.append(Problem(("blocks", bid, "in"), err, hint))
            ok = False
            continue
        refs[port] = Ref.from_key(key)
        in_specs[port] = ctx.values[key]
    return (refs, in_specs) if ok else None


def shapes_pass(ctx: PlanContext) -> list[Problem]:
    """Walk the blocks in topological order and infer every output spec from the input specs."""
    problems: list[Problem] = []
    ctx.values.update(ctx.inputs)
    ctx.failed.update(ctx.invalid)
    for bid in nx.topological_sort(ctx.graph):
        if bid in ctx.inputs:
            continue
        cfg = ctx.bp.blocks[bid]
        resolved = _block_inputs(ctx, bid, cfg, problems)
        if resolved is None:
            ctx.failed.add(bid)
            continue
        refs, in_specs = resolved
        try:
            out_specs = cfg.infer(in_specs)
            if not isinstance(out_specs, dict):
                out_specs = {"out": out_specs}
            if not cfg.enabled:
                _disabled_outputs(bid, cfg, in_specs, out_specs)
        except SpecError as exc:
            problems.append(Problem(("blocks", bid) + ((exc.field,) if exc.field else ()), exc.message))
            ctx.failed.add(bid)
            continue
        node = Node(bid, cfg, get_block(cfg.type), refs, in_specs, out_specs)
        problems += _vocabulary_problems(ctx.bp, node)
        ctx.nodes.append(node)
        ctx.block_ports[bid] = list(out_specs)
        if cfg.main_port is not None:
            ctx.main_ports[bid] = cfg.main_port
        for port, spec in out_specs.items():
            ctx.values[node.value_key(port)] = spec
    return problems


def _differing_settings(owner: BlockConfig, user: BlockConfig) -> list[str]:
    """The settings (field names) in which a sharing block differs from its owner."""
    a, b = owner.hyperparameters(), user.hyperparameters()
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def sharing_pass(ctx: PlanContext) -> list[Problem]:
    """Explicit weight sharing: same type (checked by the references pass), same settings, same input widths."""
    problems = []
    by_id = {n.id: n for n in ctx.nodes}
    for n in ctx.nodes:
        owner = by_id.get(n.config.share) if n.config.share else None
        if owner is None or owner.config.type != n.config.type:
            continue
        differing = _differing_settings(owner.config, n.config)
        if differing:
            shown = ", ".join(f"{k} ({owner.config.hyperparameters().get(k)!r} there, {n.config.hyperparameters().get(k)!r} here)" for k in differing)
            problems.append(Problem(("blocks", n.id, "share"), (
                f"cannot share weights with '{owner.id}': settings differ in {shown}; a sharing block repeats the owner's settings"
            )))
        elif _share_signature(owner) != _share_signature(n):
            described = lambda node: ", ".join(f"{port}: {s}" for port, s in node.in_specs.items())
            problems.append(Problem(("blocks", n.id, "share"), (
                f"cannot share weights with '{owner.id}': the owner's module takes {described(owner)}, this block "
                f"gives it {described(n)} (the same ports and widths are needed; time lengths may differ)"
            )))
    return problems


def outputs_pass(ctx: PlanContext) -> list[Problem]:
    """Resolve the named outputs; without ``prediction``, the one block nothing consumes predicts."""
    problems = []
    bp = ctx.bp
    for name, text in bp.outputs.items():
        key, err, hint = ctx.resolve(text)
        if err:
            if Ref.parse(text).source not in ctx.failed:
                problems.append(Problem(("outputs", name), err, hint))
        else:
            ctx.outputs[name] = key
    if "prediction" not in ctx.outputs and "prediction" not in bp.outputs:
        consumers = {u for u, _ in ctx.graph.edges}
        sinks = [n for n in ctx.nodes if n.id not in consumers and not n.config.aux_ports()]
        predicted = [Ref.parse(c.pred) for c in bp.losses if isinstance(getattr(c, "pred", None), str)]
        named = [n for ref in predicted for n in sinks if Ref(n.id) == ref][:1]
        if len(sinks) > 1 and named:
            sinks = named  # several sinks: the one the first loss with a `pred` predicts with
        if len(sinks) == 1 and list(sinks[0].out_specs) == ["out"]:
            ctx.outputs["prediction"] = sinks[0].id
        elif not ctx.failed:
            names_ = ", ".join(n.id for n in sinks) or "none"
            problems.append(Problem(("outputs",), f"missing output 'prediction': name the block that predicts (blocks nothing consumes: {names_})"))
    return problems


def usage_pass(ctx: PlanContext) -> list[Problem]:
    """Warnings: blocks no output or loss uses, modalities no block reads."""
    consumers = {u for u, _ in ctx.graph.edges}
    used = {Ref.from_key(key).source for key in ctx.outputs.values()}
    used |= {Ref.parse(text).source for loss in ctx.bp.losses for text in loss.refs().values()}
    for n in ctx.nodes:
        if n.id not in consumers and n.id not in used and not n.config.aux_ports():
            ctx.warnings.append(Problem(("blocks", n.id), f"block '{n.id}' is not used by any output or loss", severity="warning"))
    for m in ctx.modalities:
        if m not in consumers:
            ctx.warnings.append(Problem(("modalities", m), f"modality '{m}' is not read by any block", severity="warning"))
    return []


def _loss_names_and_groups(bp) -> list[Problem]:
    problems = []
    seen_names: dict[str, int] = {}
    for i, cfg in enumerate(bp.losses):
        if cfg.name is not None:
            if cfg.name in seen_names:
                problems.append(Problem(("losses", i, "name"), f"loss name '{cfg.name}' is already used by losses[{seen_names[cfg.name]}]; names are unique"))
            seen_names.setdefault(cfg.name, i)
        if cfg.group is not None and cfg.group not in bp.loss_groups:
            groups = list(bp.loss_groups)
            problems.append(Problem(("losses", i, "group"), (
                f"unknown loss group '{cfg.group}'" + (f" (groups: {', '.join(groups)})" if groups else "; define its weight under `loss_groups:`")
            ), did_you_mean(cfg.group, groups)))
    used = {cfg.group for cfg in bp.losses}
    for group in bp.loss_groups:
        if group not in used:
            problems.append(Problem(("loss_groups", group), f"no loss is in group '{group}' (give a loss `group: {group}`)",
                                    did_you_mean(group, [g for g in used if g]), severity="warning"))
    return problems


def _loss_value(ctx: PlanContext, ref: Ref, where: tuple) -> tuple[Spec | None, str | None, Problem | None]:
    """The spec a loss field reads (and its port), or the problem with it (None: reported elsewhere)."""
    bp = ctx.bp
    if ref.source == "label":  # `label`, or `label.<name>` of training.data.extra_labels (the label's spec)
        extra = list(bp.training.data.extra_labels)
        if ref.port is not None and ref.port not in extra:
            known = f"training.data.extra_labels names {', '.join(extra)}" if extra else "training.data.extra_labels names none"
            return None, None, Problem(where, f"'label.{ref.port}' is not a label of the batch ({known})", did_you_mean(ref.port, extra))
        return bp.task.label_spec(), ref.port, None
    if ref.source == "mask":
        port = ref.port
        if port not in bp.modalities or bp.modalities[port].kind not in ("sequence", "tokens"):
            return None, None, Problem(where, f"'mask.{port}' needs a sequence modality", did_you_mean(str(port), ctx.modalities))
        return Spec("tokens", ("B", ctx.inputs[port].time), dtype="bool"), port, None
    key, err, hint = ctx.resolve(ref.key, ("label",))
    if err:
        silent = ref.source in ctx.failed or "failed to build" in err
        return None, None, None if silent else Problem(where, err, hint)
    return ctx.values[key], Ref.from_key(key).port, None


def losses_pass(ctx: PlanContext) -> list[Problem]:
    """Loss names and groups, the values each loss reads (in which view), and each loss's own check."""
    bp = ctx.bp
    views = [MAIN_VIEW] + list(bp.training.views)
    problems = []
    for i, view in enumerate(bp.aux_loss_views):
        if view not in views:
            problems.append(Problem(("aux_loss_views", i), f"unknown view '{view}' (views: {', '.join(views)})", did_you_mean(view, views)))
    found = _loss_names_and_groups(bp)
    ctx.warnings += [p for p in found if p.severity == "warning"]
    problems += [p for p in found if p.severity != "warning"]
    for i, cfg in enumerate(bp.losses):
        refs, specs, ok = {}, {}, True
        for fname, text in cfg.refs().items():
            ref, where = Ref.parse(text), ("losses", i, fname)
            if ref.view not in views:
                problems.append(Problem(where, f"unknown view '{ref.view}' (views: {', '.join(views)})", did_you_mean(ref.view, views)))
                ok = False
                continue
            spec, port, problem = _loss_value(ctx, ref, where)
            if spec is None:
                problems += [problem] if problem is not None else []
                ok = False
                continue
            refs[fname] = (ref.view, ref.source, port)
            specs[fname] = spec
        if not ok:
            continue
        try:
            cfg.check(specs)
        except SpecError as exc:
            problems.append(Problem(("losses", i) + ((exc.field,) if exc.field else ()), exc.message))
            continue
        ctx.losses.append(LossNode(i, cfg.name or f"{cfg.type}_{i}", cfg, get_loss(cfg.type), refs, specs))
    return problems


def branches_pass(ctx: PlanContext) -> list[Problem]:
    """Training-only branches: blocks that no output depends on but a loss reads (directly or
    through other such blocks), e.g. MISA's decoders that exist for a reconstruction loss."""
    inference: set[str] = set()
    for key in ctx.outputs.values():
        source = Ref.from_key(key).source
        inference |= {source} | nx.ancestors(ctx.graph, source)
    read_by_losses = {source for ln in ctx.losses for (_, source, _) in ln.refs.values()}
    feeding_losses: set[str] = set()
    for source in read_by_losses & set(ctx.bp.blocks):
        feeding_losses |= {source} | nx.ancestors(ctx.graph, source)
    ids = {n.id for n in ctx.nodes}
    ctx.training_only = frozenset(bid for bid in ids & feeding_losses if bid not in inference)
    problems = []
    for node in ctx.nodes:
        read = [ref.source for ref in node.inputs.values() if ref.source in BATCH_REFS]
        if read and node.id not in ctx.training_only:
            needed_by = [name for name, key in ctx.outputs.items()
                         if node.id in {Ref.from_key(key).source} | nx.ancestors(ctx.graph, Ref.from_key(key).source)]
            why = f"output '{needed_by[0]}' depends on it" if needed_by else "no loss reads it"
            problems.append(Problem(("blocks", node.id, "in"), (
                f"block '{node.id}' reads '{read[0]}', which a batch has only in training, but {why}; only a training-only "
                "block (one whose outputs only losses read) may read label, index or split_size"
            )))
    return problems


#: The passes of :func:`plan`, in order (docs/blueprint.md lists the whole order of ``validate``).
PLAN_PASSES = (references_pass, shapes_pass, sharing_pass, outputs_pass, usage_pass, losses_pass, branches_pass)


def plan(bp, invalid: frozenset[str] = frozenset()) -> Plan:
    """Check the graph and infer every spec; raise BlueprintError listing all problems.

    ``invalid``: ids of blocks removed because their settings failed the schema, so that the
    rest of the graph can still be checked and every independent problem reported at once."""
    ctx = PlanContext(bp, invalid, bp.input_specs())
    problems: list[Problem] = []
    for run in PLAN_PASSES:
        problems += run(ctx)
        if ctx.stop:
            break
    if problems:
        raise BlueprintError(problems + ctx.warnings)
    return Plan(bp, ctx.graph, ctx.nodes, ctx.inputs, ctx.values, ctx.outputs, ctx.losses, ctx.warnings, ctx.training_only)
