"""``composer import-weights``: a state dict saved by MMSA 2.2.1 as a Composer weights file."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from composer.commands.core import DATASET_HELP, SET_HELP, console


def import_weights(
    state: Path = typer.Argument(..., help="State dict saved by MMSA (torch.save(model.state_dict()), e.g. its saved_models/*.pth)."),
    blueprint: Path = typer.Option(..., "--blueprint", help="The zoo blueprint of the same model (blueprints/zoo/tfn.yaml, mfn.yaml...)."),
    out: Path = typer.Option(..., "--out", "-o", help="Composer weights file to write (.safetensors)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help=DATASET_HELP),
    set_: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP),
) -> None:
    """Convert weights saved by MMSA 2.2.1 for a zoo model into a Composer weights file.

    The file is read with torch.load(weights_only=True): tensors only, no code runs. Every tensor
    goes through the model's name map (composer/zoo_import/, the map tests/test_mmsa_zoo.py
    proves); a tensor missing, one too many, a shape or a frozen constant that differs from the
    blueprint is refused, naming it. Give the dataset (and any --set) MMSA trained with.
    Graph-MFN files are refused: MMSA never saves its dynamic fusion graph's vertex networks.

    Example: composer import-weights saved_models/tfn-mosi.pth --blueprint blueprints/zoo/tfn.yaml --dataset mosi -o tfn.safetensors
    """
    from composer.zoo_import import import_mmsa_weights

    if out.suffix != ".safetensors":
        raise typer.BadParameter(f"{out}: the weights file's name should end in .safetensors", param_hint="--out")
    written = import_mmsa_weights(state, blueprint, out, dataset=dataset, overrides=list(set_ or []))
    console().print(f"wrote {written} ({blueprint.name}{f', {dataset}' if dataset else ''}); composer.load_model reads it")


def register(app: typer.Typer) -> None:
    app.command("import-weights")(import_weights)
