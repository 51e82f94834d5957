"""Architecture pictures of blueprints, drawn with graphviz ``dot``.

:func:`render` returns a ``graphviz.Digraph`` (it displays itself in a notebook);
:func:`render_to_file` writes ``.svg``, ``.png``, ``.pdf`` or ``.dot`` (format from the
extension). What is drawn is described in :mod:`composer.render._graph` and
``docs/render.md``; composite blocks expand through :mod:`composer.blocks._inside`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterable

import graphviz

from composer._callable import make_callable
from composer.errors import ComposerError, disk_write
from composer.render._graph import GraphOptions, build_graph

__all__ = ["render", "render_to_file", "write_graph", "FORMATS", "InsidePart", "inside_of", "GraphOptions", "require_dot"]


def __getattr__(name: str):
    """``InsidePart`` and ``inside_of`` read module trees: imported (with torch) on first use."""
    if name in ("InsidePart", "inside_of"):
        from composer.blocks import _inside

        return getattr(_inside, name)
    raise AttributeError(f"module 'composer.render' has no attribute '{name}'")

FORMATS = ("svg", "png", "pdf", "dot")
DOT_MISSING = (
    "graphviz's `dot` program was not found on PATH; it draws the picture. Install it with "
    "`sudo apt-get install graphviz` (Debian/Ubuntu package `graphviz`) or `brew install graphviz` "
    "(macOS), or write `-o FILE.dot` to get the graph source without it"
)


def _load(blueprint, overrides: Iterable[str]):
    from composer.blueprint.load import load_blueprint

    if hasattr(blueprint, "blocks") and hasattr(blueprint, "modalities"):
        if list(overrides):
            raise ComposerError("overrides apply to a blueprint file, text or dict; this blueprint is already loaded")
        return blueprint
    return load_blueprint(blueprint, overrides)


def _compile_for_counts(bp):
    """Compile on the meta device (no weight memory, no init cost); fall back to CPU."""
    import torch

    from composer.graph.model import compile_blueprint

    try:
        with torch.device("meta"):
            return compile_blueprint(bp)
    except ComposerError:
        raise
    except Exception:  # a block whose __init__ needs real tensors
        return compile_blueprint(bp)


def render(
    blueprint,
    *,
    overrides: Iterable[str] = (),
    direction: str = "LR",
    depth: int = 0,
    expand: Iterable[str] | None = None,
    params: bool = True,
    legend: bool = True,
    title: bool = True,
    max_fields: int = 6,
    templates: str = "expanded",
    model=None,
) -> graphviz.Digraph:
    """Draw a blueprint (a path, YAML text, a dict or a loaded blueprint) as a Digraph.

    ``direction``: ``"LR"`` (left to right) or ``"TB"`` (top down). ``depth``: levels of
    module tree shown inside composite blocks (0 = none); ``expand``: only these block ids
    (default: every block with parts; drawing insides compiles the model on the meta device,
    which imports PyTorch). ``params``: print parameter counts (read from the configs, no
    module built); ``model``: an already compiled ``ComposedModel`` to use.
    ``overrides``: ``path=value`` strings as in ``--set``. ``templates``: ``"expanded"`` draws the
    blocks of each template use inside a frame, ``"collapsed"`` draws each use as one node.
    """
    direction = direction.upper()
    if direction not in ("LR", "TB"):
        raise ComposerError(f"direction must be LR (left to right) or TB (top down), got '{direction}'")
    if depth < 0:
        raise ComposerError(f"depth must be 0 or more, got {depth}")
    if templates not in ("expanded", "collapsed"):
        raise ComposerError(f"templates must be expanded or collapsed, got '{templates}'")
    bp = _load(blueprint, overrides) if model is None else model.blueprint
    expand = tuple(expand) if expand is not None else None
    if expand:
        unknown = [b for b in expand if b not in bp.blocks]
        if unknown:
            from composer.errors import did_you_mean

            hints = [did_you_mean(b, list(bp.blocks)) for b in unknown]
            extra = "".join(f" (did you mean '{h}'?)" for h in hints if h)
            raise ComposerError(f"cannot expand unknown block(s) {', '.join(unknown)}{extra}; blocks: {', '.join(bp.blocks)}")
        depth = max(depth, 1)
    if model is None and depth > 0:  # the insides of blocks are read off their modules
        model = _compile_for_counts(bp)
    options = GraphOptions(direction=direction, depth=depth, expand=expand, max_fields=max_fields, legend=legend, title=title, params=params, templates=templates)
    return build_graph(bp, model, options)


def require_dot() -> None:
    """Raise a :class:`ComposerError` naming the packages to install when ``dot`` is missing."""
    if shutil.which("dot") is None:
        raise ComposerError(DOT_MISSING)


def write_graph(graph: graphviz.Digraph, path: str | Path, *, dpi: int = 200) -> Path:
    """Write a Digraph to ``path``; the format comes from the extension (svg, png, pdf, dot/gv)."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    fmt = "dot" if fmt == "gv" else fmt
    if fmt not in FORMATS:
        raise ComposerError(f"cannot tell the picture format from '{path.name}': use one of .{', .'.join(FORMATS)} (or .gv)")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "dot":
        with disk_write(path, "nothing of this picture"):
            path.write_text(graph.source, encoding="utf-8")
        return path
    require_dot()
    if fmt == "png":
        graph = graph.copy()
        graph.attr(dpi=str(dpi))
    try:
        data = graph.pipe(format=fmt)
    except graphviz.ExecutableNotFound as exc:
        raise ComposerError(DOT_MISSING) from exc
    except graphviz.CalledProcessError as exc:
        message = (exc.stderr or b"").decode(errors="replace").strip()
        raise ComposerError(f"graphviz `dot` failed to draw {path.name}: {message}") from exc
    with disk_write(path, "nothing of this picture"):
        path.write_bytes(data)
    return path


def render_to_file(blueprint, path: str | Path, *, dpi: int = 200, **options) -> Path:
    """:func:`render` then :func:`write_graph`; options as for :func:`render`."""
    fmt = Path(path).suffix.lower().lstrip(".")
    if fmt not in FORMATS + ("gv",):
        raise ComposerError(f"cannot tell the picture format from '{Path(path).name}': use one of .{', .'.join(FORMATS)} (or .gv)")
    if fmt not in ("dot", "gv"):
        require_dot()
    return write_graph(render(blueprint, **options), path, dpi=dpi)


make_callable(__name__, "composer.render:render")  # composer.render(blueprint, ...) draws
