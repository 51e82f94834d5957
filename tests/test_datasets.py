"""One blueprint, several datasets: ``datasets:`` settings chosen with ``--dataset NAME``."""

from __future__ import annotations

import pytest
import yaml

import composer
from composer.cli import main
from composer.errors import BlueprintError
from tests.shipped import PRESET_DATASETS, ROOT


@pytest.fixture()
def blueprint(tmp_path):
    data = yaml.safe_load((ROOT / "blueprints/late_fusion.yaml").read_text())
    data["datasets"] = {
        "mosi": {"training.lr": 0.01, "blocks.head.hidden": [7]},
        "sims": {"training.lr": 0.002, "task.label_range": [-1, 1]},
    }
    path = tmp_path / "per_dataset.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_a_dataset_applies_its_settings_and_is_recorded(blueprint):
    bp = composer.load_blueprint(blueprint, dataset="sims")
    assert bp.training.lr == 0.002 and bp.task.label_range == (-1, 1) and bp.dataset == "sims"
    base = composer.load_blueprint(blueprint)
    assert base.training.lr != 0.002 and base.dataset is None and set(base.datasets) == {"mosi", "sims"}


def test_set_after_a_dataset_wins_and_the_saved_blueprint_reloads_equal(blueprint):
    bp = composer.load_blueprint(blueprint, ["dataset=mosi", "training.lr=0.5"])
    assert bp.training.lr == 0.5 and bp.blocks["head"].hidden == [7]
    again = composer.load_blueprint(bp.text())
    assert again == bp and again.dataset == "mosi"


def test_an_unknown_dataset_is_refused_with_a_suggestion(blueprint):
    with pytest.raises(BlueprintError, match="unknown dataset 'mosii'") as info:
        composer.load_blueprint(blueprint, dataset="mosii")
    assert info.value.problems[0].suggestion == "mosi"


def test_validate_checks_every_datasets_settings_with_file_and_line(blueprint, capsys):
    assert main(["validate", str(blueprint)]) == 0
    assert "datasets mosi, sims checked" in capsys.readouterr().out
    data = yaml.safe_load(blueprint.read_text())
    data["datasets"]["sims"]["blocks.haed.out"] = 1
    blueprint.write_text(yaml.safe_dump(data, sort_keys=False))
    assert main(["validate", str(blueprint)]) == 1
    err = capsys.readouterr().err
    assert f"{blueprint}:" in err and "datasets.sims.blocks.haed.out: the blueprint has no block 'haed'" in err


def test_the_dataset_flag_is_the_dataset_override(blueprint, capsys):
    assert main(["validate", str(blueprint), "--dataset", "sims"]) == 0
    assert "dataset sims" in capsys.readouterr().out


@pytest.mark.parametrize("path,dataset", PRESET_DATASETS, ids=[f"{p.stem}-{d}" for p, d in PRESET_DATASETS])
def test_every_shipped_dataset_entry_passes_the_whole_check(path, dataset):
    """Each ``datasets:`` entry of a shipped preset makes a blueprint that passes every check
    (plan, shapes, training section, size) and records the dataset it was made for."""
    checked = composer.load_blueprint(path, dataset=dataset)
    assert checked.dataset == dataset and checked.size.model_params > 0
