"""Core commands: ``validate``, ``build``, ``blocks``, ``schema``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, List, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from composer.errors import ComposerError

SET_HELP = "Override a blueprint field, e.g. --set blocks.fusion.layers=4 (value read as YAML; repeatable; +path adds a named entry)."
DATASET_HELP = "Apply this entry of the blueprint's `datasets:` (e.g. mosi, mosei, sims) before --set; same as --set dataset=NAME."
DEVICE_HELP = "auto (CUDA, then CPU), cpu, cuda or cuda:N."

# Options that the training commands share, declared once (typer reads the ``Annotated`` metadata;
# the default stays with each parameter).
Device = Annotated[str, typer.Option("--device", help=DEVICE_HELP)]
Epochs = Annotated[Optional[int], typer.Option("--epochs", min=1, help="Override training.epochs.")]
Overrides = Annotated[List[str], typer.Option("--set", help=SET_HELP)]


def with_dataset(overrides: list[str] | None, dataset: str | None) -> list[str]:
    """``--dataset NAME`` as the override ``dataset=NAME`` (applied before every other --set)."""
    return ([f"dataset={dataset}"] if dataset else []) + list(overrides or [])


def console(stderr: bool = False) -> Console:
    """A console wide enough for shape tables even when output is piped. It prints text as it is
    (no Rich markup): blueprint names, block ids, paths and docstrings are user text and may hold
    brackets (``[x_1; …]``); styles are given as ``Text`` styles."""
    return Console(stderr=stderr, width=None if Console().is_terminal else 160, highlight=False, markup=False)


def load(path: Path, overrides: list[str] | None, allow_plugins: bool | None = None):
    from composer.blueprint.load import load_blueprint

    return load_blueprint(path, overrides or [], allow_plugins=allow_plugins)


def validate(
    blueprints: List[Path] = typer.Argument(..., help="Blueprint YAML files.", metavar="BLUEPRINT..."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP),
    allow_plugins: bool = typer.Option(False, "--allow-plugins", help="Import the Python modules listed under `plugins:`."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print problems only."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help=DATASET_HELP + " Without it, every dataset's settings are checked."),
    memory: bool = typer.Option(False, "--memory", help=(
        "Trace one training step with fake tensors (imports PyTorch; seconds, no memory) and print its peak memory, "
        "refused above COMPOSER_MAX_MEMORY.")),
) -> None:
    """Check blueprints (schema, graph, shapes, size) without allocating a tensor; report every problem.

    The size estimate (parameters and a floor of training memory) is refused above the memory
    budget (COMPOSER_MAX_MEMORY, default 75% of this machine's memory). With --memory, one
    training step at training.batch_size is traced (fake tensors) and its peak is printed and
    held against the budget: the figure to plan with (docs/performance.md, "Training memory").

    Example: composer validate blueprints/glomo.yaml --set blocks.moe_text.experts=4
    """
    from composer.blueprint.load import check_template_library, dataset_names, is_template_library

    out, err = console(), console(stderr=True)
    failed = 0
    for path in blueprints:
        try:
            if is_template_library(path):
                names = check_template_library(path)
                if not quiet:
                    out.print(Text(f"ok  {path}  (template library: {len(names)} templates: {', '.join(names)})"), soft_wrap=True)
                continue
            bp = load(path, with_dataset(set_, dataset), allow_plugins)
            variants = [] if dataset else dataset_names(path)
            for name in variants:  # every dataset's settings, so `--dataset NAME` never fails later
                load(path, with_dataset(set_, name), allow_plugins)
            size = bp.size.describe()
            if memory:
                from composer.train.memory import check_training_memory

                size = f"{bp.size.describe_parameters()}; {check_training_memory(bp).describe()}"
        except ComposerError as exc:  # every problem the check found, located
            failed += 1
            err.print(Text(f"{path}", style="bold red") + Text(f": {exc}"), soft_wrap=True)
            continue
        for w in bp.warnings:
            err.print(Text(str(w)), soft_wrap=True)
        if not quiet:
            n = len(bp.plan.nodes)
            chosen = f"; dataset {bp.dataset}" if bp.dataset else (f"; datasets {', '.join(variants)} checked" if variants else "")
            out.print(Text(f"ok  {path}  ({bp.name}: {n} blocks, {len(bp.losses)} losses; {size}{chosen})"), soft_wrap=True)
    if failed:
        raise typer.Exit(1)


def _format_specs(specs: dict) -> str:
    if list(specs) in (["in"], ["out"]):
        return str(next(iter(specs.values())))
    return "\n".join(f"{port}: {spec}" for port, spec in specs.items())


def build(
    blueprint: Path = typer.Argument(..., help="Blueprint YAML file."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the table as JSON to this file."),
    allow_plugins: bool = typer.Option(False, "--allow-plugins", help="Import the Python modules listed under `plugins:`."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help=DATASET_HELP),
) -> None:
    """Compile a blueprint and print each block: type, input -> output shapes, parameters.

    Example: composer build blueprints/rmfn.yaml --set blocks.rmfn.fusion.stages=4
    """
    from composer.graph.model import compile_blueprint, summary_rows

    bp = load(blueprint, with_dataset(set_, dataset), allow_plugins)
    model = compile_blueprint(bp)
    rows = summary_rows(model)
    con = console()
    table = Table(title=f"{bp.name}  ({blueprint})", show_lines=False, header_style="bold")
    for col in ("block", "type", "inputs", "outputs", "params"):
        table.add_column(col, justify="right" if col == "params" else "left", overflow="fold")
    for row in rows:
        params = f"{row['params']:,}" if not row["shares"] else f"shares {row['shares']}"
        type_name = row["type"] + ("" if row["enabled"] else " (disabled)")
        table.add_row(row["id"], type_name, _format_specs(row["inputs"]), _format_specs(row["outputs"]), params)
    counts = model.parameter_counts()
    for key, n in counts.items():
        if key.startswith("losses."):
            node = model.plan.losses[int(key.split(".")[1])]
            table.add_row(node.name, node.config.type + " (loss)", "", "", f"{n:,}")
    sizes = model.parameter_summary()
    total, trainable = sizes["model"], sizes["trainable"]
    con.print(table)
    con.print("outputs: " + ", ".join(f"{k} = {v} {model.plan.values[v]}" for k, v in model.plan.outputs.items()))
    con.print(f"total parameters: {total:,}  (the model at inference; trainable {trainable:,})")
    if sizes["training_only"]:
        con.print(f"training-only parameters (loss networks and training-only blocks, not part of the model at inference): {sizes['training_only']:,}")
    for w in model.plan.warnings:
        console(stderr=True).print(str(w), soft_wrap=True)
    if json_out is not None:
        json_out.write_text(json.dumps({"name": bp.name, "blocks": rows, "total_params": total, "trainable_params": trainable, "training_only_params": sizes["training_only"]}, indent=2))


def type_text(annotation) -> str:
    """A field's type as a reader wants it: a Literal's allowed values (``'mean' | 'max'``),
    unions and containers spelled out, ``None`` for NoneType."""
    import types
    import typing

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_text(a) for a in args)
    if origin is typing.Annotated:
        return type_text(args[0])
    if origin is not None and args:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(type_text(a) for a in args)}]"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def blocks(
    pattern: str = typer.Argument("*", help="Glob on block type names, e.g. 'msaf*'."),
    family: Optional[str] = typer.Option(None, "--family", help="Only this family (encoder, fusion, head, ...)."),
    details: bool = typer.Option(False, "--details", "-d", help="Show each block's fields."),
    losses: bool = typer.Option(True, "--losses/--no-losses", help="Also list losses."),
) -> None:
    """List the registered block types (and losses) with their documentation and parameters.

    Example: composer blocks 'msaf*' --details
    """
    from composer.registry import list_blocks, list_losses

    con = console()
    entries = list_blocks(pattern, family) + (list_losses(pattern) if losses and family in (None, "loss") else [])
    if not entries:
        raise ComposerError(f"no block type matches '{pattern}'" + (f" in family '{family}'" if family else ""))
    if not details:
        table = Table(header_style="bold")
        table.add_column("type")
        table.add_column("family")
        table.add_column("summary", overflow="fold")
        for e in entries:
            table.add_row(e.name, e.family, e.summary)
        con.print(table)
        return
    skip = {"inputs", "share", "enabled", "type"}
    for e in entries:
        con.rule(Text(f"{e.name}  ({e.family})", style="bold"))
        con.print(e.doc, soft_wrap=True)
        table = Table(header_style="bold", box=None)
        for col in ("field", "type", "default", "description"):
            table.add_column(col, overflow="fold")
        for name, field in e.config.model_fields.items():
            if name in skip:
                continue
            default = "required" if field.is_required() else repr(field.get_default(call_default_factory=True))
            table.add_row(field.alias or name, type_text(field.annotation), default, field.description or "")
        con.print(table)


def schema(
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout."),
) -> None:
    """Print the JSON Schema of blueprints (for editor completion and validation).

    Example: composer schema -o docs/blueprint.schema.json
    """
    from composer.blueprint.schema import json_schema_text

    text = json_schema_text()
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)


def register(app: typer.Typer) -> None:
    app.command()(validate)
    app.command()(build)
    app.command()(blocks)
    app.command()(schema)
