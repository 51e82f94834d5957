"""The papers' protocols over seeds: standard (composer reproduce), per-rate robustness
(EMT-DLFR), LNLN; end to end on synthetic data and on a standard-layout pickle."""

import json
import pickle

import numpy as np
import pytest

import composer
from composer.cli import main
from composer.errors import ComposerError
from composer.train.protocol import run_protocol

MODS = {"text": {"features": 5, "length": 6}, "audio": {"features": 3, "length": 7}}


def _data(**extra):
    data = {
        "blueprint": 1, "name": "proto", "modalities": MODS,
        "blocks": {
            "text_enc": {"type": "gru", "in": "text", "hidden": 6, "output": "last"},
            "audio_enc": {"type": "gru", "in": "audio", "hidden": 4, "output": "last"},
            "fusion": {"type": "concat", "in": ["text_enc", "audio_enc"]},
            "head": {"type": "mlp", "in": "fusion", "out": 1},
        },
        "losses": [{"type": "l1", "pred": "head"}],
        "training": {"batch_size": 16, "epochs": 1, "views": {"incomplete": {"rate": 0.5, "rate_range": [0.0, 1.0]}},
                     "data": {"samples": {"train": 32, "valid": 16, "test": 24}}},
        "reported": [{"source": "A paper, Table 2, p. 7", "dataset": "synthetic", "metrics": {"mae": 0.9, "acc2_nonzero": 80.1}}],
    }
    data.update(extra)
    return data


def _pickle(path):
    rng = np.random.default_rng(0)
    splits = {}
    for split, n in (("train", 24), ("valid", 8), ("test", 8)):
        splits[split] = {
            "text": rng.standard_normal((n, 6, 5)).astype(np.float32),
            "audio": rng.standard_normal((n, 7, 3)).astype(np.float32),
            "audio_lengths": rng.integers(1, 8, size=n),
            "regression_labels": rng.uniform(-3, 3, size=(n, 1)).astype(np.float32),
            "id": np.array([f"{split}_{i}" for i in range(n)], dtype=object),
        }
    path.write_bytes(pickle.dumps(splits))
    return path


def test_standard_protocol_reports_mean_and_std_beside_the_paper(tmp_path):
    result = run_protocol(_data(), "standard", out=tmp_path, seeds=[1, 2], progress=False, log=lambda _: None)
    assert [r["seed"] for r in result.runs] == [1, 2] and result.runs[0]["metrics"] != result.runs[1]["metrics"]
    mae = [r["metrics"]["mae"] for r in result.runs]
    assert result.per_rate[0.0]["mae"][0] == pytest.approx(np.mean(mae)) and result.per_rate[0.0]["mae"][1] == pytest.approx(np.std(mae, ddof=1))
    rows = {r["metric"]: r for r in result.comparison_rows()}
    assert rows["MAE"]["paper"] == "0.9" and "±" in rows["MAE"]["composer"]
    assert rows["Acc-2 (negative / positive, zeros dropped)"]["paper"] == "80.1"
    assert "Acc-2 (negative / non-negative)" in rows  # both definitions, named
    saved_json, saved_csv, saved_md = result.written
    saved = json.loads(saved_json.read_text())
    assert len(saved["provenance"]["data_sha256"]) == 64 and saved["seeds"] == [1, 2] and saved["provenance"]["versions"]["torch"]
    assert "| MAE | 0.9 |" in saved_md.read_text()
    assert saved_csv.read_text().startswith("seed,rate,metric,value")


def test_per_rate_trains_one_model_per_rate_and_seed_with_views_at_that_rate(tmp_path):
    result = run_protocol(_data(), "per_rate", out=tmp_path, seeds=[3, 4], rates=[0.0, 0.5, 1.0], progress=False, log=lambda _: None)
    assert len(result.runs) == 6 and len({r["run_dir"] for r in result.runs}) == 6
    trained = composer.load_model(tmp_path / "seed_3" / "rate_0.50" / "best.safetensors").blueprint
    assert trained.training.views["incomplete"].rate == 0.5 and trained.training.views["incomplete"].rate_range is None
    assert set(result.auilc) >= {"mae", "corr"} and all(len(v) == 2 for v in result.auilc.values())
    # at rate 1 every step is dropped: the test inputs carry no signal, so the metrics differ from rate 0
    assert result.per_rate[1.0]["mae"] != result.per_rate[0.0]["mae"]


def test_lnln_tests_one_model_per_seed_at_every_rate_with_masks_fixed_by_the_seed(tmp_path):
    first = run_protocol(_data(), "lnln", out=tmp_path / "a", rates=[0.0, 0.3, 0.6], progress=False, log=lambda _: None)
    assert first.seeds == [1111, 1112, 1113]
    assert len({r["run_dir"] for r in first.runs}) == 3 and len(first.runs) == 9
    assert set(first.average) == set(first.auilc)
    again = run_protocol(_data(), "lnln", out=tmp_path / "a", rates=[0.0, 0.3, 0.6], progress=False, log=lambda _: None)
    assert [r["metrics"] for r in again.runs] == [r["metrics"] for r in first.runs]  # reused runs, the same masks


def test_an_interrupted_protocol_resumes_and_other_data_is_refused(tmp_path):
    run_protocol(_data(), "standard", out=tmp_path, seeds=[1, 2], progress=False, log=lambda _: None)
    (tmp_path / "seed_2" / "summary.json").unlink()  # seed 2 was interrupted after its checkpoint
    said = []
    run_protocol(_data(), "standard", out=tmp_path, seeds=[1, 2], progress=False, log=said.append)
    assert any("reusing the finished run" in s and "seed_1" in s for s in said)
    other = _data()
    other["training"]["data"]["seed"] = 7
    with pytest.raises(ComposerError, match="other data"):
        run_protocol(other, "standard", out=tmp_path, seeds=[1], progress=False, log=lambda _: None)


def test_protocol_arguments_are_checked():
    with pytest.raises(ComposerError, match="unknown protocol"):
        run_protocol(_data(), "tfr", out="unused")
    with pytest.raises(ComposerError, match="repeat"):
        run_protocol(_data(), "lnln", out="unused", seeds=[1, 1])
    with pytest.raises(ComposerError, match="clean inputs"):
        run_protocol(_data(), "standard", out="unused", rates=[0.0, 0.5])


def test_reproduce_command_on_a_standard_pickle(tmp_path, capsys):
    data = _data()
    data["training"]["data"] = {"source": "pickle", "path": str(_pickle(tmp_path / "feats.pkl"))}
    path = tmp_path / "preset.yaml"
    path.write_text(composer.dump_blueprint(composer.load_blueprint(data)))
    code = main(["reproduce", str(path), "--seeds", "5,6", "--out", str(tmp_path / "out")])
    assert code in (0, None)
    printed = capsys.readouterr().out
    assert "A paper, Table 2, p. 7" in printed and "MAE" in printed
    (saved,) = (tmp_path / "out").glob("standard-feats-*.json")
    assert json.loads(saved.read_text())["provenance"]["data_source"].endswith("feats.pkl")
    code = main(["robustness", str(path), "--protocol", "lnln", "--seeds", "5", "--rates", "0,0.5", "--out", str(tmp_path / "rob")])
    assert code in (0, None) and len(list((tmp_path / "rob").glob("lnln-feats-*.md"))) == 1
