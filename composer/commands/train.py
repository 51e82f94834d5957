"""``composer train`` and ``composer evaluate``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from composer.commands.core import Device, Epochs, Overrides

TRAIN_HELP = """Train a blueprint (built-in synthetic data unless --data names a file).

Shows a progress bar, prints metrics per epoch and a summary table, and writes the run folder: metrics.jsonl, metrics.csv, block_logs.jsonl, last.ckpt (exact resume), best.safetensors (weights + blueprint), summary.json, data.json (the data: path, SHA-256, reader, splits), run.json (blueprint and its SHA-256, seed, versions, git commit). --tensorboard and --mlflow URI also log every epoch's metrics to TensorBoard and MLflow. The folder is locked while training: a second train, resume, overwrite or evaluate into it is refused.

Example:

    composer train blueprints/late_fusion.yaml --epochs 5 --set training.lr=3e-4

    composer train blueprints/late_fusion.yaml --data mosi_unaligned_50.pkl --resume

    composer train blueprints/late_fusion.yaml --tensorboard --mlflow sqlite:///runs/mlflow.db

    composer train blueprints/late_fusion.yaml --nproc 2    # data-parallel, 2 processes (torchrun)
"""

EVALUATE_HELP = """Evaluate a run folder, best.safetensors or last.ckpt on valid and test.

Scores the data the run was trained on (its data.json) unless --data names other data; a recorded file that is gone or changed is refused. The table names the data scored. With --missing-rates, the test inputs are masked at each rate (random temporal masking) and a table per rate plus the area under each metric's curve (AUILC) is printed; all numbers go to a new evaluation-<data>-<sha8>-<protocol>.json next to the checkpoint (earlier ones are kept).

With --drop, the listed modalities are absent (zeroed, their steps dropped) in everything scored; --conditions all adds the missing-modality table of the literature (each single modality present, each pair, complete); --modalities limits the sweep to some modalities.

Example:

    composer evaluate runs/late_fusion --missing-rates 0:1:0.1

    composer evaluate runs/late_fusion --conditions all
"""


def register(app: typer.Typer) -> None:
    _data_commands(app)

    @app.command("train", help=TRAIN_HELP)
    def train_command(
        blueprint: Path = typer.Argument(..., help="Blueprint YAML file."),
        data: Optional[str] = typer.Option(None, "--data", help="'synthetic' or a standard-layout feature pickle (default: training.data)."),
        out: Optional[Path] = typer.Option(None, "--out", help="Run folder (default: runs/<name>)."),
        epochs: Epochs = None,
        overrides: Overrides = [],
        resume: bool = typer.Option(False, "--resume", help="Continue from <out>/last.ckpt."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace the run already in the folder (its history is deleted)."),
        device: Device = "auto",
        seed: Optional[int] = typer.Option(None, "--seed", help="Override training.seed."),
        tensorboard: bool = typer.Option(False, "--tensorboard", help="Also log to TensorBoard: event files in <out>/tensorboard/ (extra: fusion-composer[tracking])."),
        mlflow: Optional[str] = typer.Option(None, "--mlflow", metavar="URI", help="Also log to MLflow at this tracking URI, e.g. sqlite:///runs/mlflow.db (replaces training.tracking.mlflow.uri)."),
        nproc: int = typer.Option(1, "--nproc", min=1, help="Train data-parallel in N processes on this machine (torchrun; the global batch stays training.batch_size)."),
    ) -> None:
        if resume and overwrite:
            raise typer.BadParameter("--resume continues the run in the folder, --overwrite replaces it: give one", param_hint="--overwrite")
        if nproc > 1:
            from composer.train.distributed import launch

            argv = _train_argv(blueprint, data, out, epochs, overrides, resume, overwrite, device, seed)
            argv += ["--tensorboard"] * tensorboard + (["--mlflow", mlflow] if mlflow else [])  # rank 0 tracks
            launch(nproc, argv, str(out / "last.ckpt") if out is not None else "the run folder's last.ckpt")
            return
        from composer.train.tracking import options
        from composer.train.trainer import train

        with options(tensorboard=tensorboard, mlflow=mlflow):
            train(blueprint, data, out, overrides=overrides, epochs=epochs, seed=seed, resume=resume, device=device, overwrite=overwrite)

    @app.command("evaluate", help=EVALUATE_HELP)
    def evaluate_command(
        target: Path = typer.Argument(..., help="Run folder, best.safetensors or last.ckpt."),
        data: Optional[str] = typer.Option(None, "--data", help="'synthetic' or a feature pickle (default: the data the run was trained on)."),
        missing_rates: Optional[str] = typer.Option(None, "--missing-rates", help="start:stop:step (e.g. 0:1:0.1) or a comma list."),
        split: str = typer.Option("test", "--split", help="Split of the missing-rate sweep and the conditions."),
        modalities: Optional[str] = typer.Option(None, "--modalities", help="Comma list: the modalities the missing-rate sweep masks (default: every sequence modality)."),
        drop: Optional[str] = typer.Option(None, "--drop", help="Comma list of modalities absent in everything scored (e.g. audio)."),
        conditions: Optional[str] = typer.Option(None, "--conditions", help="'all': the missing-modality table (every non-empty set of present modalities, complete first); or sets like 'text;text+audio'."),
        device: Device = "auto",
        seed: int = typer.Option(0, "--seed", help="Seed of the masks drawn for the sweep."),
    ) -> None:
        from composer.train.evaluation import evaluate

        listed = lambda text: [m.strip() for m in text.split(",") if m.strip()] if text else None  # noqa: E731
        sets = conditions if conditions in (None, "all") else [tuple(m.strip() for m in group.split("+") if m.strip()) for group in conditions.split(";") if group.strip()]
        evaluate(target, data, missing_rates=missing_rates, sweep_split=split, sweep_modalities=listed(modalities), drop=listed(drop),
                 conditions=sets, device=device, seed=seed)


def _train_argv(blueprint, data, out, epochs, overrides, resume, overwrite, device, seed) -> list[str]:
    """The ``composer train`` arguments each process of ``--nproc`` gets: the same, without ``--nproc``
    (``--dataset`` is already among the ``--set`` overrides; ``--allow-plugins`` is passed on)."""
    from composer.registry import plugins_allowed

    argv = ["train", str(blueprint), "--device", device]
    for flag, value in (("--data", data), ("--out", out), ("--epochs", epochs), ("--seed", seed)):
        if value is not None:
            argv += [flag, str(value)]
    for override in overrides:
        argv += ["--set", override]
    argv += ["--resume"] * resume + ["--overwrite"] * overwrite + ["--allow-plugins"] * plugins_allowed()
    return argv


def _data_commands(app: typer.Typer) -> None:
    data_app = typer.Typer(help="Look at data files.\n\nExample: composer data inspect mosi_unaligned_50.pkl", no_args_is_help=True)

    @data_app.command("inspect")
    def inspect_command(
        file: Path = typer.Argument(..., help="A standard-layout feature pickle (.pkl)."),
        json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the listing as JSON."),
    ) -> None:
        """Splits, keys, shapes, dtypes, value ranges and non-finite counts of a feature file (no code runs).

        Example: composer data inspect mosi_unaligned_50.pkl
        """
        import json

        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        from composer.data.base import shown
        from composer.data.inspect import inspect_file

        def cell(value) -> Text:  # text from the file: control characters escaped, no rich markup read
            return Text(shown(value, 120))

        info = inspect_file(file)
        console = Console(highlight=False, width=150)
        for split, part in info["splits"].items():
            if "keys" not in part:
                console.print(cell(f"{split}: {part['note']}"))
                continue
            table = Table(title=cell(f"{split}: {', '.join(map(str, part['samples'])) or '?'} samples"), header_style="bold")
            for col in ("key", "shape", "dtype", "min", "max", "non-finite"):
                table.add_column(col, justify="left" if col in ("key", "dtype") else "right")
            for key, row in part["keys"].items():
                table.add_row(cell(key), cell(row.get("shape", "")), cell(row.get("dtype", row.get("note", ""))), f"{row['min']:.4g}" if "min" in row else "",
                              f"{row['max']:.4g}" if "max" in row else "", str(row.get("non_finite", "")))
            console.print(table)
        if json_out is not None:
            json_out.write_text(json.dumps(info, indent=2, default=str))

    app.add_typer(data_app, name="data")
