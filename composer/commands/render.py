"""``composer render``: draw a blueprint as an architecture picture (svg, png, pdf, dot)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

SET_HELP = "Override a blueprint field, e.g. --set blocks.fusion.layers=4 (value read as YAML; repeatable)."


def render(
    blueprint: Path = typer.Argument(..., help="Blueprint YAML file."),
    out: Path = typer.Option(..., "--out", "-o", help="Picture to write; the format comes from the extension: .svg, .png, .pdf or .dot."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP),
    direction: str = typer.Option("LR", "--direction", "-d", help="LR (left to right) or TB (top down)."),
    expand: bool = typer.Option(False, "--expand", help="Show the inside of composite blocks (one level; see --depth)."),
    depth: Optional[int] = typer.Option(None, "--depth", min=0, help="Levels of each block's module tree to show (implies --expand when > 0)."),
    block: Optional[List[str]] = typer.Option(None, "--block", "-b", help="Expand only this block (repeatable; implies --expand)."),
    params: bool = typer.Option(True, "--params/--no-params", help="Print parameter counts (compiles the model on the meta device)."),
    legend: bool = typer.Option(True, "--legend/--no-legend", help="Title, family colours and marks under the graph."),
    max_fields: int = typer.Option(6, "--max-fields", min=0, help="Fields listed per block (searched fields are always listed)."),
    templates: str = typer.Option("expanded", "--templates", help="expanded: each template use's blocks in a frame; collapsed: one node per use."),
    dpi: int = typer.Option(200, "--dpi", min=36, help="Resolution of .png output."),
    allow_plugins: bool = typer.Option(False, "--allow-plugins", help="Import the Python modules listed under `plugins:`."),
) -> None:
    """Draw a blueprint: modalities, blocks coloured by family, edges with inferred shapes.

    Parameter counts per block, bypassed (disabled) blocks, shared weights, searchable fields (◆), auxiliary losses and training views are marked. svg, png and pdf need graphviz's `dot` (apt-get install graphviz, or brew install graphviz).

    Example: composer render blueprints/late_fusion.yaml -o late_fusion.svg --set blocks.head.dropout=0.2

    Example: composer render blueprints/hct_mg.yaml -o hct_mg.png --block fusion --depth 2 -d TB
    """
    from composer.blueprint.load import load_blueprint
    from composer.render import render_to_file, require_dot

    if out.suffix.lower() not in (".dot", ".gv"):
        require_dot()  # fail before compiling anything
    bp = load_blueprint(blueprint, set_ or [], allow_plugins=allow_plugins)
    levels = depth if depth is not None else (1 if expand or block else 0)
    graph_options = dict(direction=direction, depth=levels, expand=block or None, params=params, legend=legend, title=legend, max_fields=max_fields, templates=templates)
    path = render_to_file(bp, out, dpi=dpi, **graph_options)
    typer.echo(f"wrote {path}")


def register(app: typer.Typer) -> None:
    app.command("render")(render)
