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


# -- the sampler record: reproducible searches across Optuna versions (issue #26, part 5) ---


def _draws(sampler, n: int = 14) -> list[float]:
    study = optuna.create_study(sampler=sampler)
    study.optimize(lambda t: (t.suggest_float("x", -3, 3) - 1) ** 2 + t.suggest_int("k", 0, 4), n_trials=n)
    return [(t.params["x"], t.params["k"]) for t in study.trials]


def test_a_sampler_states_every_setting_so_other_optuna_defaults_draw_the_same(monkeypatch):
    """Another Optuna's defaults (here Optuna 4's TPE: no constant liar, univariate, and a
    different startup count) must not change what a search draws."""
    from composer.search.sampler import make_sampler

    ours = _draws(make_sampler("tpe", {}, seed=3))

    class OtherDefaults(optuna.samplers.TPESampler):
        def __init__(self, **kwargs):
            for key, value in (("constant_liar", False), ("multivariate", False), ("n_startup_trials", 4), ("n_ei_candidates", 8)):
                kwargs.setdefault(key, value)
            super().__init__(**kwargs)

    monkeypatch.setattr(optuna.samplers, "TPESampler", OtherDefaults)
    assert _draws(make_sampler("tpe", {}, seed=3)) == ours


def test_every_study_records_its_sampler_seed_and_optuna_version(blueprint_file, tmp_path):
    import json

    from composer.search.report import write_report

    result = search(blueprint_file, out=tmp_path / "s", trials=1, sampler="random", seed=4)
    attrs = result.study.user_attrs
    assert attrs["sampler"] == {"name": "random", "seed": 4, "options": {}}
    assert attrs["optuna_version"] == optuna.__version__ and attrs["optuna_versions"] == [optuna.__version__]
    assert attrs["sampler_seeds"] == [4]
    assert json.loads((tmp_path / "s" / "search.json").read_text())["sampler"] == attrs["sampler"]
    tpe = search(blueprint_file, out=tmp_path / "t", trials=1, sampler="tpe").study.user_attrs["sampler"]
    assert tpe["options"] == {"n_startup_trials": 10, "n_ei_candidates": 24, "multivariate": True, "group": False, "constant_liar": True}
    md, _ = write_report(tmp_path / "s")
    assert f"Sampler: `random (seed 4)`, Optuna {optuna.__version__}" in md.read_text()


def test_resuming_a_study_under_another_sampler_is_refused_with_the_reason(blueprint_file, tmp_path):
    search(blueprint_file, out=tmp_path / "s", trials=1, sampler="random", seed=0)
    with pytest.raises(composer.ComposerError, match=r"begun with sampler random \(seed 0\) under Optuna .*name 'random' then, 'tpe' now.*"
                                                     r"run it with --sampler random \(and the same search.sampler\), or start a new study"):
        search(blueprint_file, out=tmp_path / "s", trials=2, sampler="tpe", seed=0)
    assert main(["search", str(blueprint_file), "--trials", "2", "--out", str(tmp_path / "s"), "--sampler", "tpe"]) == 1
    resumed = search(blueprint_file, out=tmp_path / "s", trials=2, sampler="random", seed=0)
    assert len(resumed.study.trials) == 2  # nothing ran while refused; the same sampler resumes


def test_a_study_with_other_sampler_options_is_refused(blueprint_file, tmp_path, monkeypatch):
    from composer.search import sampler

    search(blueprint_file, out=tmp_path / "s", trials=1, sampler="tpe")
    monkeypatch.setitem(sampler.SAMPLER_OPTIONS, "tpe", {**sampler.SAMPLER_OPTIONS["tpe"], "constant_liar": False})
    with pytest.raises(composer.ComposerError, match="option constant_liar True then, False now"):
        search(blueprint_file, out=tmp_path / "s", trials=2, sampler="tpe")


def test_another_seed_joining_a_study_is_noted_and_recorded(blueprint_file, tmp_path, capsys):
    search(blueprint_file, out=tmp_path / "s", trials=1, sampler="random", seed=0)
    capsys.readouterr()
    joined = search(blueprint_file, out=tmp_path / "s", trials=2, sampler="random", seed=1)
    assert "was begun with seed 0; this search draws with seed 1 (recorded: seeds 0, 1)" in capsys.readouterr().err
    assert joined.study.user_attrs["sampler_seeds"] == [0, 1] and joined.study.user_attrs["sampler"]["seed"] == 0


def test_resuming_under_another_optuna_version_is_noted_and_recorded(blueprint_file, tmp_path, capsys):
    first = search(blueprint_file, out=tmp_path / "s", trials=1, sampler="random")
    first.study.set_user_attr("optuna_version", "4.2.0")
    first.study.set_user_attr("optuna_versions", ["4.2.0"])
    capsys.readouterr()
    again = search(blueprint_file, out=tmp_path / "s", trials=2, sampler="random")
    assert f"begun under Optuna 4.2.0 and now runs under {optuna.__version__}" in capsys.readouterr().err
    assert again.study.user_attrs["optuna_versions"] == ["4.2.0", optuna.__version__]
    assert again.study.user_attrs["optuna_version"] == "4.2.0"
