"""``composer train`` and ``composer evaluate``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

TRAIN_HELP = """Train a blueprint (built-in synthetic data unless --data names a file).

Shows a progress bar, prints metrics per epoch and a summary table, and writes the run folder: metrics.jsonl, metrics.csv, block_logs.jsonl, last.ckpt (exact resume), best.safetensors (weights + blueprint), summary.json.

Example:

    composer train blueprints/late_fusion.yaml --epochs 5 --set training.lr=3e-4

    composer train blueprints/late_fusion.yaml --data mosi_unaligned_50.pkl --resume
"""

EVALUATE_HELP = """Evaluate a run folder, best.safetensors or last.ckpt on valid and test.

With --missing-rates, the test inputs are masked at each rate (random temporal masking) and a table per rate plus the area under each metric's curve (AUILC) is printed; all numbers go to evaluation.json next to the checkpoint.

Example:

    composer evaluate runs/late_fusion --missing-rates 0:1:0.1
"""


def register(app: typer.Typer) -> None:
    @app.command("train", help=TRAIN_HELP)
    def train_command(
        blueprint: Path = typer.Argument(..., help="Blueprint YAML file."),
        data: Optional[str] = typer.Option(None, "--data", help="'synthetic' or a standard-layout feature pickle (default: training.data)."),
        out: Optional[Path] = typer.Option(None, "--out", help="Run folder (default: runs/<name>)."),
        epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Override training.epochs."),
        overrides: list[str] = typer.Option([], "--set", help="Override a blueprint field: path=value (repeatable)."),
        resume: bool = typer.Option(False, "--resume", help="Continue from <out>/last.ckpt."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace the run already in the folder (its history is deleted)."),
        device: str = typer.Option("auto", "--device", help="auto (CUDA, then CPU), cpu, cuda or cuda:N."),
        seed: Optional[int] = typer.Option(None, "--seed", help="Override training.seed."),
    ) -> None:
        from composer.train.trainer import train

        if resume and overwrite:
            raise typer.BadParameter("--resume continues the run in the folder, --overwrite replaces it: give one", param_hint="--overwrite")
        train(blueprint, data, out, overrides=overrides, epochs=epochs, seed=seed, resume=resume, device=device, overwrite=overwrite)

    @app.command("evaluate", help=EVALUATE_HELP)
    def evaluate_command(
        target: Path = typer.Argument(..., help="Run folder, best.safetensors or last.ckpt."),
        data: Optional[str] = typer.Option(None, "--data", help="'synthetic' or a feature pickle (default: the blueprint's training.data)."),
        missing_rates: Optional[str] = typer.Option(None, "--missing-rates", help="start:stop:step (e.g. 0:1:0.1) or a comma list."),
        split: str = typer.Option("test", "--split", help="Split of the missing-rate sweep."),
        device: str = typer.Option("auto", "--device", help="auto (CUDA, then CPU), cpu, cuda or cuda:N."),
        seed: int = typer.Option(0, "--seed", help="Seed of the masks drawn for the sweep."),
    ) -> None:
        from composer.train.evaluation import evaluate

        evaluate(target, data, missing_rates=missing_rates, sweep_split=split, device=device, seed=seed)
