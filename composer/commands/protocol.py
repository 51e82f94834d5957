"""``composer reproduce`` and ``composer robustness``: the papers' protocols over seeds."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from composer.commands.core import Device, Epochs, Overrides

REPRODUCE_HELP = """Run a preset's protocol over seeds and print the paper's table beside Composer's numbers.

Trains one model per seed (or, for a robustness protocol, per seed and missing rate), tests it, and prints MAE, Corr, both Acc-2 definitions (named), F1 and Acc-7 as mean ± std next to the numbers the blueprint's `reported:` entry holds. Writes <out>/<protocol>-<data>-<sha8>.json, .csv and .md (never over earlier results) with the data's record, the versions and the seeds. A finished run in <out> is reused and an interrupted one resumed only when it was trained with the same blueprint, data, epochs and seed; otherwise the command refuses (or, with --overwrite, trains it again). Without --data, a rerun uses the data <out> recorded.

Example:

    composer reproduce blueprints/variants/msaf_authors.yaml --data mosei_aligned_50.pkl --seeds 1,2,3,4,5

    composer reproduce blueprints/emt_dlfr.yaml --data mosi_unaligned.pkl --seeds 1111,1112,1113 --epochs 30
"""

ROBUSTNESS_HELP = """Robustness to missing inputs over seeds: EMT-DLFR's per-rate protocol or LNLN's.

per_rate: one model per missing rate (0.0 to 1.0 by 0.1) and seed, trained with the blueprint's temporal-mask views at that rate and tested at it with masks fixed by the seed; per-rate mean ± std and AUILC. lnln: one model per seed tested at 0.0 to 0.9. Seeds default to the `seeds:` of the blueprint's first `reported:` entry for the protocol, else training.seed (per_rate) or 1111, 1112, 1113 (lnln); per-rate mean ± std and the mean over the rates. Results go to <out>/<protocol>-<data>-<sha8>.json, .csv and .md; runs in <out> trained with other settings are refused (or retrained with --overwrite), never reused.

Example:

    composer robustness blueprints/emt_dlfr.yaml --protocol per_rate --seeds 1,2,3 --epochs 20
"""


def _ints(text: Optional[str]) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"'{text}': give seeds as a comma list of integers, e.g. 1111,1112,1113", param_hint="--seeds") from None


def _print(result) -> None:
    from rich.table import Table

    from composer.train.runlog import describe_data, make_console

    console = make_console()
    table = Table(title=f"{result.blueprint}: {result.protocol} protocol, seeds {', '.join(map(str, result.seeds))}")
    for column in ("metric", "paper", "Composer (mean ± std)"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for row in result.comparison_rows():
        table.add_row(row["metric"], row["paper"], row["composer"])
    console.print(table)
    reported = next((r for r in result.reported if r["protocol"] == result.protocol), None)
    if reported:
        console.print(f"paper: {reported['source']} ({reported['dataset']})")
    console.print(f"data: {describe_data(result.provenance['data'])}")
    console.print(f"data SHA-256 {result.provenance['data_sha256']}")
    console.print(f"results: {', '.join(str(p) for p in result.written)}")


def register(app: typer.Typer) -> None:
    def run(blueprint, protocol, data, out, seeds, rates, epochs, overrides, device, overwrite):
        from composer.train.evaluation import parse_rates
        from composer.train.protocol import run_protocol
        from composer.train.trainer import as_blueprint

        bp = as_blueprint(blueprint, overrides)
        result = run_protocol(
            bp, protocol, data=data, out=out or Path("runs") / f"{bp.name}_{protocol}", seeds=_ints(seeds),
            rates=parse_rates(rates) if rates else None, epochs=epochs, device=device, overwrite=overwrite,
        )
        _print(result)

    @app.command("reproduce", help=REPRODUCE_HELP)
    def reproduce_command(
        blueprint: Path = typer.Argument(..., help="Blueprint YAML file (a paper preset)."),
        data: Optional[str] = typer.Option(None, "--data", help="'synthetic' or a feature file (default: the data <out> recorded, else training.data)."),
        protocol: Optional[str] = typer.Option(None, "--protocol", help="standard, per_rate or lnln (default: that of the blueprint's first `reported:` entry)."),
        out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: runs/<name>_<protocol>)."),
        seeds: Optional[str] = typer.Option(None, "--seeds", help="Comma list of seeds (default: the `seeds:` of the protocol's first `reported:` entry, else training.seed; LNLN: 1111,1112,1113)."),
        rates: Optional[str] = typer.Option(None, "--rates", help="per_rate / lnln: start:stop:step or a comma list (default: the paper's, else the protocol's)."),
        epochs: Epochs = None,
        overrides: Overrides = [],
        device: Device = "auto",
        overwrite: bool = typer.Option(False, "--overwrite", help="Train again the runs in <out> that were trained with other settings (they are deleted)."),
    ) -> None:
        from composer.train.trainer import as_blueprint

        chosen = protocol or next((r.protocol for r in as_blueprint(blueprint, overrides).reported), "standard")
        run(blueprint, chosen, data, out, seeds, rates, epochs, overrides, device, overwrite)

    @app.command("robustness", help=ROBUSTNESS_HELP)
    def robustness_command(
        blueprint: Path = typer.Argument(..., help="Blueprint YAML file."),
        protocol: str = typer.Option("per_rate", "--protocol", help="per_rate (EMT-DLFR) or lnln (LNLN)."),
        data: Optional[str] = typer.Option(None, "--data", help="'synthetic' or a feature file (default: the data <out> recorded, else training.data)."),
        out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: runs/<name>_<protocol>)."),
        seeds: Optional[str] = typer.Option(None, "--seeds", help="Comma list of seeds (default: the `seeds:` of the protocol's first `reported:` entry, else training.seed; lnln: 1111,1112,1113)."),
        rates: Optional[str] = typer.Option(None, "--rates", help="start:stop:step or a comma list (default: the protocol's)."),
        epochs: Epochs = None,
        overrides: Overrides = [],
        device: Device = "auto",
        overwrite: bool = typer.Option(False, "--overwrite", help="Train again the runs in <out> that were trained with other settings (they are deleted)."),
    ) -> None:
        if protocol not in ("per_rate", "lnln"):
            raise typer.BadParameter(f"'{protocol}': use per_rate or lnln", param_hint="--protocol")
        run(blueprint, protocol, data, out, seeds, rates, epochs, overrides, device, overwrite)
