"""Architecture search: sampling, re-validation, pruned invalid trials, resume, outputs."""

from pathlib import Path

import optuna
import pytest

import composer
from composer.cli import main
from composer.search import search
from composer.search.study import tally, trial_note

BLUEPRINT = """
# yaml-language-server: $schema=../docs/blueprint.schema.json
blueprint: 1
name: search_toy
modalities:
  text:   {features: 6, length: 5}
  audio:  {features: 3, length: 5}
blocks:
  text_enc:  {type: lstm, in: text, hidden: 4, output: last}
  audio_enc: {type: lstm, in: audio, hidden: 4, output: last}
  fusion:    {type: concat, in: [text_enc, audio_enc]}
  head:      {type: mlp, in: fusion, hidden: [4], out: 1}
losses:
  - {type: l1, pred: head}
training:
  epochs: 1
  batch_size: 16
  data: {samples: {train: 32, valid: 16, test: 16}}
search:
  objective: {metric: mae, split: valid, direction: minimize}
  trials: 3
  sampler: random
  space:
    blocks.text_enc.hidden: {int: [2, 6]}
    blocks.head.hidden: {choice: [[4], [6, 3]]}
    blocks.fusion.enabled: {choice: [true, false]}
"""


@pytest.fixture
def blueprint_file(tmp_path) -> Path:
    path = tmp_path / "toy.yaml"
    path.write_text(BLUEPRINT)
    return path


def test_search_runs_trials_and_writes_a_valid_best_blueprint(blueprint_file, tmp_path):
    result = search(blueprint_file, out=tmp_path / "s", trials=4)
    states = [t.state for t in result.study.trials]
    assert len(states) == 4
    assert (tmp_path / "s" / "trials.csv").exists()
    if optuna.trial.TrialState.COMPLETE in states:
        best = composer.load_blueprint(result.best_blueprint)
        assert best.blocks["fusion"].enabled is True


def test_invalid_configuration_is_a_pruned_trial_with_its_reason(blueprint_file, tmp_path):
    result = search(blueprint_file, out=tmp_path / "s", trials=6, sampler="random", seed=3)
    invalid = [t for t in result.study.trials if "invalid" in t.user_attrs]
    assert invalid, "a disabled concat cannot pass through, so some trial must be invalid"
    assert all(t.state == optuna.trial.TrialState.PRUNED for t in invalid)
    assert "cannot disable" in invalid[0].user_attrs["invalid"]


def test_search_resumes_the_same_study_up_to_the_total(blueprint_file, tmp_path):
    search(blueprint_file, out=tmp_path / "s", trials=2)
    result = search(blueprint_file, out=tmp_path / "s", trials=3)
    assert len(result.study.trials) == 3


def test_interrupted_trial_is_queued_again(blueprint_file, tmp_path):
    out = tmp_path / "s"
    out.mkdir()
    study = optuna.create_study(study_name="search_toy", storage=f"sqlite:///{out / 'study.db'}", direction="minimize")
    stale = study.ask({"blocks.text_enc.hidden": optuna.distributions.IntDistribution(2, 6)})
    assert stale.params  # left RUNNING, as after a kill
    result = search(blueprint_file, out=out, trials=2)
    failed = [t for t in result.study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 1 and "interrupted" in trial_note(failed[0], result.study.trials)
    retry = next(t for t in result.study.trials if t.user_attrs.get("retry_of") == failed[0].number)
    assert failed[0].params.items() <= retry.params.items() and retry.state != optuna.trial.TrialState.FAIL
    assert tally(result.study)["counted"] == 2  # the interrupted trial does not count; its retry does


def test_blueprint_without_search_space_is_a_clear_error(tmp_path):
    path = tmp_path / "plain.yaml"
    path.write_text(BLUEPRINT.split("search:")[0])
    with pytest.raises(composer.ComposerError, match="no `search.space`"):
        search(path, out=tmp_path / "s")


def test_search_command_prints_trials_and_best(blueprint_file, tmp_path, capsys):
    code = main(["search", str(blueprint_file), "--trials", "2", "--out", str(tmp_path / "s"), "--sampler", "random"])
    out = capsys.readouterr().out
    assert code == 0 and "study search_toy" in out and "trials.csv" in out
