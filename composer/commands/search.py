"""``composer search``: Optuna over the choices a blueprint's ``search.space`` declares."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from composer.commands.core import SET_HELP, console
from composer.errors import ComposerError


def search(
    blueprint: Path = typer.Argument(..., help="Blueprint YAML file with a `search:` section."),
    trials: Optional[int] = typer.Option(None, "--trials", "-n", min=1, help="Total trials the study should reach (default: search.trials)."),
    storage: Optional[str] = typer.Option(None, "--storage", help="postgresql://..., sqlite:///..., or journal:PATH (default: SQLite in the search folder)."),
    study_name: Optional[str] = typer.Option(None, "--study", help="Study name (default: the blueprint name)."),
    sampler: Optional[str] = typer.Option(None, "--sampler", help="tpe | random | grid (default: search.sampler)."),
    pruner: Optional[str] = typer.Option(None, "--pruner", help="median | none (default: search.pruner)."),
    workers: int = typer.Option(1, "--workers", min=1, help="Worker processes sharing the study."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Epochs per trial (default: search.epochs or training.epochs)."),
    data: Optional[str] = typer.Option(None, "--data", help="Data file (default: the blueprint's training.data, synthetic)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Search folder (default: runs/<name>/search)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N"),
    seed: int = typer.Option(0, "--seed", help="Sampler seed."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Stop starting new trials after this many seconds."),
    devices: Optional[str] = typer.Option(None, "--devices", help="Comma list of devices (cuda:0,cuda:1 or cpu): worker processes pinned to each."),
    trials_per_device: int = typer.Option(1, "--trials-per-device", min=1, help="Worker processes (concurrent trials) per device of --devices."),
    rerun_best: Optional[int] = typer.Option(None, "--rerun-best", min=1, help="Afterwards, train the K best configurations again with new seeds and rank them (rerun.csv, rerun.md)."),
    rerun_seeds: int = typer.Option(3, "--rerun-seeds", min=1, help="Seeds per configuration for --rerun-best."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP),
) -> None:
    """Search architecture choices with Optuna; resumable; writes best.yaml and trials.csv.

    Example: composer search blueprints/msaf_placements.yaml --trials 8 --epochs 3
    """
    from composer.search.objective import decode_params
    from composer.search.study import search as run_search
    from composer.search.workers import trial_note

    for name, value, allowed in (("--sampler", sampler, ("tpe", "random", "grid", "nsga2")), ("--pruner", pruner, ("median", "none"))):
        if value is not None and value not in allowed:
            raise typer.BadParameter(f"{value!r}; choose one of {', '.join(allowed)}", param_hint=name)
    result = run_search(
        blueprint, overrides=set_ or [], trials=trials, storage=storage, study_name=study_name, sampler=sampler,
        pruner=pruner, workers=workers, out=out, data=data, epochs=epochs, device=device, seed=seed, timeout=timeout,
        devices=devices.split(",") if devices else None, trials_per_device=trials_per_device,
    )
    con = console()
    table = Table(title=f"study {result.study.study_name}", header_style="bold")
    names = list(dict.fromkeys(k for t in result.study.trials for k in t.params))
    for col in ["#", "state", "value", *names, "note"]:
        table.add_column(col, overflow="fold")
    for t in result.study.trials:
        note = trial_note(t, result.study.trials)
        value = "" if t.values is None else ", ".join(f"{v:.4g}" for v in t.values)
        params = decode_params(result.space, t.params)
        table.add_row(str(t.number), t.state.name.lower(), value, *[str(params.get(n, "")) for n in names], note[:160])
    con.print(table)
    if result.best_blueprint is not None:
        con.print(f"best value {result.best_value:.4f}; best blueprint: {result.best_blueprint}")
    elif result.pareto:
        con.print(f"Pareto front: {len(result.pareto)} blueprints in {result.out_dir / 'pareto'} (table pareto.csv, plot pareto.png)")
    con.print(f"trials table: {result.out_dir / 'trials.csv'}")
    if result.failure is not None:
        raise ComposerError(f"{result.failure}; see {result.out_dir / 'trials.csv'}")
    if rerun_best:
        from composer.search.study import rerun_best as run_rerun

        rows = run_rerun(blueprint, rerun_best, seeds=rerun_seeds, overrides=set_ or [], study_name=study_name, storage=storage,
                         out=result.out_dir, data=data, epochs=epochs, device=device)
        con.print(f"trained the {len(rows)} best again with {rerun_seeds} seeds each: {result.out_dir / 'rerun.md'}")


def search_report(
    folder: Path = typer.Argument(..., help="A search folder (the --out of composer search)."),
) -> None:
    """Write one page about a search: trials, history, importances, Pareto plot, the best blueprint's picture and its differences from the base.

    Writes report.md and report.html into the folder.

    Example: composer search-report runs/hct_mg/search
    """
    from composer.search.report import write_report

    md, page = write_report(folder)
    console().print(f"wrote {md} and {page}")


def register(app: typer.Typer) -> None:
    app.command()(search)
    app.command("search-report")(search_report)
