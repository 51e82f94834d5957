"""Build the ``graphviz.Digraph`` of a planned blueprint.

Everything drawn comes from the :class:`~composer.graph.plan.Plan` (the same topological
walk that infers shapes and runs the model) and, for parameter counts and the insides of
composite blocks, from the compiled :class:`~composer.graph.model.ComposedModel`:

* modalities are input nodes; blocks are tables coloured by family with their id, type,
  the fields the blueprint sets and their parameter count; edges carry inferred shapes;
* ``enabled: false`` blocks are drawn faded and dashed with dashed edges ("bypassed");
* ``share:`` blocks get a dashed teal edge to the owner of their weights;
* fields named by ``search.space`` are marked with ◆ and their range;
* losses are nodes fed by the values they compare, one colour per training view; blocks
  with ``aux_loss_ports`` feed an "auxiliary losses" node;
* with ``depth >= 1`` a block with child modules becomes a cluster showing its parts
  (see :mod:`composer.blocks._inside`);
* the blocks of a template use (``pair/ab``) are drawn in a frame named after the use and
  its template (``templates="expanded"``, nested uses nest), or the use as one node whose
  edges are the use's inputs and outputs (``templates="collapsed"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import graphviz

from composer.ref import BATCH_REFS, Ref
from composer.blueprint.load import get_path, split_path
from composer.blueprint.templates import SEPARATOR
from composer.graph.plan import Node, Plan
from composer.graph.size import parameter_counts
from composer.configs.losses._base import MAIN_VIEW
from composer.render._style import (
    DISABLED_COLOUR,
    FONT,
    SEARCH_COLOUR,
    SHARE_COLOUR,
    VIEW_COLOURS,
    count_text,
    escape,
    family_colours,
    shape_text,
    value_text,
)

if TYPE_CHECKING:
    from composer.blocks._inside import InsidePart

__all__ = ["GraphOptions", "build_graph"]

WIRING = {"inputs", "share", "enabled", "type"}


@dataclass
class GraphOptions:
    """How to draw: direction ``LR``/``TB``, expansion depth (0 = none), which blocks to
    expand (None = every block with parts), rows of fields per block, legend and title
    on/off, parameter counts on/off (they need a compiled model)."""

    direction: str = "LR"
    depth: int = 0
    expand: tuple[str, ...] | None = None
    max_fields: int = 6
    legend: bool = True
    title: bool = True
    params: bool = True
    templates: str = "expanded"  # expanded: a use's blocks inside a frame; collapsed: one node per use


@dataclass
class _SearchMarks:
    blocks: dict[str, dict[tuple, str]] = field(default_factory=dict)  # block -> path from its field -> range
    losses: dict[int, dict[str, str]] = field(default_factory=dict)
    other: dict[str, str] = field(default_factory=dict)  # path -> range text


def search_range_text(entry) -> str:
    """``choice [a, b]`` -> ``{a, b}``; ``int [1, 4]`` -> ``1…4``; log ranges say ``log``."""
    if entry.choice is not None:
        return "{" + ", ".join(value_text(c, 14) for c in entry.choice) + "}"
    low, high = entry.int_range or entry.float_range
    text = f"{value_text(low)}…{value_text(high)}"
    if entry.step:
        text += f" step {value_text(entry.step)}"
    return text + (" log" if entry.log else "")


def _search_marks(bp) -> _SearchMarks:
    marks = _SearchMarks()
    if bp.search is None:
        return marks
    for key, entry in bp.search.space.items():
        path = split_path(key)
        rng = search_range_text(entry)
        if len(path) >= 3 and path[0] == "blocks" and path[1] in bp.blocks:
            marks.blocks.setdefault(path[1], {})[tuple(path[2:])] = rng
        elif len(path) >= 3 and path[0] == "losses" and isinstance(path[1], int):
            marks.losses.setdefault(path[1], {})[".".join(map(str, path[2:]))] = rng
        else:
            marks.other[key] = rng
    return marks


def template_uses(bp) -> dict[str, str | None]:
    """Every template use of a blueprint (nested ones too) -> its template's name, or None when
    the blueprint was saved expanded (the uses are then known from the block ids only)."""
    known = {use: info.template for use, info in bp.template_uses.items()}
    for bid in bp.blocks:
        parts = bid.split(SEPARATOR)[:-1]
        for i in range(1, len(parts) + 1):
            known.setdefault(SEPARATOR.join(parts[:i]), None)
    return known


def _node_id(kind: str, name: Any) -> str:
    # ':' would read as a graphviz port, so ids use '__'
    return f"{kind}__{name}"


def _row(text: str, *, colour: str | None = None, size: int = 9, align: str = "LEFT", bold: bool = False, italic: bool = False) -> str:
    body = text
    if bold:
        body = f"<B>{body}</B>"
    if italic:
        body = f"<I>{body}</I>"
    body = f"&#160;{body}&#160;"  # breathing room inside rounded borders
    font = f'<FONT POINT-SIZE="{size}"' + (f' COLOR="{colour}"' if colour else "") + f">{body}</FONT>"
    return f'<TR><TD ALIGN="{align}" BALIGN="LEFT">{font}</TD></TR>'


def _table(rows: list[str], fill: str, border: str, *, dashed: bool = False) -> str:
    style = "ROUNDED,DASHED" if dashed else "ROUNDED"
    return (
        f'<<TABLE BORDER="1" CELLBORDER="0" CELLSPACING="0" CELLPADDING="3" COLOR="{border}" '
        f'BGCOLOR="{fill}" STYLE="{style}">' + "".join(rows) + "</TABLE>>"
    )


class _Builder:
    def __init__(self, bp, model, options: GraphOptions):
        the_plan = bp.plan
        self.plan = the_plan
        self.bp = bp
        self.model = model
        self.opt = options
        self.marks = _search_marks(self.bp)
        self.counts: dict[str, int] = {}
        if options.params:  # from the model when one is drawn, else from the configs (no module built)
            self.counts = model.parameter_counts() if model is not None else parameter_counts(the_plan)
        self.views = [MAIN_VIEW] + list(self.bp.training.views)
        self.families: list[str] = []
        self.disabled = {n.id for n in the_plan.nodes if not n.enabled}
        self.uses = template_uses(self.bp)
        # collapsed: every block of a top-level use is drawn as that use's node
        self.collapsed = {} if options.templates != "collapsed" else {
            n.id: n.id.split(SEPARATOR, 1)[0] for n in the_plan.nodes if SEPARATOR in n.id
        }
        self.frames: dict[str, graphviz.Digraph] = {}
        # losses (and the auxiliary-loss node) in one column after the model, in a dashed frame
        border = family_colours("loss")[1]
        self.objective = graphviz.Digraph(name="cluster_losses")
        self.objective.attr(label="training objective", style="rounded,dashed", color=border, fontcolor=border, fontsize="9", rank="same", margin="8")
        self.g = graphviz.Digraph(
            name=self.bp.name,
            graph_attr={
                "rankdir": self.opt.direction,
                "fontname": FONT,
                "nodesep": "0.3" if options.direction == "LR" else "0.5",  # TB: room for labels of converging edges
                "ranksep": "0.45",
                "compound": "true",
                "newrank": "true",
                "bgcolor": "white",
                "pad": "0.15",
            },
            node_attr={"fontname": FONT, "fontsize": "10", "shape": "plain"},
            edge_attr={"fontname": FONT, "fontsize": "8", "color": "#4D4D4D", "fontcolor": "#333333", "arrowsize": "0.6", "penwidth": "0.9"},
        )

    # -- nodes ------------------------------------------------------------------------
    def _use_family(self, family: str) -> None:
        if family not in self.families:
            self.families.append(family)

    def modalities(self) -> None:
        fill, border = family_colours("modality")
        self._use_family("modality")
        with self.g.subgraph(name="inputs") as sub:
            sub.attr(rank="same")
            for name, m in self.bp.modalities.items():
                if m.kind == "tokens":
                    what = f"tokens · vocab {m.vocab}"
                elif m.kind == "map":
                    what = f"map · {m.features} × {' × '.join(map(str, m.spatial))}"
                else:
                    what = f"{m.kind} · {m.features} features"
                rows = [_row(escape(name), size=11, align="CENTER", bold=True), _row(escape(what), colour=border, align="CENTER")]
                sub.node(_node_id("m", name), _table(rows, fill, border))
            # what training-only blocks read of the batch (label, index, split_size), drawn as inputs
            read = sorted({ref.source for n in self.plan.nodes for ref in n.inputs.values() if ref.source in BATCH_REFS})
            for name in read:
                rows = [_row(escape(name), size=11, align="CENTER", bold=True), _row("batch · training only", colour=border, align="CENTER")]
                sub.node(_node_id("m", name), _table(rows, fill, border))

    def _field_rows(self, node: Node, colour: str) -> list[str]:
        """Rows for the fields the blueprint sets, plus every searched field (never cut)."""
        searched = self.marks.blocks.get(node.id, {})
        rows = self._config_rows(node.config, searched, colour, WIRING, depth=0)
        if ("enabled",) in searched:
            rows.append(_row(f"◆ enabled ∈ {escape(searched[('enabled',)])}", colour=SEARCH_COLOUR))
        return rows

    def _config_rows(self, cfg, searched: dict[tuple, str], colour: str, exclude: set[str], depth: int) -> list[str]:
        """Rows of one config; a nested block config (``fusion: {type: mfp, ...}``) is indented below its field."""
        indent = "&#160;&#160;&#160;" * depth
        names = [f for f in type(cfg).model_fields if f not in exclude and f in cfg.model_fields_set]
        wanted = [path[0] for path in searched if path[0] not in exclude]
        names += [f for f in dict.fromkeys(wanted) if f not in names and f in type(cfg).model_fields]
        shown = names[: self.opt.max_fields] + [f for f in names[self.opt.max_fields :] if f in wanted]
        rows = []
        for f in shown:
            value = getattr(cfg, f)
            inner = {path[1:]: rng for path, rng in searched.items() if path[0] == f and len(path) > 1}
            if hasattr(value, "model_fields"):  # a nested config
                kind = getattr(value, "type", None)
                head = f"{escape(f)} = {escape(kind)}" if kind else f"{escape(f)}:"
                rows.append(_row(indent + head, colour=colour))
                rows += self._config_rows(value, inner, colour, {"type"}, depth + 1)
                continue
            if isinstance(value, dict) and isinstance(value.get("type"), str):  # a nested block spelled as a mapping
                rows.append(_row(f"{indent}{escape(f)} = {escape(value['type'])}", colour=colour))
                for key, item in value.items():
                    if key == "type":
                        continue
                    rng = inner.pop((key,), None)
                    if rng is None:
                        rows.append(_row(f"{indent}&#160;&#160;&#160;{escape(key)} = {escape(value_text(item))}", colour=colour))
                    else:
                        rows.append(_row(f"{indent}&#160;&#160;&#160;◆ {escape(key)} = {escape(value_text(item))} ∈ {escape(rng)}", colour=SEARCH_COLOUR))
                for path, rng in inner.items():
                    rows.append(_row(f"{indent}&#160;&#160;&#160;◆ {escape('.'.join(map(str, path)))} ∈ {escape(rng)}", colour=SEARCH_COLOUR))
                continue
            if (f,) in searched:
                rows.append(_row(f"{indent}◆ {escape(f)} = {escape(value_text(value))} ∈ {escape(searched[(f,)])}", colour=SEARCH_COLOUR))
            else:
                rows.append(_row(f"{indent}{escape(f)} = {escape(value_text(value))}", colour=colour))
            data = cfg.model_dump(by_alias=False).get(f)
            for path, rng in inner.items():  # a searched item of a list or mapping field
                try:
                    item = get_path(data, path)
                except (KeyError, IndexError, TypeError):
                    item = "?"
                where = f + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
                rows.append(_row(f"{indent}◆ {escape(where)} = {escape(value_text(item))} ∈ {escape(rng)}", colour=SEARCH_COLOUR))
        if len(names) > len(shown):
            rows.append(_row(f"{indent}… {len(names) - len(shown)} more", colour=colour))
        return rows

    def _block_rows(self, node: Node) -> tuple[list[str], str, str, bool]:
        family = node.entry.family
        fill, border = family_colours(family)
        text = "#222222"
        muted = "#555555"
        dashed = False
        if not node.enabled:
            fill, border, text, muted, dashed = "#FAFAFA", DISABLED_COLOUR, DISABLED_COLOUR, DISABLED_COLOUR, True
        rows = [
            _row(escape(node.id), size=11, align="CENTER", bold=True, colour=text),
            _row(escape(node.config.type), size=9, align="CENTER", italic=True, colour=border),
        ]
        fields = self._field_rows(node, muted) if node.config.share is None else []
        if fields:
            rows.append("<HR/>")
            rows += fields
        foot = []
        if node.config.share is not None:
            foot.append(_row(f"shares weights of {escape(node.config.share)}", colour=SHARE_COLOUR, align="CENTER"))
            if ("enabled",) in self.marks.blocks.get(node.id, {}):
                foot.append(_row(f"◆ enabled ∈ {escape(self.marks.blocks[node.id][('enabled',)])}", colour=SEARCH_COLOUR))
        elif node.id in self.counts and node.enabled:
            foot.append(_row(f"{count_text(self.counts[node.id])} params", colour=muted, align="CENTER"))
        if not node.enabled:
            foot.append(_row("bypassed · enabled: false", colour=DISABLED_COLOUR, align="CENTER", italic=True))
        if foot:
            rows.append("<HR/>")
            rows += foot
        return rows, fill, border, dashed

    def blocks(self) -> None:
        for node in self.plan.nodes:
            self._use_family(node.entry.family)
            if node.id in self.collapsed:
                continue
            rows, fill, border, dashed = self._block_rows(node)
            label = _table(rows, fill, border, dashed=dashed)
            parts = self._parts(node)
            container = self._frame(node.id.rpartition(SEPARATOR)[0])
            if parts:
                self._cluster(container, node, label, parts, fill, border)
            else:
                container.node(_node_id("b", node.id), label)
        for use in dict.fromkeys(self.collapsed.values()):
            self._collapsed_use(use)
        for use in sorted(self.frames, key=lambda u: -u.count(SEPARATOR)):  # innermost frames first
            parent = use.rpartition(SEPARATOR)[0]
            (self.frames[parent] if parent else self.g).subgraph(self.frames[use])

    # -- template uses ----------------------------------------------------------------
    def _frame(self, use: str):
        """The graph that holds the blocks of template use ``use`` (the figure itself for '')."""
        if not use:
            return self.g
        if use not in self.frames:
            self._frame(use.rpartition(SEPARATOR)[0])
            template = self.uses.get(use)
            label = f"{use.rpartition(SEPARATOR)[2]}" + (f" · template {template}" if template else "")
            frame = graphviz.Digraph(name=f"cluster_use_{use}")
            frame.attr(label=escape(label), style="rounded,dashed", color="#7A7A7A", fontcolor="#555555", fontsize="9", margin="10", labeljust="l")
            self.frames[use] = frame
        return self.frames[use]

    def _collapsed_use(self, use: str) -> None:
        inner = [n for n in self.plan.nodes if self.collapsed.get(n.id) == use]
        fill, border = family_colours(inner[-1].entry.family)
        template = self.uses.get(use)
        rows = [_row(escape(use), size=11, align="CENTER", bold=True)]
        rows.append(_row(escape(f"template {template}" if template else "template use"), size=9, align="CENTER", italic=True, colour=border))
        rows.append("<HR/>")
        rows.append(_row(f"{len(inner)} blocks", colour="#555555", align="CENTER"))
        if self.counts:
            total = sum(self.counts.get(n.id, 0) for n in inner)
            rows.append(_row(f"{count_text(total)} params", colour="#555555", align="CENTER"))
        self.g.node(_node_id("b", use), _table(rows, fill, border, dashed=True))

    # -- composite blocks -------------------------------------------------------------
    def _parts(self, node: Node) -> tuple[InsidePart, ...]:
        if self.opt.depth < 1 or self.model is None or node.config.share is not None or not node.enabled:
            return ()  # a disabled block is not built: nothing inside to draw
        if self.opt.expand is not None and node.id not in self.opt.expand:
            return ()
        from composer.blocks._inside import inside_of  # reads the module tree (imports torch)

        return inside_of(self.model.block(node.owner), self.opt.depth)

    def _cluster(self, container, node: Node, label: str, parts: tuple[InsidePart, ...], fill: str, border: str) -> None:
        """A block drawn with its inside: header node, parts, and an exit point on the right."""
        head, tail = _node_id("b", node.id), _node_id("x", node.id)
        with container.subgraph(name=f"cluster_{node.id}") as sub:
            sub.attr(style="rounded,filled", fillcolor="#FFFFFF", color=border, penwidth="1.2", label="", margin="8")
            sub.node(head, label, ordering="out")  # parts keep their declaration order
            sub.node(tail, "", shape="point", width="0.01", style="invis")
            self._add_parts(sub, node.id, parts, head, tail, fill, border)

    def _add_parts(self, sub, prefix: str, parts: tuple[InsidePart, ...], entry: str, exit_: str, fill: str, border: str) -> None:
        ids = {p.name: _node_id("p", f"{prefix}__{i}") for i, p in enumerate(parts)}
        ends: dict[str, tuple[str, str]] = {}
        # dot orders a rank's nodes left to right; rotated for LR that reads bottom-up
        order = list(enumerate(parts))
        if self.opt.direction == "LR":
            order.reverse()
        for i, part in order:
            pid = ids[part.name]
            count = f" · {count_text(part.params)}" if part.params else ""
            rows = [
                _row(escape(part.name), size=9, align="CENTER", bold=True, colour="#222222"),
                _row(escape(part.label) + count, size=8, align="CENTER", colour=border),
            ]
            table = _table(rows, fill, border)
            if part.parts:
                tail = _node_id("x", f"{prefix}__{i}")
                with sub.subgraph(name=f"cluster_{prefix}__{i}") as inner:
                    inner.attr(style="rounded,dashed", color=border, label="", margin="6")
                    inner.node(pid, table, ordering="out")
                    inner.node(tail, "", shape="point", width="0.01", style="invis")
                    self._add_parts(inner, f"{prefix}__{i}", part.parts, pid, tail, fill, border)
                ends[part.name] = (pid, tail)
            else:
                sub.node(pid, table)
                ends[part.name] = (pid, pid)
        # an input naming a later part (or the part itself) is recurrent, e.g. RMFN's z_t fed back
        # to the LSTHMs at t+1: drawn dashed and left out of the layout so the flow stays left to right
        index = {p.name: i for i, p in enumerate(parts)}
        fed, forward_fed = set(), set()
        for i, part in enumerate(parts):
            for src in part.inputs:
                if src not in ends:
                    continue
                if index[src] < i:
                    sub.edge(ends[src][1], ends[part.name][0], color=border, arrowsize="0.5")
                    fed.add(src)
                    forward_fed.add(part.name)
                else:
                    sub.edge(ends[src][1], ends[part.name][0], color=border, arrowsize="0.5", style="dashed", constraint="false")
        for _, part in order:
            if part.name not in forward_fed:
                sub.edge(entry, ends[part.name][0], style="invis")
            if part.name not in fed:
                sub.edge(ends[part.name][1], exit_, style="invis")
        if not parts:
            sub.edge(entry, exit_, style="invis")

    # -- edges ------------------------------------------------------------------------
    def _source(self, name: str) -> tuple[str, dict[str, str]]:
        """Graphviz node id of a value's source and the edge attributes leaving it."""
        if name in self.bp.modalities or name in BATCH_REFS:
            return _node_id("m", name), {}
        if name in self.collapsed:
            return _node_id("b", self.collapsed[name]), {}
        node = self.plan.node(name)
        attrs = {}
        if node.id in self.disabled:
            attrs = {"style": "dashed", "color": DISABLED_COLOUR}
        if self._parts(node):
            attrs["ltail"] = f"cluster_{node.id}"
            return _node_id("x", node.id), attrs
        return _node_id("b", name), attrs

    def _target(self, node: Node) -> tuple[str, dict[str, str]]:
        if node.id in self.collapsed:
            return _node_id("b", self.collapsed[node.id]), {}
        if self._parts(node):
            return _node_id("b", node.id), {"lhead": f"cluster_{node.id}"}
        return _node_id("b", node.id), {}

    def data_edges(self) -> None:
        for node in self.plan.nodes:
            target, tattrs = self._target(node)
            for port, ref in node.inputs.items():
                if node.id in self.collapsed and self.collapsed.get(ref.source) == self.collapsed[node.id]:
                    continue  # an edge inside a collapsed use
                source, attrs = self._source(ref.source)
                attrs = {**attrs, **tattrs}
                if node.id in self.disabled:
                    attrs.update(style="dashed", color=DISABLED_COLOUR)
                tag = ref.port or ""
                if port != "in" and not port.isdigit() and port != tag:
                    tag = f"{tag} → {port}" if tag else port
                label = shape_text(node.in_specs[port])
                self.g.edge(source, target, label=escape(f"{tag}: {label}" if tag else label), **attrs)
            if node.config.share is not None and node.id not in self.collapsed:
                self.g.edge(
                    _node_id("b", node.id), self._source(node.config.share)[0],
                    style="dashed", color=SHARE_COLOUR, fontcolor=SHARE_COLOUR, arrowhead="odot",
                    label="shared weights", constraint="false",
                )

    def outputs(self) -> None:
        aux_ports = [(n, p) for n in self.plan.nodes for p in n.config.aux_ports() if n.enabled and p in n.out_specs]
        for name, key in self.plan.outputs.items():
            oid = _node_id("o", name)
            self.g.node(oid, f"<<B>{escape(name)}</B>>", shape="box", style="rounded", color="#333333", fontsize="10", margin="0.08,0.04", height="0.3")
            ref = Ref.from_key(key)
            source_name, port = ref.source, ref.port or ""
            if source_name in self.collapsed:
                port = ""  # the use's output, drawn from the use
            source, attrs = self._source(source_name)
            label = shape_text(self.plan.values[key])
            self.g.edge(source, oid, label=escape(f"{port}: {label}" if port else label), **attrs)
        if aux_ports:
            fill, border = family_colours("loss")
            self._use_family("loss")
            rows = [
                _row("auxiliary losses", size=10, align="CENTER", bold=True),
                _row(f"× aux_loss_weight = {value_text(self.bp.aux_loss_weight)}", colour=border, align="CENTER"),
            ]
            self.objective.node("aux_losses", _table(rows, fill, border))
            for n, p in aux_ports:
                source, attrs = self._source(n.id)
                self.g.edge(source, "aux_losses", label=escape(p), color=family_colours("loss")[1], **{k: v for k, v in attrs.items() if k != "color"})

    def losses(self) -> None:
        fill, border = family_colours("loss")
        self._use_family("loss")
        group = self.objective
        for ln in self.plan.losses:
            lid = _node_id("l", ln.index)
            searched = self.marks.losses.get(ln.index, {})
            rows = [
                _row(escape(ln.name), size=10, align="CENTER", bold=True),
                _row(escape(ln.config.type), size=9, align="CENTER", italic=True, colour=border),
                "<HR/>",
            ]
            weight = value_text(ln.config.weight)
            if "weight" in searched:
                rows.append(_row(f"◆ weight = {weight} ∈ {escape(searched['weight'])}", colour=SEARCH_COLOUR))
            else:
                rows.append(_row(f"weight = {weight}", colour="#555555"))
            if ln.config.from_epoch > 1:
                rows.append(_row(f"from epoch {ln.config.from_epoch}", colour="#555555"))
            for fname, rng in searched.items():
                if fname != "weight":
                    rows.append(_row(f"◆ {escape(fname)} ∈ {escape(rng)}", colour=SEARCH_COLOUR))
            edges = []
            for fname, (view, name, port) in ln.refs.items():
                where = "" if view == MAIN_VIEW else f"{view}:"
                if name in ("label", "mask") or name in self.bp.modalities:
                    # batch values are listed, not wired: an edge back to the inputs crosses the figure
                    what = f"mask.{port}" if name == "mask" else name
                    rows.append(_row(f"{escape(fname)} = {escape(where + what)}", colour="#555555"))
                    continue
                edges.append((fname, view, name, port))
            group.node(lid, _table(rows, fill, border))
            for fname, view, name, port in edges:
                colour = VIEW_COLOURS[self.views.index(view) % len(VIEW_COLOURS)]
                # loss wiring is thinner than the model's data flow, so the architecture reads first
                attrs: dict[str, str] = {"color": colour, "fontcolor": colour, "penwidth": "0.6", "arrowsize": "0.5"}
                if view != MAIN_VIEW:
                    attrs["style"] = "dashed"
                source, extra = self._source(name)
                extra = {k: v for k, v in extra.items() if k == "ltail"}
                text = fname + (f" [{view}]" if view != MAIN_VIEW else "") + (f" ← {port}" if port else "")
                self.g.edge(source, lid, label=escape(text), **attrs, **extra)

    # -- caption ----------------------------------------------------------------------
    def caption(self) -> None:
        if not (self.opt.title or self.opt.legend):
            return
        rows = ['<TR><TD HEIGHT="10"></TD></TR>']  # keeps the caption clear of the lowest node
        if self.opt.title:
            title = f"<B>{escape(self.bp.name)}</B>"
            if self.counts:
                size = self.bp.size  # the check's estimate: the model, and what only training uses
                title += f"  ·  {size.model_params:,} parameters" + (f" + {size.training_params:,} training-only" if size.training_params else "")
            rows.append(f'<TR><TD COLSPAN="20"><FONT POINT-SIZE="12">{title}</FONT></TD></TR>')
        if self.opt.legend:
            cells = []
            for fam in self.families:
                fill, border = family_colours(fam)
                cells.append(f'<TD BGCOLOR="{fill}" STYLE="ROUNDED" BORDER="1" COLOR="{border}"><FONT POINT-SIZE="8" COLOR="{border}">{fam}</FONT></TD>')
            marks = []
            if self.disabled:
                marks.append(f'<FONT COLOR="{DISABLED_COLOUR}">- - bypassed (enabled: false)</FONT>')
            if any(n.config.share for n in self.plan.nodes):
                marks.append(f'<FONT COLOR="{SHARE_COLOUR}">- - ⊙ shared weights</FONT>')
            if self.bp.search is not None and self.bp.search.space:
                marks.append(f'<FONT COLOR="{SEARCH_COLOUR}">◆ searched ({len(self.bp.search.space)} in search.space)</FONT>')
            for m in marks:
                cells.append(f'<TD><FONT POINT-SIZE="8">{m}</FONT></TD>')
            rows.append('<TR><TD COLSPAN="20"><TABLE BORDER="0" CELLSPACING="4" CELLPADDING="3"><TR>' + "".join(cells) + "</TR></TABLE></TD></TR>")
            if self.marks.other:
                text = "; ".join(f"{escape(k)} ∈ {escape(v)}" for k, v in self.marks.other.items())
                rows.append(f'<TR><TD COLSPAN="20"><FONT POINT-SIZE="8" COLOR="{SEARCH_COLOUR}">◆ also searched: {text}</FONT></TD></TR>')
            if len(self.views) > 1:
                parts = [f'<FONT COLOR="{VIEW_COLOURS[0]}">main: the batch as given</FONT>']
                for i, (name, view) in enumerate(self.bp.training.views.items(), start=1):
                    colour = VIEW_COLOURS[i % len(VIEW_COLOURS)]
                    rate = f"rate {value_text(view.rate_range)}" if view.rate_range else f"rate {value_text(view.rate)}"
                    on = ", ".join(view.modalities) if view.modalities else "all modalities"
                    parts.append(f'<FONT COLOR="{colour}">- - {escape(name)}: {escape(view.type)}, {escape(rate)} on {escape(on)}</FONT>')
                rows.append(f'<TR><TD COLSPAN="20"><FONT POINT-SIZE="8">training views — ' + ";  ".join(parts) + "</FONT></TD></TR>")
        self.g.attr(label='<<TABLE BORDER="0" CELLSPACING="2">' + "".join(rows) + "</TABLE>>", labelloc="b", labeljust="c")

    def build(self) -> graphviz.Digraph:
        self.modalities()
        self.blocks()
        self.data_edges()
        self.outputs()
        self.losses()
        if self.plan.losses or "aux_losses" in self.objective.source:
            self.g.subgraph(self.objective)
        self.caption()
        return self.g


def build_graph(bp, model=None, options: GraphOptions | None = None) -> graphviz.Digraph:
    """The Digraph of a checked blueprint (its plan); ``model`` (a ComposedModel of it) adds
    parameter counts and insides."""
    return _Builder(bp, model, options or GraphOptions()).build()
