"""The composable language: variables, named losses and groups, search constraints and
dependent ranges, auxiliary losses across views."""

from __future__ import annotations

import copy

import optuna
import pytest
import torch
import yaml

import composer
from composer.blueprint.expr import ExprError, evaluate
from composer.errors import BlueprintError

BASE = {
    "blueprint": 1, "name": "lang",
    "vars": {"d": 8, "hidden": "${2 * d}"},
    "modalities": {"text": {"features": 6, "length": 5}, "audio": {"features": 3, "length": 5}},
    "blocks": {
        "text_enc": {"type": "gru", "in": "text", "hidden": "${d}", "output": "last"},
        "audio_enc": {"type": "gru", "in": "audio", "hidden": "${d}", "output": "last"},
        "fusion": {"type": "concat", "in": ["text_enc", "audio_enc"]},
        "head": {"type": "mlp", "in": "fusion", "hidden": ["${hidden}"], "out": 1},
    },
    "losses": [{"name": "task", "type": "l1", "pred": "head"}],
    "training": {"epochs": 1, "batch_size": 8, "data": {"samples": {"train": 16, "valid": 8, "test": 8}}},
}


def bp(**changes):
    data = copy.deepcopy(BASE)
    data.update(changes)
    return data


def test_variables_state_a_width_once_with_arithmetic():
    loaded = composer.load_blueprint(bp())
    assert loaded.blocks["text_enc"].hidden == 8 and loaded.blocks["head"].hidden == [16]
    bigger = composer.load_blueprint(bp(), ["vars.d=12"])
    assert bigger.blocks["audio_enc"].hidden == 12 and bigger.blocks["head"].hidden == [24]
    assert bigger.vars == {"d": 12, "hidden": 24}


def test_an_unknown_variable_is_reported_at_its_use_with_a_suggestion(tmp_path):
    data = bp()
    data["blocks"]["text_enc"]["hidden"] = "${dd}"
    path = tmp_path / "v.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(BlueprintError) as info:
        composer.load_blueprint(path)
    (problem,) = info.value.problems
    assert problem.path == ("blocks", "text_enc", "hidden") and problem.suggestion == "d"
    assert problem.line == path.read_text().splitlines().index("    hidden: ${dd}") + 1


@pytest.mark.parametrize("text", ["__import__('os').system('true')", "d.__class__", "[x for x in d]", "lambda: 1", "9 ** 99", "open('x')"])
def test_the_evaluator_runs_no_code_and_bounds_numbers(text):
    with pytest.raises(ExprError):
        evaluate(text, lambda name: 3)


def test_the_evaluator_does_arithmetic_and_comparisons():
    values = {"d": 64, "heads": 8, "blocks.moe.experts": 3}
    look = values.__getitem__
    assert evaluate("d // heads + 1", look) == 9
    assert evaluate("max(2, d / 16) * 2", look) == 8.0
    assert evaluate("1 <= blocks.moe.experts <= 4 and not d < 8", look) is True


def test_losses_are_addressed_by_name_in_set_and_search():
    loaded = composer.load_blueprint(bp(), ["losses.task.weight=0.25"])
    assert loaded.losses[0].weight == 0.25
    with pytest.raises(BlueprintError, match="no loss is named 'tsk'.*did you mean 'task'"):
        composer.load_blueprint(bp(), ["losses.tsk.weight=0.25"])


def test_a_group_weight_scales_every_member():
    data = bp(loss_groups={"lam": 0.5})
    data["losses"] = [
        {"name": "task", "type": "l1", "pred": "head"},
        {"name": "a", "type": "mse", "pred": "head", "group": "lam"},
        {"name": "b", "type": "l1", "pred": "head", "group": "lam", "weight": 2.0},
    ]
    model = composer.compile_blueprint(composer.load_blueprint(data))
    batch = model.example_inputs(4)
    outputs = {"main": model(batch)}
    total, parts = model.compute_loss(outputs, {"main": batch})
    assert torch.allclose(total, parts["task"] + 0.5 * (parts["a"] + 2.0 * parts["b"]))
    doubled = composer.compile_blueprint(composer.load_blueprint(data, ["loss_groups.lam=1.0"]))
    doubled.load_state_dict(model.state_dict())
    total2, _ = doubled.compute_loss({"main": doubled(batch)}, {"main": batch})
    assert torch.allclose(total2 - parts["task"], 2 * (total - parts["task"]))
    data["losses"][1]["group"] = "lan"
    with pytest.raises(BlueprintError, match="unknown loss group 'lan'.*did you mean 'lam'"):
        composer.load_blueprint(data)


def test_emt_dlfr_lambdas_scale_all_their_terms():
    loaded = composer.load_blueprint("blueprints/emt_dlfr.yaml")
    groups = {l.name: l.group for l in loaded.losses}
    assert [n for n, g in groups.items() if g == "lambda1"] == ["recon_text", "recon_audio", "recon_vision"]
    assert [n for n, g in groups.items() if g == "lambda2"] == ["attr_text", "attr_audio", "attr_vision", "attr_global", "attr_task"]
    assert set(loaded.search.space) >= {"loss_groups.lambda1", "loss_groups.lambda2"}


def test_duplicate_loss_names_are_refused():
    data = bp()
    data["losses"].append({"name": "task", "type": "mse", "pred": "head"})
    with pytest.raises(BlueprintError, match="loss name 'task' is already used"):
        composer.load_blueprint(data)


def test_search_ranges_may_depend_on_sampled_values_and_constraints_prune_with_a_reason(tmp_path):
    from composer.search import search

    data = bp(search={
        "objective": {"metric": "mae"}, "sampler": "random",
        "space": {"vars.d": {"int": [2, 6]}, "blocks.head.hidden": {"choice": [[4], [8]]},
                  "vars.hidden": {"int": [1, "${vars.d}"]}},
        "constraints": ["vars.hidden % 2 == 0"],
    })
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    result = search(path, out=tmp_path / "s", trials=8, seed=1)
    for t in result.study.trials:
        assert 1 <= t.params["vars.hidden"] <= t.params["vars.d"]
        broke = t.params["vars.hidden"] % 2 == 1
        assert (t.state == optuna.trial.TrialState.PRUNED and "constraint 'vars.hidden % 2 == 0' is false" in t.user_attrs["invalid"]) == broke


def test_auxiliary_losses_are_taken_from_the_views_the_blueprint_names():
    data = bp()
    data["modalities"] = {"x": {"kind": "vector", "features": 4}}
    data["blocks"] = {
        "moe": {"type": "moe", "in": "x", "out": 4, "experts": 3, "top_k": 2, "balance_weight": 0.1},
        "head": {"type": "mlp", "in": "moe.out", "out": 1},
    }
    data["training"]["views"] = {"noisy": {"type": "temporal_mask", "rate": 0.5, "modalities": []}}
    data["losses"] = [{"type": "l1", "pred": "head"}, {"type": "l1", "pred": "noisy:head"}]
    main_only = composer.compile_blueprint(composer.load_blueprint(data)).train()
    both = composer.compile_blueprint(composer.load_blueprint(data, ["aux_loss_views=[main, noisy]"]))
    batch = main_only.example_inputs(6)
    torch.manual_seed(0)
    outputs = {"main": main_only(batch), "noisy": main_only(batch)}
    _, parts = main_only.compute_loss(outputs, {"main": batch, "noisy": batch})
    _, parts_both = both.compute_loss(outputs, {"main": batch, "noisy": batch})
    assert "moe.balance" in parts and "noisy:moe.balance" not in parts
    assert "noisy:moe.balance" in parts_both
    with pytest.raises(BlueprintError, match="unknown view 'nosy'"):
        composer.load_blueprint(data, ["aux_loss_views=[nosy]"])


def test_map_keeps_its_nested_blocks_auxiliary_losses():
    bp = composer.load_blueprint({
        "blueprint": 1, "name": "m", "modalities": {"audio": {"features": 4, "length": 6}},
        "blocks": {"experts": {"type": "map", "in": "audio", "block": {"type": "moe", "out": 3, "experts": 3, "top_k": 2}},
                   "pool": {"type": "pool", "in": "experts", "mode": "mean"}, "head": {"type": "linear", "in": "pool", "out": 1}},
        "losses": [{"type": "l1", "pred": "head"}],
    })
    model = composer.compile_blueprint(bp).train()
    batch = model.example_inputs(3)
    out = model(batch)
    assert set(out["aux_losses"]) == {"experts.block_balance"} and out["aux_losses"]["experts.block_balance"].dim() == 0
    total, parts = model.compute_loss({"main": out}, {"main": batch})
    assert "experts.block_balance" in parts
