"""Templates: named, parameterised sub-graphs used like blocks (``type: <template>``).

A blueprint (or a file it imports) defines templates under ``templates:``::

    templates:
      crossmodal_pair:                        # the name blocks use as their `type`
        params: {heads: 5, layers: 2}          # parameters and their defaults (null: required)
        inputs: [target, source]               # input ports, referenced inside by name
        blocks:                                # the sub-graph; `${heads}` reads a parameter
          ab: {type: crossmodal, in: {target: target, source: source}, heads: "${heads}", layers: "${layers}"}
          last: {type: pool, in: ab, mode: last}
        outputs: {out: last, seq: ab}          # output ports; `out` (or `main:`) is the bare reference

    blocks:
      pair: {type: crossmodal_pair, in: {target: proj_t, source: proj_a}, heads: 10, ab: {attn_dropout: 0.1}}
      head: {type: mlp, in: pair, out: 1}      # `pair` is its `out`; `pair.seq` the other port

Expansion happens on the raw data, before the schema and the graph checks, so shapes are
inferred through a template like through any blocks. A use ``pair`` of a template becomes the
blocks ``pair/ab`` and ``pair/last`` (nested uses: ``pair/inner/x``); the compiled model nests
their modules (``pair.ab.layers.0.fc1.weight``). A use takes the template's parameters and, per
inner block, a mapping of settings that override the template's (``ab: {attn_dropout: 0.1}``),
so ``--set blocks.pair.heads=10``, ``--set blocks.pair.ab.layers=3`` and search paths reach
inside. ``share: other_use`` ties every inner block to the same block of another use of the
same template (an inner override may also name any block: ``ab: {share: other/ab}``).
Problems inside a template are reported at the template's own file and line. A saved
blueprint (run folders, weights files) keeps the templates and their uses, with imported
templates written in, so it reloads on its own and ``--set`` paths keep working.

``imports: [path.yaml, ...]`` reads the templates of other files (such a file holds
``templates:`` and optionally ``imports:`` and ``description:``). A path is looked up relative
to the file that imports it, then in each folder of ``COMPOSER_IMPORT_PATH`` (separated by
``os.pathsep``) and the repository's ``blueprints/templates``; the file found (symbolic links
followed) must lie inside the top blueprint's folder or one of those folders, unless
``COMPOSER_ALLOW_ANY_IMPORT=1``. Files are read with the same bounded YAML reader as
blueprints (reading one never runs code), and the bounds on characters and values hold for a
blueprint and all its imports together; expansion is bounded by the total number of blocks
(``COMPOSER_MAX_BLOCKS``) and by the same values budget.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from composer.configs._limits import ANY_IMPORT, BLOCKS, IMPORT_PATH, VALUES
from composer.errors import BlueprintError, ComposerError, Problem, did_you_mean
from composer.ref import SEPARATOR, Ref

__all__ = ["TemplateConfig", "SEPARATOR", "TemplateUse", "inline_imports", "expand_templates", "expanded_block_path"]

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Fields of a use that are neither parameters nor inner-block overrides.
USE_FIELDS = ("type", "in", "share")
MAX_NESTING = 16
MAX_IMPORTED_FILES = 64
#: The template library of a source checkout (``blueprints/templates``), a folder imports may always read.
LIBRARY = Path(__file__).resolve().parents[2] / "blueprints" / "templates"


class TemplateConfig(BaseModel):
    """One template: a sub-graph with input ports, parameters and output ports."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    params: dict[str, Any] = Field(
        default_factory=dict, description="Parameter names and defaults (null: the use must give it); read inside as ${name}."
    )
    inputs: list[str] = Field(min_length=1, description="Input port names; blocks inside read them by name.")
    blocks: dict[str, dict[str, Any]] = Field(min_length=1, description="The sub-graph's blocks (any block type or template).")
    outputs: dict[str, str] = Field(min_length=1, description="Output port -> reference inside (a block, block.port or an input).")
    main: str | None = Field(default=None, description="The output a bare reference to a use means (default: `out`, or the only output).")

    def main_output(self) -> str | None:
        if self.main is not None:
            return self.main
        if "out" in self.outputs:
            return "out"
        return next(iter(self.outputs)) if len(self.outputs) == 1 else None


class TemplateUse(BaseModel):
    """What expansion knows about one use: its template and the ids of its inner blocks."""

    template: str
    params: list[str]
    inner: list[str]


# -- imports ---------------------------------------------------------------------------
def import_folders(base_dir: Path) -> list[Path]:
    """Folders ``imports:`` may read, resolved: the top blueprint's folder, each folder of
    ``COMPOSER_IMPORT_PATH`` and the repository's template library (when present)."""
    extra = [Path(p) for p in os.environ.get(IMPORT_PATH, "").split(os.pathsep) if p.strip()]
    folders: list[Path] = []
    for folder in [base_dir, *extra, LIBRARY]:
        try:
            resolved = folder.resolve()
        except (OSError, RuntimeError):
            continue
        if resolved.is_dir() and resolved not in folders:
            folders.append(resolved)
    return folders


def _resolve_import(text: str, base: Path, folders: list[Path]) -> Path | str:
    """The file an import names, or why it cannot be read: looked up next to the importing file
    (``base``), then in each allowed folder; it must lie inside an allowed folder."""
    raw = Path(text)
    candidates = [raw] if raw.is_absolute() else [base / raw, *(folder / raw for folder in folders)]
    anywhere = os.environ.get(ANY_IMPORT, "").strip() not in ("", "0")
    outside = None
    for candidate in candidates:
        try:
            path = candidate.resolve(strict=True)
        except FileNotFoundError:
            continue
        except (OSError, RuntimeError) as exc:  # a symbolic link loop, a name too long...
            return f"cannot import '{text}': {type(exc).__name__}: {str(exc)[:120]} (a symbolic link loop?)"
        if anywhere or any(path.is_relative_to(folder) for folder in folders):
            return path
        outside = outside or path
    where = ", ".join(str(f) for f in folders)
    if outside is not None:
        return (f"cannot import '{text}': it is {outside}, outside the folders imports may read ({where}); "
                f"add its folder to {IMPORT_PATH} or set {ANY_IMPORT}=1 to read it")
    return f"cannot import '{text}': no such file next to the importing file or in {where} (folders come from {IMPORT_PATH})"


def inline_imports(data: dict, smap, base_dir: Path, read_text: Callable[[Path], str], read_yaml) -> list[Problem]:
    """Move the templates of every imported file (recursively) into ``data['templates']``.

    Their source lines are copied into ``smap`` under ``templates.<name>`` with their own file,
    so a problem inside an imported template points at that file. Files are found and confined
    as :func:`import_folders` says, and read against ``smap.budget`` (the blueprint's bounds on
    characters and values hold for all its files together). Returns the problems found."""
    problems: list[Problem] = []
    imports = data.pop("imports", None)
    if imports is None:
        return problems
    if not isinstance(imports, list) or not all(isinstance(p, str) for p in imports):
        return [Problem(("imports",), "`imports` is a list of template file paths")]
    templates = data.setdefault("templates", {})
    if not isinstance(templates, dict):
        return problems  # reported by the template checks
    origin = {name: smap.file or "<blueprint>" for name in templates}
    seen: set[Path] = set()
    folders = import_folders(base_dir)
    budget = getattr(smap, "budget", None)

    def visit(paths: list, where: tuple, base: Path, chain: tuple[Path, ...]) -> None:
        for i, text in enumerate(paths):
            place = where + (i,)
            if not isinstance(text, str) or not text.endswith((".yaml", ".yml")):
                problems.append(Problem(place, f"{text!r}: an import is the path of a .yaml file of templates"))
                continue
            path = _resolve_import(text, base, folders)
            if isinstance(path, str):
                problems.append(Problem(place, path))
                continue
            if path in chain:
                problems.append(Problem(place, f"import cycle: {' -> '.join(p.name for p in chain + (path,))}"))
                continue
            if path in seen:
                continue
            seen.add(path)
            if len(seen) > MAX_IMPORTED_FILES:
                problems.append(Problem(place, f"more than {MAX_IMPORTED_FILES} imported files"))
                return
            try:
                sub, sub_map = read_yaml(read_text(path), str(path), budget=budget)
            except BlueprintError as exc:
                problems.extend(exc.problems)
                if budget is not None and budget.spent():
                    raise _Stop() from None  # the blueprint's budget is spent: no further file is read
                continue
            except ComposerError as exc:
                problems.append(Problem(place, f"cannot import '{text}': {exc}"))
                continue
            if not isinstance(sub, dict) or not isinstance(sub.get("templates"), dict) or set(sub) - {"templates", "imports", "description"}:
                extra = sorted(set(sub) - {"templates", "imports", "description"}) if isinstance(sub, dict) else []
                problems.append(Problem(place, (
                    f"'{text}' is not a template file: it holds `templates:` (and optionally `imports:`, `description:`)"
                    + (f"; it also has {', '.join(map(str, extra))}" if extra else "")
                )))
                continue
            for name, body in sub["templates"].items():
                if name in templates:
                    problems.append(Problem(place, f"template '{name}' from '{text}' is already defined in {origin[name]}"))
                    continue
                templates[name] = body
                origin[name] = str(path)
                for key, line in sub_map.lines.items():
                    if key[:2] == ("templates", name):
                        smap.lines[key] = line
                        smap.files[key] = str(path)
            nested = sub.get("imports")
            if nested is not None:
                if not isinstance(nested, list):
                    problems.append(Problem(place, f"'{text}': `imports` is a list of paths"))
                else:
                    visit(nested, place, path.parent, chain + (path,))

    try:
        visit(imports, ("imports",), base_dir, ())
    except _Stop:
        pass
    return problems


class _Stop(Exception):
    """A budget is spent: stop reading or expanding (the problem is already recorded)."""


# -- expansion -------------------------------------------------------------------------
class _Expander:
    def __init__(self, data: dict, smap, substitute_tree, global_vars: dict, block_types: set[str], loss_ref_fields):
        self.data, self.smap = data, smap
        self.substitute_tree, self.global_vars = substitute_tree, global_vars
        self.block_types, self.loss_ref_fields = block_types, loss_ref_fields
        self.problems: list[Problem] = []
        self.templates: dict[str, TemplateConfig] = {}
        self.blocks: dict[str, Any] = {}
        self.uses: dict[str, TemplateUse] = {}
        self.use_outputs: dict[str, dict[str, str]] = {}  # use id -> port -> reference (may name other uses)
        self.use_main: dict[str, str | None] = {}
        self.use_shares: list[tuple[str, str, tuple]] = []
        self.members: dict[str, list[str]] = {}  # use id -> the expanded block ids inside it (nested uses too)
        self.children: dict[tuple, list[tuple]] = {}  # source-map path -> its child paths (for copy_lines)
        self.max_blocks = BLOCKS.value()
        self.budget = getattr(smap, "budget", None)

    # templates ------------------------------------------------------------------------
    def read_templates(self) -> None:
        raw = self.data.pop("templates", {})
        if not isinstance(raw, dict):
            self.problems.append(Problem(("templates",), "`templates` is a mapping of template names to definitions"))
            return
        for name, body in raw.items():
            where = ("templates", name)
            if not NAME_RE.match(str(name)):
                self.problems.append(Problem(where, f"'{name}' cannot name a template (letters, digits and '_')"))
                continue
            if name in self.block_types:
                self.problems.append(Problem(where, f"template '{name}' has the name of a built-in block type; name it otherwise"))
                continue
            try:
                t = TemplateConfig.model_validate(body)
            except ValidationError as exc:
                for err in exc.errors():
                    self.problems.append(Problem(where + tuple(err["loc"]), err["msg"]))
                continue
            names = {"params": list(t.params), "inputs": t.inputs, "blocks": list(t.blocks)}
            for section, items in names.items():
                for item in items:
                    if not NAME_RE.match(str(item)) or item in USE_FIELDS:
                        self.problems.append(Problem(where + (section, item), f"'{item}' cannot name a template {section[:-1]} (letters, digits, '_'; not type/in/share)"))
            for a, b in (("params", "blocks"), ("inputs", "blocks"), ("params", "inputs")):
                for item in set(names[a]) & set(names[b]):
                    self.problems.append(Problem(where + (a, item), f"'{item}' is both one of the template's {a} and one of its {b}"))
            if t.main is not None and t.main not in t.outputs:
                self.problems.append(Problem(where + ("main",), f"'{t.main}' is not an output (outputs: {', '.join(t.outputs)})", did_you_mean(t.main, list(t.outputs))))
            self.templates[name] = t

    # uses -------------------------------------------------------------------------------
    def expand_all(self) -> None:
        blocks = self.data.get("blocks")
        if not isinstance(blocks, dict):
            return
        for key in self.smap.lines:
            self.children.setdefault(key[:-1], []).append(key)
        try:
            for bid, cfg in blocks.items():
                if self.is_use(cfg):
                    self.expand(str(bid), cfg, [("blocks", bid)], (), cfg["type"])
                else:
                    self.add_block(bid, cfg, ("blocks", bid))
        except _Stop:
            return
        for use, other, where in self.use_shares:
            self.share_use(use, other, where)
        self.resolve_share_chains()
        self.blocks = {bid: self.rewrite_block(bid, cfg) for bid, cfg in self.blocks.items()}
        self.data["blocks"] = self.blocks
        if isinstance(self.data.get("outputs"), dict):
            self.data["outputs"] = {
                name: self.outer(text, ("outputs", name)) if isinstance(text, str) else text for name, text in self.data["outputs"].items()
            }
        if isinstance(self.data.get("losses"), list):
            for i, loss in enumerate(self.data["losses"]):
                if isinstance(loss, dict):
                    for field in self.loss_ref_fields(loss.get("type")):
                        if isinstance(loss.get(field), str):
                            loss[field] = self.outer_loss_ref(loss[field], ("losses", i, field))

    def is_use(self, cfg: Any) -> bool:
        return isinstance(cfg, dict) and isinstance(cfg.get("type"), str) and cfg["type"] in self.templates

    def add_block(self, bid: str, cfg: Any, where: tuple) -> None:
        """Record one block of the expanded blueprint, within the budgets of blocks and values."""
        self.blocks[bid] = cfg
        if len(self.blocks) > self.max_blocks:
            self.problems.append(Problem(where, f"the templates expand to more than {self.max_blocks:,} blocks; {BLOCKS.exceeded(len(self.blocks), self.max_blocks)}"))
            raise _Stop()
        if self.budget is not None and SEPARATOR in str(bid):
            n = _count_values(cfg, self.budget.max_nodes - self.budget.nodes + 1)
            if self.budget.nodes + n > self.budget.max_nodes:
                self.problems.append(Problem(where, (
                    f"the templates expand to more than {self.budget.max_nodes:,} values (with the blueprint and its imports); "
                    f"{VALUES.exceeded(self.budget.nodes + n, self.budget.max_nodes)}")))
                raise _Stop()
            self.budget.nodes += n
        parts = str(bid).split(SEPARATOR)
        for k in range(1, len(parts)):
            self.members.setdefault(SEPARATOR.join(parts[:k]), []).append(bid)

    def expand(self, use_id: str, cfg: dict, sources: list[tuple], stack: tuple[str, ...], name: str) -> None:
        """Expand one use of template ``name`` under the id ``use_id`` (``sources``: where its settings are written)."""
        where = sources[-1]
        t = self.templates[name]
        if name in stack or len(stack) >= MAX_NESTING:
            chain = " -> ".join(stack + (name,))
            self.problems.append(Problem(where + ("type",), f"template '{name}' uses itself: {chain}" if name in stack else f"templates nested more than {MAX_NESTING} deep"))
            return
        values, overrides = self.read_use(use_id, cfg, t, where)
        in_map = self.input_map(cfg.get("in"), t, where)
        self.uses[use_id] = TemplateUse(template=name, params=list(t.params), inner=list(t.blocks))
        self.use_main[use_id] = t.main_output()
        lookup_values = {**self.global_vars, **values}
        inner_ids = set(t.blocks)
        for inner, body in t.blocks.items():
            inner_path = ("templates", name, "blocks", inner)
            body = self.substitute_tree(copy.deepcopy(body), lookup_values, inner_path, self.problems)
            override = overrides.get(inner)
            inner_sources = [inner_path] + [s + (inner,) for s in sources]
            if override is not None:
                if not isinstance(override, dict):
                    self.problems.append(Problem(where + (inner,), f"settings of inner block '{inner}' are a mapping, got {override!r}"))
                else:
                    body = {**body, **copy.deepcopy(override)}
            full = f"{use_id}{SEPARATOR}{inner}"
            body["in"] = self.inner_refs(body.get("in"), use_id, inner_ids, t, in_map, inner_path + ("in",))
            if isinstance(body.get("share"), str):
                if body["share"] in inner_ids:
                    body["share"] = f"{use_id}{SEPARATOR}{body['share']}"
                elif isinstance(override, dict) and "share" in override:
                    pass  # written at the use, outside the template: a block id of the blueprint (e.g. layer1/to_text)
                else:
                    self.problems.append(Problem(inner_path + ("share",), f"inside a template, `share` names another block of the template ({', '.join(sorted(inner_ids))})", did_you_mean(body["share"], inner_ids)))
            if self.is_use(body):
                self.expand(full, body, inner_sources, stack + (name,), body["type"])
            else:
                self.add_block(full, body, where)
                self.copy_lines(("blocks", full), inner_sources)
        self.use_outputs[use_id] = {
            port: self.inner_ref(text, use_id, inner_ids, t, in_map, ("templates", name, "outputs", port)) for port, text in t.outputs.items()
        }
        if isinstance(cfg.get("share"), str):
            self.use_shares.append((use_id, cfg["share"], where + ("share",)))  # inside a template: already a full id

    def read_use(self, use_id: str, cfg: dict, t: TemplateConfig, where: tuple) -> tuple[dict, dict]:
        values: dict[str, Any] = {}
        overrides: dict[str, Any] = {}
        for key, value in cfg.items():
            if key in USE_FIELDS:
                continue
            if key in t.params:
                values[key] = value
            elif key in t.blocks:
                overrides[key] = value
            else:
                known = list(t.params) + list(t.blocks)
                self.problems.append(Problem(where + (key,), (
                    f"template '{cfg['type']}' has no parameter or block '{key}' "
                    f"(parameters: {', '.join(t.params) or 'none'}; blocks: {', '.join(t.blocks)})"
                ), did_you_mean(str(key), known)))
        for key, default in t.params.items():
            if key not in values:
                if default is None:
                    self.problems.append(Problem(where, f"template '{cfg['type']}' needs the parameter '{key}'"))
                values[key] = default
            elif default is not None and not _same_kind(default, values[key]):
                self.problems.append(Problem(where + (key,), f"parameter '{key}' of template '{cfg['type']}' is a {_kind(default)} (default {default!r}), got {values[key]!r}"))
        return values, overrides

    def input_map(self, given: Any, t: TemplateConfig, where: tuple) -> dict[str, str]:
        ports = t.inputs
        if isinstance(given, str) and len(ports) == 1:
            return {ports[0]: given}
        if isinstance(given, list) and len(given) == len(ports) and all(isinstance(g, str) for g in given):
            return dict(zip(ports, given))
        if isinstance(given, dict) and set(given) == set(ports) and all(isinstance(g, str) for g in given.values()):
            return dict(given)
        self.problems.append(Problem(where + ("in",), (
            f"this template takes the inputs {', '.join(ports)}: give `in` as "
            + ("one reference" if len(ports) == 1 else f"a list of {len(ports)} references or a mapping of those ports")
            + f", got {given!r}"
        )))
        return {}

    def inner_refs(self, refs: Any, use_id: str, inner_ids: set[str], t: TemplateConfig, in_map: dict, where: tuple) -> Any:
        if isinstance(refs, str):
            return self.inner_ref(refs, use_id, inner_ids, t, in_map, where)
        if isinstance(refs, list):
            return [self.inner_ref(r, use_id, inner_ids, t, in_map, where + (i,)) if isinstance(r, str) else r for i, r in enumerate(refs)]
        if isinstance(refs, dict):
            return {k: self.inner_ref(r, use_id, inner_ids, t, in_map, where + (k,)) if isinstance(r, str) else r for k, r in refs.items()}
        return refs

    def inner_ref(self, text: str, use_id: str, inner_ids: set[str], t: TemplateConfig, in_map: dict, where: tuple) -> str:
        ref = Ref.parse(text)
        source = ref.source
        if source in t.inputs:
            if ref.port is not None:
                self.problems.append(Problem(where, f"'{text}': input '{source}' of the template has no ports"))
            return in_map.get(source, text)
        if source in inner_ids:
            return f"{use_id}{SEPARATOR}{text}"
        self.problems.append(Problem(where, (
            f"unknown reference '{text}' inside a template (its inputs: {', '.join(t.inputs)}; its blocks: {', '.join(sorted(inner_ids))})"
        ), did_you_mean(source, list(t.inputs) + sorted(inner_ids))))
        return text

    def share_use(self, use: str, other: str, where: tuple) -> None:
        if other not in self.uses or self.uses[other].template != self.uses[use].template:
            uses = [u for u, info in self.uses.items() if info.template == self.uses[use].template and u != use]
            self.problems.append(Problem(where, (
                f"'{other}' is not a use of template '{self.uses[use].template}'; a template use shares with another use of the same template"
                + (f" ({', '.join(uses)})" if uses else "")
            ), did_you_mean(other, uses)))
            return
        prefix, other_prefix = use + SEPARATOR, other + SEPARATOR
        for bid in self.members.get(use, []):
            cfg = self.blocks[bid]
            if isinstance(cfg, dict) and "share" not in cfg:
                cfg["share"] = other_prefix + bid[len(prefix):]

    def resolve_share_chains(self) -> None:
        """A block sharing with a block that itself shares (a use sharing with another use whose
        blocks share inside the template) shares with the final owner, as the graph requires."""
        final: dict[str, str] = {}  # block id -> its final owner, so each chain is walked once
        for cfg in self.blocks.values():
            if not isinstance(cfg, dict) or not isinstance(cfg.get("share"), str):
                continue
            owner, walked = cfg["share"], []
            while owner not in final and isinstance(self.blocks.get(owner), dict) and isinstance(self.blocks[owner].get("share"), str) and owner not in walked:
                walked.append(owner)
                owner = self.blocks[owner]["share"]
            owner = final.get(owner, owner)
            final.update((w, owner) for w in walked)
            cfg["share"] = owner

    # references from outside a use ------------------------------------------------------
    def outer(self, text: str, where: tuple, depth: int = 0) -> str:
        """A reference that may name a template use (``pair``, ``pair.seq``) -> the block value it means."""
        ref = Ref.parse(text)
        source, port = ref.source, ref.port
        if source not in self.uses or depth > MAX_NESTING:
            return text
        ports = self.use_outputs.get(source, {})
        if port is None:
            port = self.use_main.get(source)
            if port is None:
                self.problems.append(Problem(where, f"template use '{source}' has several outputs ({', '.join(ports)}); name one as '{source}.<port>'", f"{source}.{next(iter(ports), 'out')}"))
                return text
        if port not in ports:
            self.problems.append(Problem(where, f"template use '{source}' has no output '{port}' (outputs: {', '.join(ports)})", did_you_mean(port, list(ports))))
            return text
        return self.outer(ports[port], where, depth + 1)

    def outer_loss_ref(self, text: str, where: tuple) -> str:
        ref = Ref.parse(text)
        inner = self.outer(ref.key, where)
        return inner if ":" not in text else f"{ref.view}:{inner}"

    def rewrite_block(self, bid: str, cfg: Any) -> Any:
        if not isinstance(cfg, dict):
            return cfg
        refs = cfg.get("in")
        where = ("blocks", bid, "in")
        if isinstance(refs, str):
            cfg["in"] = self.outer(refs, where)
        elif isinstance(refs, list):
            cfg["in"] = [self.outer(r, where + (i,)) if isinstance(r, str) else r for i, r in enumerate(refs)]
        elif isinstance(refs, dict):
            cfg["in"] = {k: self.outer(r, where + (k,)) if isinstance(r, str) else r for k, r in refs.items()}
        return cfg

    def copy_lines(self, target: tuple, sources: list[tuple]) -> None:
        """Give the expanded block the source lines of where its settings were written (later wins)."""
        lines, files = self.smap.lines, self.smap.files
        for source in sources:
            n = len(source)
            todo = [source]  # the paths under `source`, through the index of the written paths
            while todo:
                key = todo.pop()
                todo.extend(self.children.get(key, ()))
                if key not in lines:
                    continue
                new = target + key[n:]
                lines[new] = lines[key]
                if key in files:
                    files[new] = files[key]
                else:
                    files.pop(new, None)


def _count_values(node: Any, cap: int) -> int:
    """Values in ``node`` (each occurrence of a shared list counts), counting stops past ``cap``."""
    count, todo = 0, [node]
    while todo and count <= cap:
        item = todo.pop()
        count += 1
        if isinstance(item, dict):
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
    return count


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return "mapping" if isinstance(value, dict) else type(value).__name__


def _same_kind(default: Any, value: Any) -> bool:
    if isinstance(value, str) and "${" in value:
        return True  # an unresolved expression is reported where it is
    if _kind(default) == "number":
        return _kind(value) in ("number", "integer")
    return _kind(default) == _kind(value)


def expand_templates(data: dict, smap, substitute_tree, global_vars: dict, block_types: set[str], loss_ref_fields) -> tuple[dict[str, TemplateUse], list[Problem]]:
    """Replace every use of a template in ``data['blocks']`` by its blocks, in place.

    ``substitute_tree(node, values, path, problems)`` resolves ``${...}`` with the use's
    parameters (over the blueprint's ``vars``); ``loss_ref_fields(type)`` names the reference
    fields of a loss type. Returns the uses (id -> template) and the problems found."""
    expander = _Expander(data, smap, substitute_tree, global_vars, block_types, loss_ref_fields)
    expander.read_templates()
    if not expander.problems and expander.templates:
        expander.expand_all()
    unique = {(p.path, p.message): p for p in expander.problems}  # a mistake in a template shows once, not once per use
    return expander.uses, list(unique.values())


def expanded_block_path(path: list, uses: dict[str, TemplateUse], blocks: dict) -> list | None:
    """A path written against template uses (``blocks.pair.ab.layers``) as a path of the expanded
    blueprint (``blocks.pair/ab.layers``); ``None`` when it names a use's parameter (which exists
    only before expansion). Other paths are returned unchanged."""
    if len(path) < 3 or path[0] != "blocks" or path[1] in blocks:
        return path
    block = str(path[1])
    rest = list(path[2:])
    while block in uses and rest:
        head = str(rest.pop(0))
        if head in uses[block].params:
            return None
        block = f"{block}{SEPARATOR}{head}"
        if block in blocks:
            return ["blocks", block, *rest]
    return path
