"""Several optimisers and update stages (MMIM: the bound's networks on their own terms first,
then the main update), checked by validate, exact on resume."""

from __future__ import annotations

import pytest
import torch

import composer
from composer.cli import main
from composer.errors import BlueprintError
from composer.train.checkpoint import load_checkpoint
from composer.train.optim import build_optimizer, build_stage_optimizers
from tests.shipped import ROOT

MMIM = ROOT / "examples/objectives/mmim.yaml"
TINY = ["modalities.text.length=5", "modalities.audio.length=5", "modalities.vision.length=5", "vars.d=8",
        "training.data.samples={train: 16, valid: 8, test: 8}", "training.batch_size=8", "training.early_stop=null"]


def _ids(optimizer) -> set[int]:
    return {id(p) for g in optimizer.param_groups for p in g["params"]}


def test_each_parameter_has_one_optimiser():
    model = composer.compile_blueprint(composer.load_blueprint(MMIM, TINY))
    cfg = model.blueprint.training
    main_opt, stages = build_optimizer(model, cfg), build_stage_optimizers(model, cfg)
    bound = _ids(stages["bound"])
    assert bound == {id(p) for n, p in model.named_parameters() if n.startswith(("losses.4.", "losses.5."))}
    assert not bound & _ids(main_opt) and bound | _ids(main_opt) == {id(p) for p in model.parameters()}


def test_an_epoch_stage_updates_only_its_parameters():
    from composer.data import load_data
    from composer.train.trainer import Trainer, _Step

    trainer = Trainer(composer.load_blueprint(MMIM, TINY), progress=False)
    model = composer.compile_blueprint(trainer.bp)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    sums: dict[str, float] = {}
    model.train()
    trainer._epoch_stages(model, _Step(model, model), build_stage_optimizers(model, trainer.cfg), load_data(trainer.bp, None)["train"], 1, sums)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.startswith(("losses.4.", "losses.5.")) for n in changed)
    assert sums["stage/bound/loss"] != 0


def test_a_resumed_staged_run_equals_an_uninterrupted_one(tmp_path):
    composer.train(MMIM, out=tmp_path / "whole", overrides=TINY + ["training.epochs=2"], progress=False)
    composer.train(MMIM, out=tmp_path / "parts", overrides=TINY + ["training.epochs=1"], progress=False)
    composer.train(MMIM, out=tmp_path / "parts", overrides=TINY + ["training.epochs=2"], resume=True, progress=False)
    whole, parts = load_checkpoint(tmp_path / "whole" / "last.ckpt"), load_checkpoint(tmp_path / "parts" / "last.ckpt")
    assert all(torch.equal(whole["model"][k], parts["model"][k]) for k in whole["model"])
    assert whole["stages"]["bound"]["state"].keys() == parts["stages"]["bound"]["state"].keys()
    for k, s in whole["stages"]["bound"]["state"].items():
        assert all(torch.equal(s[f], parts["stages"]["bound"]["state"][k][f]) for f in s)


@pytest.mark.parametrize("stage,message", [
    ({"name": "bound", "objective": ["lld_tx"], "update": ["lld_tv"]}, "unknown loss or loss group 'lld_tx' (did you mean 'lld_tv'?)"),
    ({"name": "bound", "objective": ["lld_tv"], "update": ["lld_vt"]}, "unknown block or loss 'lld_vt'"),
    ({"name": "main", "objective": ["lld_tv"], "update": ["lld_tv"]}, "stage name 'main' is taken"),
])
def test_validate_refuses_a_wrong_stage_with_file_and_line(stage, message, capsys):
    assert main(["validate", str(MMIM), "--set", f"training.stages=[{stage}]".replace("'", "")]) == 1
    err = capsys.readouterr().err
    assert message in err and "training.stages[0]" in err


def test_two_stages_cannot_update_one_block():
    two = "training.stages=[{name: a, objective: [task], update: [head]}, {name: b, objective: [task], update: [head]}]"
    with pytest.raises(BlueprintError, match="already updated by stage 'a'"):
        composer.load_blueprint(MMIM, TINY + [two])
