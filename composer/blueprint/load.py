"""Load a blueprint: YAML -> overrides -> schema -> graph and shapes, every problem at once.

``load_blueprint(path_or_text, overrides=["blocks.fusion.stages=4"])`` returns a validated
blueprint (a Pydantic model) or raises :class:`~composer.errors.BlueprintError` with all the
problems found, each with its YAML path, ``file:line`` and a suggestion where one exists.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Iterable

from pydantic import ValidationError

from composer.registry import get_block, get_loss, list_blocks, list_losses, load_plugins, plugins_allowed
from composer.blueprint._yaml import SourceMap, read_yaml
from composer.configs._limits import YAML_CHARS
from composer.errors import BlueprintError, ComposerError, Problem, did_you_mean
from composer.ref import BATCH_REFS, Ref
from composer.blueprint.expr import ExprError, substitute
from composer.blueprint.check import CheckedBlueprint, check
from composer.blueprint.paths import apply_override, apply_setting, get_path, resolve_path, set_path, split_path
from composer.blueprint.templates import expand_templates, inline_imports

__all__ = ["load_blueprint", "read_blueprint_text", "resolve_path", "variable_values", "make_lookup", "validate_data", "apply_override", "dump_blueprint", "get_path", "set_path"]

#: A block id: a name, or the ``use/inner`` ids of blocks expanded from templates.
BLOCK_ID_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$")


# -- error translation ----------------------------------------------------------------
def _strip_tags(loc: tuple, data: dict) -> tuple:
    """Remove pydantic's union tags: ('blocks','f','msaf','hidden') -> ('blocks','f','hidden')."""
    loc = list(loc)
    out: list = []
    i = 0
    while i < len(loc):
        out.append(loc[i])
        i += 1
        if len(out) == 2 and out[0] in ("blocks", "losses"):
            try:
                node = get_path(data, out)
            except (KeyError, IndexError, TypeError):
                node = None
            if isinstance(node, dict) and i < len(loc) and loc[i] == node.get("type"):
                i += 1
    # function-after / nested wrappers in loc have names like 'function-after[...]'
    return tuple(p for p in out if not (isinstance(p, str) and ("[" in p and "]" in p and "-" in p)))


def _field_names(data: dict, loc: tuple) -> list[str]:
    """Known field names at the mapping that holds ``loc[-1]`` (for did-you-mean)."""
    from composer.blueprint.schema import blueprint_model

    parent = loc[:-1]
    model: Any = blueprint_model()
    if len(parent) >= 2 and parent[0] == "blocks":
        try:
            model = get_block(get_path(data, parent[:2]).get("type")).config
        except Exception:
            return []
        parent = parent[2:]
    elif len(parent) >= 2 and parent[0] == "losses":
        from composer.registry import get_loss

        try:
            model = get_loss(get_path(data, parent[:2]).get("type")).config
        except Exception:
            return []
        parent = parent[2:]
    for part in parent:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        inner = getattr(ann, "model_fields", None)
        if inner is None:
            args = [a for a in getattr(ann, "__args__", ()) if hasattr(a, "model_fields")]
            if not args:
                return []
            ann = args[-1]
        model = ann
    fields = getattr(model, "model_fields", {})
    return [f.alias or name for name, f in fields.items()]


def _problem_from_pydantic(err: dict, data: dict) -> Problem:
    loc = _strip_tags(tuple(err["loc"]), data)
    kind = err["type"]
    msg = err["msg"]
    hint = None
    if kind == "union_tag_invalid" or kind == "union_tag_not_found":
        tag = (err.get("ctx") or {}).get("tag")
        family = "loss" if loc and loc[0] == "losses" else "block"
        names = [e.name for e in (list_losses() if family == "loss" else list_blocks())]
        if kind == "union_tag_not_found":
            msg = f"missing `type`: every {family} names its type (one of: {', '.join(names)})"
        else:
            msg = f"unknown {family} type '{tag}'"
            hint = did_you_mean(str(tag), names)
            plugins = data.get("plugins") if isinstance(data.get("plugins"), list) else []
            if plugins:
                msg += (f"; if one of this blueprint's plugins ({', '.join(map(str, plugins))}) registers it, "
                        "pass --allow-plugins (Python: allow_plugins=True) to import them")
            elif hint is None:
                msg += f" (known: {', '.join(names)})"
        loc = loc + ("type",)
    elif kind == "extra_forbidden":
        key = loc[-1]
        known = _field_names(data, loc)
        hint = did_you_mean(str(key), known)
        msg = f"unknown field '{key}'" + (f"; expected one of: {', '.join(known)}" if known and hint is None else "")
    elif kind == "missing":
        msg = f"missing required field '{loc[-1]}'"
    elif kind == "literal_error":
        expected = (err.get("ctx") or {}).get("expected", "")
        got = err.get("input")
        options = [o.strip().strip("'") for o in str(expected).replace(" or ", ",").split(",")]
        hint = did_you_mean(str(got), options)
        msg = f"got {got!r}, expected {expected}"
    elif kind.startswith("value_error"):
        msg = msg.removeprefix("Value error, ")
    else:
        got = err.get("input")
        if not isinstance(got, (dict, list)):
            msg = f"{msg} (got {got!r})"
    return Problem(tuple(loc), msg, hint)


def _fill_shared(data: dict) -> None:
    """A block with ``share: owner`` inherits the owner's settings it does not restate."""
    blocks = data.get("blocks")
    if not isinstance(blocks, dict):
        return
    for cfg in blocks.values():
        if isinstance(cfg, dict) and isinstance(cfg.get("share"), str):
            owner = blocks.get(cfg["share"])
            if isinstance(owner, dict) and cfg.get("type", owner.get("type")) == owner.get("type"):
                for key, value in owner.items():
                    if key not in ("in", "share", "enabled"):
                        cfg.setdefault(key, copy.deepcopy(value))


def variable_values(data: dict) -> tuple[dict[str, Any], list[Problem]]:
    """The ``vars:`` of raw data with their own ``${...}`` resolved (a variable may use earlier ones)."""
    raw = data.get("vars", {})
    if not isinstance(raw, dict):
        return {}, [Problem(("vars",), "`vars` is a mapping of names to values")]
    values: dict[str, Any] = {}
    problems: list[Problem] = []
    for name, value in raw.items():
        later = [str(n) for n in list(raw)[list(raw).index(name):]]  # itself and the ones after it
        values[name] = _substitute_tree(value, make_lookup(values, later=later), ("vars", name), problems)
    return values, problems


def make_lookup(values: dict[str, Any], data: dict | None = None, later: list[str] | None = None):
    """Name lookup for expressions: variables by name (or ``vars.name``), and with ``data`` any
    dotted blueprint path (``blocks.moe.experts``). ``later``: variables defined further down
    (a variable may use only the ones above it)."""

    def lookup(name: str) -> Any:
        key = name.removeprefix("vars.")
        if key in values:
            return values[key]
        if later and key in later:
            where = "itself" if key == later[0] else f"'{key}', which is defined after it"
            raise ExprError(f"a variable may use only the variables above it; this one uses {where} (move '{key}' up)")
        if data is not None and "." in name:
            try:
                return get_path(data, resolve_path(data, split_path(name)))
            except (KeyError, IndexError, TypeError, BlueprintError, ComposerError):
                pass
        error = ExprError(f"unknown variable '{name}'" + ("" if values else " (the blueprint defines no `vars:`)"))
        error.suggestion = did_you_mean(key, list(values))
        raise error

    return lookup


def _substitute_tree(node: Any, lookup, path: tuple, problems: list[Problem]) -> Any:
    """``node`` with every ``${...}`` string replaced by its value; a failing one becomes a problem at ``path``."""
    if isinstance(node, str) and "${" in node:
        try:
            return substitute(node, lookup)
        except ExprError as exc:
            problems.append(Problem(path, f"{node!r}: {exc}", getattr(exc, "suggestion", None)))
            return node
    if isinstance(node, dict):
        return {k: _substitute_tree(v, lookup, path + (k,), problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute_tree(v, lookup, path + (i,), problems) for i, v in enumerate(node)]
    return node


def _resolve_vars(data: dict) -> tuple[dict[str, Any], list[Problem]]:
    """Replace every ``${...}`` outside ``vars``, ``search`` and ``templates`` (whose ``${...}``
    read their parameters when a use is expanded) by its value, in place; returns the variables."""
    values, problems = variable_values(data)
    if problems:
        return values, problems
    if "vars" in data:
        data["vars"] = values
    lookup = make_lookup(values)
    for key in list(data):
        if key not in ("vars", "search", "templates"):
            data[key] = _substitute_tree(data[key], lookup, (key,), problems)
    return values, problems


def _loss_ref_fields(loss_type: Any) -> tuple[str, ...]:
    try:
        config = get_loss(str(loss_type)).config
    except (KeyError, ComposerError):
        return ()
    return tuple(config.ref_fields) + tuple(config.optional_ref_fields)


def _imports(data: dict, smap: SourceMap) -> list[Problem]:
    """Read the templates of the imported files into ``data`` (paths relative to the blueprint's file)."""
    base = Path(smap.file).parent if smap.file and Path(smap.file).is_file() else Path.cwd()
    return inline_imports(data, smap, base, read_blueprint_text, read_yaml)


def _expand(data: dict, smap: SourceMap, values: dict[str, Any]) -> tuple[dict, list[Problem]]:
    """Expand every use of a template (see :mod:`composer.blueprint.templates`)."""
    if "templates" not in data:
        return {}, []
    substitute = lambda node, params, path, found: _substitute_tree(node, make_lookup(params), path, found)
    return expand_templates(data, smap, substitute, values, {e.name for e in list_blocks()}, _loss_ref_fields)


def _raw_reference_problems(data: dict) -> list[Problem]:
    """Dangling references found on raw data (so they are reported with schema errors)."""
    blocks = data.get("blocks") if isinstance(data.get("blocks"), dict) else {}
    modalities = data.get("modalities") if isinstance(data.get("modalities"), dict) else {}
    names = list(modalities) + list(blocks)
    problems = []
    for bid, cfg in blocks.items():
        if not isinstance(cfg, dict):
            continue
        ins = cfg.get("in")
        items = [((), ins)] if isinstance(ins, str) else list(enumerate(ins)) if isinstance(ins, list) else list(ins.items()) if isinstance(ins, dict) else []
        for key, ref in items:
            if not isinstance(ref, str):
                continue
            src = Ref.parse(ref).source
            if src not in names and ref not in BATCH_REFS:
                where = ("blocks", bid, "in") + ((key,) if key != () else ())
                problems.append(Problem(where, f"unknown reference '{ref}' (expected a modality or block id)", did_you_mean(src, names)))
    return problems


def validate_data(data: Any, smap: SourceMap | None = None, *, allow_plugins: bool | None = None) -> CheckedBlueprint:
    """Imports, variables, templates and the schema on raw data, then every check
    (:func:`composer.blueprint.check.check`); returns the :class:`CheckedBlueprint`."""
    from composer.blueprint.schema import RESERVED_IDS, block_id_clash, blueprint_model

    smap = smap or SourceMap()
    if not isinstance(data, dict):
        raise BlueprintError([smap.locate(Problem((), "a blueprint is a YAML mapping with `blueprint: 1`, `name`, `modalities`, `blocks`"))])
    if (plugins_allowed() if allow_plugins is None else allow_plugins) and isinstance(data.get("plugins"), list):
        load_plugins([str(p) for p in data["plugins"]])
    data = copy.deepcopy(data)
    smap = smap.copy()  # expansion adds the lines of expanded blocks to this call's map only
    problems = _imports(data, smap)
    if problems:
        raise BlueprintError([smap.locate(p) for p in problems])
    written = copy.deepcopy(data) if data.get("templates") else None  # what dump_blueprint writes back
    values, problems = _resolve_vars(data)
    if problems:
        raise BlueprintError([smap.locate(p) for p in problems])
    uses, problems = _expand(data, smap, values)
    if problems:
        raise BlueprintError([smap.locate(p) for p in problems])
    _fill_shared(data)
    blocks = data.get("blocks") if isinstance(data.get("blocks"), dict) else {}
    for bid in blocks:
        if not BLOCK_ID_RE.match(str(bid)) or bid in RESERVED_IDS:
            problems.append(Problem(("blocks", bid), f"'{bid}' cannot be a block id (letters, digits and '_'; not a reserved word: {', '.join(sorted(RESERVED_IDS))})"))
        elif (clash := block_id_clash(bid)) is not None:
            problems.append(Problem(("blocks", bid), (
                f"'{clash}' cannot name a block: the compiled model is a torch.nn.Module and has an attribute "
                f"'{clash}' (names starting with '_' are its machinery's too); rename it, e.g. '{clash.strip('_')}_block'"
            )))
        if isinstance(data.get("modalities"), dict) and bid in data["modalities"]:
            problems.append(Problem(("blocks", bid), f"'{bid}' is both a modality and a block id"))
    try:
        bp = blueprint_model().model_validate(data)
    except ValidationError as exc:
        problems += [_problem_from_pydantic(e, data) for e in exc.errors()]
        problems += _raw_reference_problems(data)
        problems += _problems_beyond_the_schema(data, exc.errors())
        raise BlueprintError([smap.locate(p) for p in _dedupe(problems)]) from None
    if problems:
        raise BlueprintError([smap.locate(p) for p in problems])
    return check(bp, smap, uses, written)


def _problems_beyond_the_schema(data: dict, errors: list[dict]) -> list[Problem]:
    """Graph and shape problems of the blocks that passed the schema, when only blocks failed it.

    The failed blocks are left out (their consumers are skipped), so one report holds every
    independent mistake instead of one round of ``validate`` per layer."""
    from composer.blueprint.schema import blueprint_model
    from composer.graph.plan import plan

    blocks = data.get("blocks")
    if not isinstance(blocks, dict) or not errors:
        return []
    bad = set()
    for err in errors:
        loc = err["loc"]
        if len(loc) < 2 or loc[0] != "blocks" or loc[1] not in blocks:
            return []  # a problem outside the blocks: the rest cannot be checked reliably
        bad.add(loc[1])
    rest = {k: v for k, v in blocks.items() if k not in bad}
    if not rest:
        return []
    try:
        bp = blueprint_model().model_validate({**data, "blocks": rest})
        plan(bp, invalid=frozenset(bad))
    except BlueprintError as exc:
        return [p for p in exc.problems if p.severity == "error"]
    except (ValidationError, ComposerError):
        return []
    return []


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen, out = set(), []
    for p in problems:
        key = (p.path, p.message)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


# -- public entry points ----------------------------------------------------------------
def load_blueprint(
    blueprint: str | Path | dict,
    overrides: Iterable[str] = (),
    *,
    source: str | None = None,
    allow_plugins: bool | None = None,
    dataset: str | None = None,
) -> CheckedBlueprint:
    """Load and check a blueprint from a path, YAML text or a dict.

    ``allow_plugins``: import the modules under the blueprint's ``plugins:`` (default: this
    process's policy, :func:`composer.registry.allow_plugins`; never otherwise).
    ``dataset``: apply that entry of the blueprint's ``datasets:`` first (also chosen by an
    override ``dataset=NAME``, i.e. ``--dataset NAME``, or ``dataset: NAME`` in the file).
    ``overrides`` are ``path=value`` strings (values read as YAML), applied after it. Raises
    :class:`~composer.errors.BlueprintError` listing every problem.
    """
    if isinstance(blueprint, dict):
        data, smap = copy.deepcopy(blueprint), SourceMap(source)
    else:
        text, name = _read_source(blueprint)
        data, smap = read_yaml(text, source or name)
    overrides = list(overrides)
    chosen = dataset or next((o.partition("=")[2].strip() for o in reversed(overrides) if o.partition("=")[0].strip() == "dataset"), None)
    problems = apply_dataset(data, chosen or data.get("dataset")) if isinstance(data, dict) else []
    if problems:
        raise BlueprintError([smap.locate(p) for p in problems])
    for item in overrides:
        if item.partition("=")[0].strip() == "dataset":
            continue
        try:
            apply_override(data, item)
        except BlueprintError as exc:
            problems += exc.problems
    if problems:
        raise BlueprintError(problems)
    return validate_data(data, smap, allow_plugins=allow_plugins)


def apply_dataset(data: dict, name: str | None) -> list[Problem]:
    """Apply the settings of ``datasets.<name>`` to raw data (as ``--set`` would) and record
    ``dataset: <name>``; the ``datasets:`` section is then dropped, so the saved blueprint holds
    the values it ran with. Returns the problems (an unknown dataset, a setting with no place)."""
    if name is None:
        return []
    table = data.get("datasets")
    if not isinstance(table, dict) or not table:
        if data.get("dataset") == name:
            return []  # saved after the dataset's settings were applied
        return [Problem(("dataset",), f"dataset '{name}' chosen, but the blueprint has no `datasets:` settings")]
    if name not in table:
        names = [str(k) for k in table]
        return [Problem(("dataset",), f"unknown dataset '{name}' (datasets: {', '.join(names)})", did_you_mean(str(name), names))]
    settings = table[name]
    if not isinstance(settings, dict):
        return [Problem(("datasets", name), "a dataset's settings map blueprint paths to values (`training.lr: 1.0e-3`)")]
    problems = []
    for path_text, value in settings.items():
        try:
            apply_setting(data, str(path_text), value, where=("datasets", name, path_text), file=None)
        except BlueprintError as exc:
            problems += exc.problems
    data.pop("datasets")
    data["dataset"] = name
    return problems


def dataset_names(path: Path) -> list[str]:
    """The names under a blueprint file's ``datasets:`` (none when it has none or chose one)."""
    data, _ = read_yaml(read_blueprint_text(Path(path)), str(path))
    table = data.get("datasets") if isinstance(data, dict) and not data.get("dataset") else None
    return [str(k) for k in table] if isinstance(table, dict) else []


def _read_source(blueprint: str | Path) -> tuple[str, str | None]:
    if isinstance(blueprint, Path) or ("\n" not in str(blueprint) and str(blueprint).endswith((".yaml", ".yml"))):
        path = Path(blueprint)
        return read_blueprint_text(path), str(path)
    return str(blueprint), None


def read_blueprint_text(path: Path) -> str:
    """A blueprint file's text: it must exist, be within ``COMPOSER_MAX_YAML_CHARS`` bytes and be UTF-8."""
    if not path.is_file():
        raise ComposerError(f"blueprint file not found: {path}")
    size = path.stat().st_size
    limit = YAML_CHARS.value()
    if size > limit:
        raise ComposerError(f"{path}: {size:,} bytes is too large for a blueprint (at most {limit:,}; set {YAML_CHARS.env} to raise it)")
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ComposerError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); save the blueprint as UTF-8") from None


def dump_blueprint(bp: CheckedBlueprint) -> str:
    """YAML text of a checked blueprint that reloads to an equal blueprint (:meth:`CheckedBlueprint.text`)."""
    return bp.text()


TEMPLATE_FILE_KEYS = {"templates", "imports", "description"}


def is_template_library(path: Path) -> bool:
    """Whether a file is a template library (``templates:``, optionally ``imports:`` and
    ``description:``, and no blueprint fields), as ``imports:`` reads them."""
    data, _ = read_yaml(read_blueprint_text(Path(path)), str(path))
    return isinstance(data, dict) and "templates" in data and not set(data) - TEMPLATE_FILE_KEYS


def check_template_library(path: Path) -> list[str]:
    """Check a template library as a blueprint importing it sees it (schema of every template,
    its imports, problems located in the library's own lines); returns the template names."""
    path = Path(path).resolve()
    data, _ = read_yaml(read_blueprint_text(path), str(path))
    names = sorted(data["templates"]) if isinstance(data.get("templates"), dict) else []
    probe = {
        "blueprint": 1, "name": "template_library", "imports": [path.name],
        "modalities": {"x": {"kind": "vector", "features": 1}},
        "blocks": {"head": {"type": "linear", "in": "x", "out": 1}},
    }
    validate_data(probe, SourceMap(str(path)))  # imports resolve in the library's own folder
    return names
