"""``composer bench``: parameters, MACs, speed and memory of compiled blueprints."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from composer.commands.core import SET_HELP, console, load


def bench(
    blueprints: List[Path] = typer.Argument(..., help="Blueprint YAML files.", metavar="BLUEPRINT..."),
    batch_size: int = typer.Option(16, "--batch-size", "-b", min=1),
    device: str = typer.Option("auto", "--device", help="auto (CUDA if available), cpu, cuda, cuda:1, ..."),
    repeats: int = typer.Option(5, "--repeats", min=1, help="Timed runs (median reported)."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write results to this .json or .csv file."),
) -> None:
    """Measure parameters, MACs per sample, forward and training-step time and peak memory.

    Example: composer bench blueprints/*.yaml --batch-size 32 -o docs/bench-cpu.json
    """
    import torch

    from composer.bench import bench_model, machine_info
    from composer.graph.model import compile_blueprint

    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
    rows = []
    con = console()
    for path in blueprints:
        torch.manual_seed(0)
        model = compile_blueprint(load(path, set_))
        result = bench_model(model, batch_size=batch_size, device=dev, repeats=repeats)
        rows.append({"blueprint": str(path), **result.row()})
        con.print(f"measured {path}", style="dim")
    table = Table(title=f"batch {batch_size} on {dev}", header_style="bold")
    for col in ("blueprint", "params", "MACs/sample", "forward ms", "train step ms", "peak MB"):
        table.add_column(col, justify="left" if col == "blueprint" else "right")
    for r in rows:
        table.add_row(r["name"], f"{r['params']:,}", f"{r['macs_per_sample']:,}", f"{r['forward_ms']:.2f}", f"{r['train_step_ms']:.2f}", "—" if r["peak_memory_mb"] is None else f"{r['peak_memory_mb']:.1f}")
    con.print(table)
    if out is not None:
        machine = machine_info(dev)
        if out.suffix == ".csv":
            with out.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]) + ["machine"])
                writer.writeheader()
                for r in rows:
                    writer.writerow({**r, "machine": json.dumps(machine)})
        else:
            out.write_text(json.dumps({"machine": machine, "results": rows}, indent=2))


def register(app: typer.Typer) -> None:
    app.command()(bench)
