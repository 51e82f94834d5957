"""``composer predict`` and ``composer compare``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from composer.commands.core import Device

PREDICT_HELP = """Write one row per sample of a split: its id, its label and every named output of a trained run.

Runs the model of a run folder, best.safetensors or last.ckpt on the data the run was trained on (its data.json) unless --data names other data. Columns: id (the data's `id` entry, else the sample's index), label, prediction, then the blueprint's other named outputs; a vector output gets one column per entry, `<name>[i]`. The CSV goes to a new predictions-<data>-<sha8>-<split>.csv next to the checkpoint (earlier ones are kept).

Example:

    composer predict runs/late_fusion --data mosi_unaligned_50.pkl --split test
"""

COMPARE_HELP = """Compare two trained runs on the same split: every task metric, B - A, with a paired bootstrap confidence interval and a paired permutation p-value.

Both runs must predict the same task. They are scored on the data they were trained on (the same files for both) or on --data; the split's sample ids and labels must agree. The interval is the bootstrap percentile interval over --resamples paired resamples of the samples; the p-value swaps each sample's two predictions with probability 1/2 in as many rounds ((count + 1) / (rounds + 1), two-sided); both are seeded by --seed. Prints a table and writes a new comparison-<run B>-<data>-<sha8>-<split>.json in RUN_A's folder (or --out).

Example:

    composer compare runs/late_fusion runs/tensor_fusion --resamples 2000 --seed 1
"""


def register(app: typer.Typer) -> None:
    @app.command("predict", help=PREDICT_HELP)
    def predict_command(
        target: Path = typer.Argument(..., help="Run folder, best.safetensors or last.ckpt."),
        data: Optional[str] = typer.Option(None, "--data", help="'synthetic' or a feature pickle (default: the data the run was trained on)."),
        split: str = typer.Option("test", "--split", help="Split to predict."),
        device: Device = "auto",
    ) -> None:
        from composer.train.predict import predict

        predict(target, data, split=split, device=device)

    @app.command("compare", help=COMPARE_HELP)
    def compare_command(
        run_a: Path = typer.Argument(..., help="Run A: run folder, best.safetensors or last.ckpt."),
        run_b: Path = typer.Argument(..., help="Run B: run folder, best.safetensors or last.ckpt."),
        data: Optional[str] = typer.Option(None, "--data", help="'synthetic' or a feature pickle for both (default: the data both runs were trained on)."),
        split: str = typer.Option("test", "--split", help="Split to score."),
        resamples: int = typer.Option(1000, "--resamples", min=1, help="Bootstrap resamples, and permutation rounds."),
        seed: int = typer.Option(0, "--seed", help="Seed of the resamples and permutations."),
        out: Optional[Path] = typer.Option(None, "--out", help="Folder of the JSON file (default: RUN_A's folder)."),
        device: Device = "auto",
    ) -> None:
        from composer.train.predict import compare_runs

        compare_runs(run_a, run_b, data, split=split, resamples=resamples, seed=seed, out=out, device=device)
