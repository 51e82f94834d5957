"""Search beyond one number: several objectives and their Pareto front, model-size objectives
and limits measured before training, seeds, re-training the best, device placement."""

from pathlib import Path

import optuna
import pytest
import yaml

import composer
from composer.search import search
from composer.search.study import rerun_best, worker_placement

ROOT = Path(__file__).parents[1]
SMALL_HCT = [
    "modalities.text.length=8", "modalities.audio.length=10", "modalities.vision.length=9",
    "modalities.text.features=12", "blocks.text_enc.hidden=10", "blocks.audio_enc.hidden=10", "blocks.vision_enc.hidden=10",
    "blocks.head.hidden=[60]", "training.batch_size=16", "training.data.samples={train: 48, valid: 16, test: 16}",
]


def _hct_file(tmp_path: Path, search_section: dict) -> Path:
    data = yaml.safe_load((ROOT / "blueprints/hct_mg.yaml").read_text())
    data["search"] = search_section
    path = tmp_path / "hct.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_two_objective_search_on_hct_mg_writes_a_pareto_front_of_valid_blueprints(tmp_path):
    path = _hct_file(tmp_path, {
        "objective": [{"metric": "mae", "direction": "minimize"}, {"metric": "params", "direction": "minimize"}],
        "sampler": "random", "epochs": 1,
        "space": {"blocks.fusion.layers": {"int": [1, 3]}, "blocks.fusion.heads": {"choice": [1, 2, 5]}},
    })
    result = search(path, overrides=SMALL_HCT, out=tmp_path / "s", trials=4, seed=0)
    assert len(result.study.directions) == 2 and result.best_blueprint is None
    assert result.pareto and all(p.parent.name == "pareto" for p in result.pareto)
    front = {t.number for t in result.study.best_trials}
    assert {int(p.stem.split("_")[1]) for p in result.pareto} == front
    for p in result.pareto:
        composer.load_blueprint(p)  # each member validates as is
    assert (tmp_path / "s" / "pareto" / "pareto.csv").exists() and (tmp_path / "s" / "pareto.png").exists()
    params = {t.number: t.values[1] for t in result.study.trials if t.values}
    built = composer.compile_blueprint(composer.load_blueprint(result.pareto[0]))
    assert built.parameter_summary()["model"] == params[int(result.pareto[0].stem.split("_")[1])]


def test_size_limits_prune_before_training_and_size_objectives_need_no_training(tmp_path):
    path = _hct_file(tmp_path, {
        "objective": {"metric": "params"}, "sampler": "random",
        "limits": {"params": 50_000},
        "space": {"blocks.head.hidden": {"choice": [[8], [400]]}},
    })
    result = search(path, overrides=SMALL_HCT, out=tmp_path / "s", trials=4, seed=2)
    for t in result.study.trials:
        assert not Path(t.user_attrs.get("run_dir", tmp_path / "none")).exists()  # nothing was trained
        if t.params and result.space["blocks.head.hidden"].choice[t.params["blocks.head.hidden"]] == [400]:
            assert t.state == optuna.trial.TrialState.PRUNED and "too large: params" in t.user_attrs["invalid"]
        else:
            assert t.state == optuna.trial.TrialState.COMPLETE and t.value < 50_000


def test_seeds_average_each_configuration_and_rerun_best_ranks_with_new_seeds(tmp_path):
    from tests_search_toy import toy_file

    path = toy_file(tmp_path, seeds=2)
    result = search(path, out=tmp_path / "s", trials=3, sampler="random")
    done = [t for t in result.study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert done
    for t in done:
        values = [row["valid_mae"] for row in t.user_attrs["per_seed"]]
        assert len(values) == 2 and t.value == pytest.approx(sum(values) / 2)
        assert "valid_mae" in t.user_attrs["std"] and len(set(t.user_attrs["seeds"])) == 2
    rows = rerun_best(path, 2, seeds=2, out=tmp_path / "s")
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    means = [r["mean_valid_mae"] for r in rows]
    assert means == sorted(means) and (tmp_path / "s" / "rerun.md").exists()
    assert all(r["seeds"].split()[0] != str(done[0].user_attrs["seeds"][0]) for r in rows)  # new seeds


def test_worker_placement_pins_processes_to_devices():
    placed = worker_placement(["cuda:0", "cuda:1"], 2)
    assert [p["env"].get("CUDA_VISIBLE_DEVICES") for p in placed] == ["0", "0", "1", "1"]
    assert {p["device"] for p in placed} == {"cuda"}
    assert worker_placement(["cpu"], 3) == [{"device": "cpu", "env": {}}] * 3
    with pytest.raises(composer.ComposerError, match="not cpu or cuda:N"):
        worker_placement(["gpu0"])


def test_cpu_devices_run_workers_through_the_placement(tmp_path):
    from tests_search_toy import toy_file

    from composer.search.study import tally

    result = search(toy_file(tmp_path), out=tmp_path / "s", trials=3, devices=["cpu"], trials_per_device=2, sampler="random")
    assert tally(result.study)["counted"] == 3
