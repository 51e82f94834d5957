"""``training.reinit`` (init, tensors) and ``training.param_groups[].params`` with ``lr: 0``.

MMSA's recipes the fields express: MMIM's ``do_train`` re-draws every matrix outside BERT with
``xavier_normal_`` (tests/test_mmsa_mmim.py compares with MMSA's own re-initialisation); MLMF
puts ``fusion_weights`` and ``fusion_bias`` at lr 0 and LMF leaves them out of its optimiser, so
they never change (tests/test_mmsa_multitask.py compares every parameter's lr and decay)."""

from __future__ import annotations

import pydantic
import pytest
import torch
from torch import nn

import composer
from composer.blueprint.training import ReinitConfig
from composer.errors import BlueprintError, ComposerError
from composer.train.optim import build_optimizer, build_scheduler, reinitialise, reset_optimizer

from test_training_recipes import _bp


def _values(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


# -- reinit ----------------------------------------------------------------------------------------


def test_reinit_xavier_on_matrices_is_torchs_xavier_in_parameter_order_leaving_vectors_and_skipped_blocks():
    bp = _bp(seed=3, reinit={"init": "xavier_normal", "tensors": "matrices", "skip": ["head"]})
    model = composer.compile_blueprint(bp)
    before = _values(model)
    torch.manual_seed(bp.training.seed)
    reinitialise(model, bp.training)
    after = _values(model)
    torch.manual_seed(bp.training.seed)
    drawn = 0
    for name, value in before.items():
        if name.startswith("head.") or value.dim() < 2:
            assert torch.equal(after[name], value), name  # skipped block, biases, LayerNorm
        else:
            assert torch.equal(after[name], nn.init.xavier_normal_(value.clone())), name
            drawn += 1
    assert drawn >= 4 and any(".rnn." in n or "weight_hh" in n for n in before if before[n].dim() > 1 and not n.startswith("head."))
    # negative control: the same draws in another order are other values
    torch.manual_seed(bp.training.seed)
    reordered = [n for n, v in before.items() if v.dim() > 1 and not n.startswith("head.")][::-1]
    assert not all(torch.equal(after[n], nn.init.xavier_normal_(before[n].clone())) for n in reordered)


def test_reinit_defaults_keep_the_normal_draws_of_every_linear():
    cfg = ReinitConfig(std=0.02)
    assert (cfg.init, cfg.tensors, cfg.bias) == ("normal", "linear", None)
    bp = _bp(reinit={"init": "xavier_normal", "bias": 0.5})  # every Linear: xavier weights, biases set
    model = composer.compile_blueprint(bp)
    before = _values(model)
    reinitialise(model, bp.training)
    linear = {f"{n}.{k}" for n, m in model.named_modules() if isinstance(m, nn.Linear) for k in ("weight", "bias")}
    for name, value in _values(model).items():
        if name in linear and name.endswith("bias"):
            assert torch.all(value == 0.5), name
        elif name in linear:
            assert not torch.equal(value, before[name]), name
        else:
            assert torch.equal(value, before[name]), name  # the GRUs' matrices are not Linear


@pytest.mark.parametrize("reinit, message", [
    ({"init": "normal"}, "needs std"),
    ({"init": "xavier_normal", "std": 0.1}, "remove std"),
    ({"std": 0.1, "tensors": "matrices", "bias": 0.0}, "bias applies to tensors linear only"),
    ({"init": "kaiming", "std": 0.1}, "'normal' or 'xavier_normal'"),
    ({"std": 0.1, "tensors": "vectors"}, "'linear' or 'matrices'"),
])
def test_reinit_refuses_inconsistent_or_unknown_settings(reinit, message):
    with pytest.raises(pydantic.ValidationError, match=message):
        ReinitConfig(**reinit)


# -- param groups by name, lr 0 ------------------------------------------------------------------


GROUPS = [{"blocks": ["head"], "params": ["net.0"], "lr": 0.0}, {"blocks": ["head"], "params": ["net.2"], "lr": 5e-3}]


@pytest.mark.parametrize("optimizer, scheduler", [
    ("adam", {"type": "cosine", "warmup_steps": 2}),
    ("adamw", {"type": "step", "step_size": 1, "gamma": 0.5}),
    ("sgd", {"type": "plateau", "patience": 0}),
    ("adam", {"type": "linear_warmup", "warmup_steps": 3}),
])
def test_a_group_at_lr_0_never_changes_under_weight_decay_schedulers_and_resets(optimizer, scheduler):
    bp = _bp(optimizer=optimizer, weight_decay=0.1, param_groups=GROUPS, scheduler=scheduler)
    model = composer.compile_blueprint(bp)
    opt = build_optimizer(model, bp.training)
    sched = build_scheduler(opt, bp.training, 2, "minimize")
    before = _values(model)
    batch = model.example_inputs(3)
    for step in range(6):
        if step == 3:
            opt = reset_optimizer(opt, model, bp.training, sched)
        opt.zero_grad()
        model.compute_loss({"main": model(batch)}, {"main": batch})[0].backward()
        assert model.block("head").net[0].weight.grad.abs().sum() > 0  # it has a gradient: only lr 0 keeps it
        opt.step()
        if scheduler["type"] == "plateau":
            sched.step(1.0)
        else:
            sched.step()
    after = _values(model)
    frozen = {n for n in before if n.startswith("head.net.0.")}
    assert frozen and all(torch.equal(after[n], before[n]) for n in frozen)
    assert all(not torch.equal(after[n], before[n]) for n in before if n not in frozen)  # negative control: the rest moved
    assert {g["name"]: g["lr"] for g in opt.param_groups}["head[net.0]"] == 0.0


def test_params_select_within_the_blocks_and_a_parameter_in_two_groups_is_refused():
    bp = _bp(param_groups=GROUPS)
    model = composer.compile_blueprint(bp)
    opt = build_optimizer(model, bp.training)
    names = {id(p): n for n, p in model.named_parameters()}
    lrs = {names[id(p)]: g["lr"] for g in opt.param_groups for p in g["params"]}
    assert len(lrs) == len(names)
    assert all(lr == (0.0 if n.startswith("head.net.0.") else 5e-3 if n.startswith("head.net.2.") else 1e-3) for n, lr in lrs.items())
    both = _bp(param_groups=[GROUPS[0], {"blocks": ["head"], "params": ["weight"], "lr": 1e-2}])
    with pytest.raises(ComposerError, match=r"parameter 'head.net.0.weight' of 'head' is already in group 0"):
        build_optimizer(composer.compile_blueprint(both), both.training)
    typo = _bp(param_groups=[{"blocks": ["head"], "params": ["net.9"], "lr": 0.0}])
    with pytest.raises(ComposerError, match=r"params: no trainable parameter of head contains 'net.9' \(their names: head.net.0.weight"):
        build_optimizer(composer.compile_blueprint(typo), typo.training)


def test_validate_lets_groups_share_a_block_only_when_both_select_by_params():
    assert len(_bp(param_groups=GROUPS).training.param_groups) == 2
    with pytest.raises(BlueprintError) as whole:
        _bp(param_groups=[GROUPS[0], {"blocks": ["head"], "lr": 1e-2}])
    assert any("parameters of 'head' are already in param_groups[0]" in p.message for p in whole.value.problems)
    for bad in ({"blocks": ["head"], "lr": -1.0}, {"blocks": ["head"], "params": [], "lr": 0.0}):
        with pytest.raises(BlueprintError):
            _bp(param_groups=[bad])


# -- LMF: MMSA's optimiser, parameter by parameter -----------------------------------------------


class _Built(Exception):
    pass


@pytest.mark.parametrize("dataset", ["mosi", "mosei", "sims"])
def test_lmf_every_parameters_lr_and_decay_are_mmsas_and_its_untrained_tensors_are_at_lr_0(dataset, monkeypatch):
    """MMSA's LMF trainer builds ``Adam([factors at factor_lr, parameters()[5:] at learning_rate],
    weight_decay)``: ``fusion_weights`` and ``fusion_bias`` are in no group, so they never change;
    the zoo's ``lmf`` puts them in a group at lr 0."""
    import types

    import mmsa_oracle
    from test_mmsa_zoo import NAMES, composer_model, mmsa_module

    trainer_module = mmsa_oracle.load("MMSA.trains.singleTask.LMF")["MMSA.trains.singleTask.LMF"]
    mmsa = mmsa_oracle.models()
    theirs = mmsa_module(mmsa, "lmf", dataset)
    seen = {}

    def record(groups, weight_decay=0.0, lr=1e-3):
        for group in groups:
            for p in group["params"]:
                assert id(p) not in seen, "a parameter in two groups"
                seen[id(p)] = (group.get("lr", lr), group.get("weight_decay", weight_decay))
        raise _Built

    monkeypatch.setattr(trainer_module, "optim", types.SimpleNamespace(Adam=record))
    trainer = object.__new__(trainer_module.LMF)  # its __init__ builds MMSA's metrics, which the oracle leaves out
    trainer.args = mmsa.get_config_regression("lmf", dataset)
    with pytest.raises(_Built):
        trainer.do_train(theirs, {"train": []})
    ours = composer_model("lmf", dataset)
    mine = {id(p): (g["lr"], g["weight_decay"]) for g in build_optimizer(ours, ours.blueprint.training).param_groups for p in g["params"]}
    params, twins = dict(ours.named_parameters()), dict(theirs.named_parameters())
    untrained, compared = set(), 0
    for mmsa_name, name in NAMES["lmf"](ours).items():
        if mmsa_name not in twins:  # the subnetworks' BatchNorm statistics (buffers)
            continue
        compared += 1
        if id(twins[mmsa_name]) in seen:
            assert mine[id(params[name])] == pytest.approx(seen[id(twins[mmsa_name])]), name
        else:
            untrained.add(mmsa_name)
            assert mine[id(params[name])][0] == 0.0, name
    assert untrained == {"fusion_weights", "fusion_bias"} and compared == len(params) == len(twins)
