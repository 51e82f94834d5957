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
    reference: bool = typer.Option(False, "--reference", help="Also time the hand-written reference (tests/reference/) with the same weights and batch, interleaved; reports reference_ratio."),
) -> None:
    """Measure parameters, MACs per sample, forward and training-step time and peak memory.

    "est. train MB" is the trainer's step (every view, loss, backward, Adam) at this batch, traced with fake tensors (composer validate --memory).

    With --reference each paper blueprint is timed against its plain-PyTorch reference (same weights, same batch, alternating repeats): reference_ratio = blueprint step / reference step (forward, mean squared prediction, backward, SGD).

    Example: composer bench blueprints/*.yaml --batch-size 32 -o docs/bench-cpu.json

    Example: composer bench blueprints/mult.yaml blueprints/hct_mg.yaml --reference --batch-size 8
    """
    import torch

    from composer.bench import bench_model, compare_with_reference, machine_info
    from composer.errors import ComposerError
    from composer.train.memory import trace_training_memory
    from composer.graph.model import compile_blueprint

    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
    rows = []
    con = console()
    for path in blueprints:
        torch.manual_seed(0)
        model = compile_blueprint(load(path, set_))
        result = bench_model(model, batch_size=batch_size, device=dev, repeats=repeats)
        result.estimated_train_mb = round(trace_training_memory(model.blueprint, batch_size).peak_bytes / 2**20, 1)
        if reference:
            torch.manual_seed(0)
            try:
                result = compare_with_reference(model, result, device=dev, repeats=repeats)
            except ComposerError as exc:
                con.print(f"{path}: no reference timing ({exc})", style="yellow")
        rows.append({"blueprint": str(path), **result.row()})
        con.print(f"measured {path}", style="dim")
    table = Table(title=f"batch {batch_size} on {dev}", header_style="bold")
    columns = ["blueprint", "params", "MACs/sample", "forward ms", "train step ms", "samples/s", "peak MB", "est. train MB"]
    if reference:
        columns += ["step ms (ours / reference)", "reference ratio", "max diff"]
    for col in columns:
        table.add_column(col, justify="left" if col == "blueprint" else "right")
    for r in rows:
        cells = [r["name"], f"{r['params']:,}", f"{r['macs']:,}", f"{r['forward_ms']:.2f}", f"{r['train_step_ms']:.2f}",
                 f"{r['samples_per_s']:.1f}", "—" if r["peak_mem_mb"] is None else f"{r['peak_mem_mb']:.1f}",
                 "—" if r["estimated_train_mb"] is None else f"{r['estimated_train_mb']:,.1f}"]
        if reference:
            cells += ["—", "—", "—"] if r["reference"] is None else [
                f"{r['prediction_step_ms']:.2f} / {r['reference_step_ms']:.2f}", f"{r['reference_ratio']:.3f}", f"{r['reference_max_diff']:.1e}"]
        table.add_row(*cells)
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
