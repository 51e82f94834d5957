"""``composer export``: a trained model as an ONNX file and/or a ``torch.export`` program (.pt2)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from composer.commands.core import console


def export(
    target: Path = typer.Argument(..., help="Run folder, best.safetensors or last.ckpt."),
    onnx: Optional[Path] = typer.Option(None, "--onnx", help="ONNX file to write (needs the export extra: onnx, onnxruntime, onnxscript)."),
    program: Optional[Path] = typer.Option(None, "--program", help="torch.export program to write (.pt2, torch.export.save)."),
    batch_size: int = typer.Option(2, "--batch-size", "-b", min=2, help="Batch of the traced example (the batch axis stays dynamic)."),
    fixed_time: bool = typer.Option(False, "--fixed-time", help="Fix every time axis at the modality's length (default: dynamic where the model allows)."),
    optimize: bool = typer.Option(True, "--optimize/--no-optimize", help="Run onnxscript's graph optimiser on the ONNX file."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Run each file on a padded batch and compare with PyTorch (max abs difference, tolerance 1e-4)."),
    data: Optional[str] = typer.Option(None, "--data", help="Data to verify on as well: 'synthetic' or a feature file (default: the data the run was trained on)."),
) -> None:
    """Export a trained model for inference: positional inputs (each modality, its lengths or token mask, token type ids when read), output `prediction`.

    The batch axis is dynamic; time axes are dynamic where the model traces with a symbolic length. Each file is checked against PyTorch on a padded batch one sample larger (and one step longer on dynamic time axes) and, for a run folder, on test samples of the data it was trained on (its data.json; a file that is gone or changed is refused, --data names other data); a difference above 1e-4 fails the command. The ONNX file carries the blueprint and the input names in its metadata.

    Example: composer export runs/late_fusion --onnx late_fusion.onnx --program late_fusion.pt2

    Example: composer export runs/glomo/best.safetensors --onnx glomo.onnx --batch-size 4
    """
    from composer.errors import ComposerError
    from composer.export import export_onnx, export_program, trace, verification_batch, verify_onnx, verify_program
    from composer.train.evaluation import load_trained

    if onnx is None and program is None:
        raise typer.BadParameter("name a file to write: --onnx FILE and/or --program FILE.pt2", param_hint="--onnx")
    if onnx is not None and onnx.suffix != ".onnx":
        raise ComposerError(f"--onnx {onnx}: the file name should end in .onnx")
    if program is not None and program.suffix != ".pt2":
        raise ComposerError(f"--program {program}: the file name should end in .pt2")
    model, path = load_trained(target)
    out = console()
    checks = _data_check(model, path, data, batch_size, out.print) if verify else None
    out.print(f"tracing {model.blueprint.name} from {path} (batch {batch_size})")
    result = trace(model, batch_size, dynamic_time=not fixed_time)
    writes = []
    if onnx is not None:
        writes.append(("ONNX", onnx, export_onnx(model, onnx, result=result, optimize=optimize), verify_onnx))
    if program is not None:
        writes.append(("program", program, export_program(model, program, result=result), verify_program))
    shown = None
    for kind, file, written, check in writes:
        out.print(f"wrote {kind} {file}")
        if written is not shown:  # a program traced again (fixed time) has its own axes
            out.print("  inputs in order:")
            for line in written.describe():
                out.print(f"    {line}")
            out.print("  output: prediction")
            shown = written
        if verify:
            batch = verification_batch(model, written)
            diff = check(model, file, batch)
            out.print(f"  max |{kind} - PyTorch| = {diff:.2e} on a padded batch of {len(next(iter(batch.values())))} (tolerance 1e-4)")
            if checks is not None:
                batch, described = checks
                diff = check(model, file, batch)
                out.print(f"  max |{kind} - PyTorch| = {diff:.2e} on {described} (tolerance 1e-4)")


def _data_check(model, path: Path, data: Optional[str], batch_size: int, say):
    """``(inputs, description)``: test samples of the data a run was trained on (or of ``--data``)
    to verify the files on, or None for weights with no recorded data and no ``--data``."""
    from composer.export import data_inputs
    from composer.train.evaluation import run_data
    from composer.train.runlog import describe_data, read_data_record

    if data is None and read_data_record(path.parent) is None:
        return None
    splits, record = run_data(model.blueprint, path.parent, data, say=say)
    split = "test" if "test" in splits else next(iter(splits.splits))
    batch = data_inputs(model, splits[split], batch_size + 1)
    return batch, f"{len(next(iter(batch.values())))} samples of the {split} split of {describe_data(record)}"


def register(app: typer.Typer) -> None:
    app.command("export")(export)
