"""Every configuration of blueprints/search/fusion_zoo.yaml, each trained with 3 seeds on the
built-in synthetic data: the table in docs/search.md ("What the fusion zoo finds").

Run: python examples/fusion_zoo_benchmark.py  (about two minutes on 2 CPU cores)
"""

from __future__ import annotations

import itertools
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

import composer

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "blueprints/search/fusion_zoo.yaml"
SEEDS = (0, 1, 2)


def main() -> None:
    raw = yaml.safe_load(ZOO.read_text())
    operators = raw["search"]["space"]["blocks.fusion"]["choice"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for fusion, seq, vec in itertools.product(operators, (False, True), (False, True)):
            data = yaml.safe_load(ZOO.read_text())
            data["blocks"].update(fusion=fusion)
            data["blocks"]["msaf_seq"]["enabled"] = seq
            data["blocks"]["msaf_vec"]["enabled"] = vec
            maes, params = [], None
            for seed in SEEDS:
                result = composer.train(data, out=Path(tmp) / f"run_{len(rows)}_{seed}", seed=seed, progress=False)
                maes.append(result.summary["best"]["test"]["mae"])
                params = result.summary["parameters"]
            rows.append((fusion["type"], seq, vec, params, statistics.fmean(maes), statistics.pstdev(maes)))
            print(f"{fusion['type']:24s} msaf_seq={seq!s:5} msaf_vec={vec!s:5} params={params:7,d} test MAE {rows[-1][4]:.3f} ± {rows[-1][5]:.3f}", flush=True)
    print("\n| fusion | MSAF on sequences | MSAF on vectors | parameters | test MAE (3 seeds) |")
    print("|---|---|---|---|---|")
    for op, seq, vec, params, mean, std in sorted(rows, key=lambda r: r[4]):
        print(f"| {op} | {'yes' if seq else 'no'} | {'yes' if vec else 'no'} | {params:,} | {mean:.3f} ± {std:.3f} |")


if __name__ == "__main__":
    sys.exit(main())
