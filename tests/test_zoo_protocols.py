"""The zoo's models through the papers' protocols: a `reported:` entry's `seeds:` are the seeds
`composer reproduce` / `composer robustness` train when `--seeds` is not given (MMSA's five,
1111-1115), explicit seeds win; a multi-task zoo model (MLF-DNN on CH-SIMS) runs the standard
protocol over its entry's five seeds and LNLN the robustness protocol at two rates, end to end
through the command line on synthetic data at test size. scripts/run_zoo_protocols.sh runs every
zoo model the same way (docs/zoo.md, "Protocols for every model")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from composer.cli import main
from composer.errors import BlueprintError
from composer.train.protocol import LNLN_SEEDS, run_protocol

from test_lnln import SMALL as LNLN_SMALL, TRAINING_VOCAB as LNLN_VOCAB
from test_mmsa_zoo import LENGTHS, WIDTHS
from tiny import BLOCKS, MODS

ZOO = Path(__file__).resolve().parents[1] / "blueprints" / "zoo"
MMSA_SEEDS = [1111, 1112, 1113, 1114, 1115]
TINY_DATA = "training.data.samples={train: 8, valid: 4, test: 4}"
QUIET = {"progress": False, "log": lambda _: None}


def _tiny(*reported: dict) -> dict:
    return {
        "blueprint": 1, "name": "seeds", "modalities": MODS, "blocks": BLOCKS, "losses": [{"type": "l1", "pred": "head"}],
        "training": {"batch_size": 8, "epochs": 1, "seed": 7, "data": {"samples": {"train": 8, "valid": 4, "test": 4}}},
        "reported": list(reported),
    }


def _entry(protocol: str = "standard", **extra) -> dict:
    return {"source": "A paper, Table 1", "dataset": "synthetic", "protocol": protocol, "metrics": {"mae": 0.9}, **extra}


def test_the_reported_entrys_seeds_are_the_default_and_explicit_seeds_win(tmp_path):
    bp = _tiny(_entry(seeds=[21, 22]), _entry("lnln", seeds=[23]))
    assert run_protocol(bp, "standard", out=tmp_path / "a", **QUIET).seeds == [21, 22]
    assert run_protocol(bp, "standard", out=tmp_path / "b", seeds=[5], **QUIET).seeds == [5]
    lnln = run_protocol(bp, "lnln", out=tmp_path / "c", rates=[0.0, 0.5], **QUIET)
    assert lnln.seeds == [23] and len(lnln.runs) == 2  # the lnln entry's seed, tested at both rates


def test_without_seeds_in_the_printed_entry_the_defaults_stay(tmp_path):
    """The entry the table prints decides: a later entry's seeds are not borrowed."""
    bp = _tiny(_entry(), _entry(seeds=[31, 32]))
    assert run_protocol(bp, "standard", out=tmp_path, **QUIET).seeds == [7]  # training.seed


def test_reported_seeds_must_be_distinct_integers():
    from composer.train.trainer import as_blueprint

    with pytest.raises(BlueprintError, match=r"reported\[0\]\.seeds: \[1111, 1111\] repeat a seed"):
        as_blueprint(_tiny(_entry(seeds=[1111, 1111])))
    with pytest.raises(BlueprintError, match=r"reported\[0\]\.seeds: List should have at least 1 item"):
        as_blueprint(_tiny(_entry(seeds=[])))


def test_every_mmsa_results_table_entry_of_the_zoo_names_mmsas_five_seeds():
    """Top level and inside `datasets:` (each dataset's `reported:` replaces the list)."""
    import yaml

    from composer.blueprint.load import load_blueprint

    total = 0
    for path in sorted(ZOO.glob("*.yaml")):
        text = path.read_text()
        entries = {}
        for dataset in [None, *(yaml.safe_load(text).get("datasets") or {})]:
            for entry in load_blueprint(path, dataset=dataset).reported:
                if "result-stat.md" in entry.source:
                    entries[(entry.source, entry.dataset)] = entry.seeds
        assert all(seeds == MMSA_SEEDS for seeds in entries.values()), (path.name, entries)
        assert len(entries) == text.count('source: "thuiar/MMSA (MIT), results/result-stat.md'), path.name
        total += len(entries)
    assert total >= 13


def _mlf_dnn_sets() -> list[str]:
    sizes = [f"modalities.{m}.features={w}" for m, w in WIDTHS.items()] + [f"modalities.{m}.length={n}" for m, n in LENGTHS.items()]
    return [arg for s in (*sizes, TINY_DATA, "training.batch_size=4") for arg in ("--set", s)]


def test_mlf_dnn_reproduce_on_sims_trains_the_entrys_five_seeds(tmp_path, capsys):
    out = tmp_path / "mlf_dnn"
    code = main(["reproduce", str(ZOO / "mlf_dnn.yaml"), "--dataset", "sims", "--data", "synthetic", "--epochs", "1",
                 "--out", str(out), *_mlf_dnn_sets()])
    assert code == 0
    saved = json.loads(next(out.glob("standard-synthetic-*.json")).read_text())
    assert saved["seeds"] == MMSA_SEEDS and sorted(r["seed"] for r in saved["runs"]) == MMSA_SEEDS
    assert {"mean", "std"} <= set(saved["per_rate"][0]["mae"]) and saved["per_rate"][0]["mae"]["std"] > 0
    assert sorted(p.name for p in out.glob("seed_*")) == [f"seed_{s}" for s in MMSA_SEEDS]
    printed = capsys.readouterr().out
    assert "0.3958" in printed and "±" in printed  # MMSA's MAE beside Composer's mean ± std
    # explicit --seeds win over the entry's
    code = main(["reproduce", str(ZOO / "mlf_dnn.yaml"), "--dataset", "sims", "--data", "synthetic", "--epochs", "1",
                 "--out", str(tmp_path / "two"), "--seeds", "1111,7", *_mlf_dnn_sets()])
    assert code == 0 and json.loads(next((tmp_path / "two").glob("standard-*.json")).read_text())["seeds"] == [1111, 7]


def test_lnln_robustness_protocol_on_the_zoo_model_at_two_rates(tmp_path):
    out = tmp_path / "lnln"
    sets = [*LNLN_SMALL, *LNLN_VOCAB, "blocks.text_enc_c.vocab_size=120", "training.batch_size=4",
            "training.scheduler.warmup_steps=1", TINY_DATA]
    code = main(["robustness", str(ZOO / "lnln.yaml"), "--protocol", "lnln", "--data", "synthetic", "--epochs", "1",
                 "--rates", "0,0.5", "--out", str(out), *[a for s in sets for a in ("--set", s)]])
    assert code == 0
    saved = json.loads(next(out.glob("lnln-synthetic-*.json")).read_text())
    assert saved["rates"] == [0.0, 0.5] and len(saved["runs"]) == 2 * len(saved["seeds"])
    assert saved["seeds"] == next((e["seeds"] for e in saved["reported"] if e["protocol"] == "lnln" and e.get("seeds")), LNLN_SEEDS)
    assert set(saved["mean_over_rates"]) >= {"mae", "corr"}
    clean, masked = (next(r for r in saved["per_rate"] if r["rate"] == rate) for rate in (0.0, 0.5))
    assert clean["mae"] != masked["mae"]  # half of every modality dropped changes the predictions
