"""One checked blueprint: ``validate`` refuses what ``train`` would, with ``file:line``, and every
consumer takes the checked object (no re-planning, no hidden attributes).

The property: for every shipped blueprint, mutations of its training section (a typo in each
name-valued field, values out of range, unknown views, modalities, blocks, loss groups and
vars) are refused by ``composer validate`` with every problem located; a blueprint ``validate``
accepts trains.
"""

from __future__ import annotations

import dataclasses
import re

import pytest
import yaml

import composer
from composer.blueprint.check import CheckedBlueprint
from composer.cli import main
from composer.errors import BlueprintError
from composer.metric_names import task_metric_names
from tests.shipped import EXAMPLES, PRESETS, ROOT, SEARCHES

SHIPPED = PRESETS + SEARCHES + EXAMPLES
LOCATED = re.compile(r"^\s+(\S+\.ya?ml:\d+|--set): ", re.M)


def _typo(name: str) -> str:
    return f"{name}x"


def mutations(data: dict) -> list[str]:
    """``--set`` overrides that each break one rule of the training section (or a name it uses)."""
    training = data.get("training") or {}
    modalities = list(data["modalities"])
    blocks = list(data["blocks"])
    views = list(training.get("views") or {})
    monitor = (training.get("monitor") or {}).get("metric", "loss")
    out = [
        f"training.monitor.metric={_typo(monitor)}",
        "training.monitor.view=mian",
        f"training.param_groups=[{{blocks: [{_typo(blocks[0])}], lr: 0.001}}]",
        f"training.reinit={{std: 0.02, skip: [{_typo(blocks[-1])}]}}",
        f"training.data.normalize=[{_typo(modalities[0])}]",
        "training.data.source=pickle",
        "training.lr=-1",
        "training.batch_size=0",
        "training.epochs=0",
        "training.grad_accum=0",
        "training.scheduler.type=cosin",
        "aux_loss_views=[mainx]",
        f"vars.{_typo('width')}=8",
        f"loss_groups.{_typo('grp')}=0.1",
        f"training.views.{_typo('view')}.rate=0.3",
    ]
    for v in views:
        out += [f"training.monitor.view={_typo(v)}", f"training.views.{v}.rate=1.5"]
        key = "rates" if (training["views"][v] or {}).get("rates") else "modalities"
        out.append(f"training.views.{v}.{key}={{{_typo(modalities[0])}: 0.5}}" if key == "rates" else f"training.views.{v}.modalities=[{_typo(modalities[0])}]")
    for name in data.get("vars") or {}:
        out.append(f"vars.{_typo(name)}=1")
    for i, loss in enumerate(data.get("losses") or []):
        if isinstance(loss, dict) and loss.get("group"):
            out.append(f"losses.{i}.group={_typo(loss['group'])}")
    for i, group in enumerate(training.get("param_groups") or []):
        out.append(f"training.param_groups.{i}.blocks=[{_typo(group['blocks'][0])}]")
    search = data.get("search")
    if isinstance(search, dict):
        objective = search.get("objective", {})
        if isinstance(objective, list):
            out.append(f"search.objective.0.metric={_typo(objective[0].get('metric', 'loss'))}")
        else:
            out.append(f"search.objective.metric={_typo(objective.get('metric', 'loss'))}")
    return out


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_validate_refuses_a_broken_training_section_with_file_and_line(path):
    """Every mutation of this blueprint, through the check ``validate`` runs (``load_blueprint``):
    refused, every problem with its file and line (or ``--set``), never another exception."""
    wrong = []
    for override in mutations(yaml.safe_load(path.read_text())):
        try:
            composer.load_blueprint(path, [override])
        except BlueprintError as exc:
            unlocated = [str(p) for p in exc.problems if p.severity == "error" and not (p.file == "--set" or (p.file and p.line))]
            if unlocated:
                wrong.append(f"--set {override}: not located: {unlocated}")
        except Exception as exc:  # noqa: BLE001 - the property: nothing but a located BlueprintError
            wrong.append(f"--set {override}: {type(exc).__name__}: {exc}")
        else:
            wrong.append(f"--set {override}: accepted")
    assert not wrong, "\n".join(wrong)


def test_the_command_line_prints_each_refusal_with_file_and_line(capsys):
    for override in mutations(yaml.safe_load((ROOT / "blueprints/emt_dlfr.yaml").read_text()))[:6]:
        assert main(["validate", "blueprints/emt_dlfr.yaml", "--set", override]) == 1
        err = capsys.readouterr().err
        problems = [line for line in err.splitlines() if line.startswith("  ")]
        assert "Traceback" not in err and problems and all(LOCATED.match(line) for line in problems), err


ACCEPTED = [
    [],
    ["training.monitor.metric=acc7", "training.monitor.direction=maximize"],
    ["+training.views.incomplete={rate: 0.3, modalities: [audio]}", "training.monitor.view=incomplete"],
    ["training.param_groups=[{blocks: [head], lr: 0.01}, {blocks: [text_enc, audio_enc]}]"],
    ["training.reinit={std: 0.02, skip: [head]}", "training.scheduler={type: cosine, warmup_steps: 2}"],
    ["training.data.normalize=[audio, vision]", "training.monitor.metric=loss/l1_0"],
]


@pytest.mark.parametrize("overrides", ACCEPTED, ids=lambda o: ",".join(x.split("=")[0] for x in o) or "as-is")
def test_a_blueprint_validate_accepts_trains(overrides, tmp_path):
    tiny = ["training.epochs=1", "training.batch_size=4", "training.data.samples={train: 8, valid: 4, test: 4}"]
    bp = composer.load_blueprint(ROOT / "blueprints/late_fusion.yaml", overrides + tiny)
    result = composer.train(bp, out=tmp_path / "run", progress=False)
    assert result.summary["epochs_run"] == 1


def test_the_examples_of_the_issue_are_refused_with_file_and_line(capsys):
    rc = main(["validate", "blueprints/late_fusion.yaml", "--set", "training.monitor.metric=maee",
               "--set", "training.monitor.view=incomplte", "--set", "training.reinit={std: 0.1, skip: [hed]}"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "blueprints/late_fusion.yaml:" in err and "training.monitor.metric: unknown metric 'maee' (did you mean 'mae'?)" in err
    assert "training.monitor.view: unknown view 'incomplte'" in err
    assert "training.reinit.skip[0]: unknown block 'hed' (did you mean 'head'?)" in err


@pytest.mark.parametrize("override,kind", [
    ("vars.dd=8", "variable"), ("loss_groups.unimdal=0.1", "loss group"),
    ("training.views.incomplte.rate=0.2", "view"), ("blocks.haed.out=2", "block"), ("outputs.txt=head", "output"),
])
def test_set_never_adds_a_named_entry_by_accident(override, kind):
    with pytest.raises(BlueprintError, match=f"has no {kind} '") as info:
        composer.load_blueprint(ROOT / "blueprints/late_fusion.yaml", [override])
    assert "--set +" in str(info.value)


def test_set_with_a_plus_adds_the_entry_on_purpose():
    bp = composer.load_blueprint(ROOT / "blueprints/late_fusion.yaml", ["+training.views.noisy={rate: 0.2}", "training.monitor.view=noisy"])
    assert bp.training.monitor.view == "noisy" and "noisy" in bp.training.views


def test_set_suggests_the_name_meant():
    path = ROOT / "blueprints/variants/emt_dlfr_authors.yaml"
    name = next(iter(yaml.safe_load(path.read_text())["vars"]))
    with pytest.raises(BlueprintError) as info:
        composer.load_blueprint(path, [f"vars.{name}x=1"])
    assert info.value.problems[0].suggestion == name


def test_set_may_give_a_field_the_schema_defines_but_the_file_leaves_out():
    bp = composer.load_blueprint(ROOT / "blueprints/late_fusion.yaml", ["training.scheduler.patience=3", "training.monitor.keep=last"])
    assert bp.training.scheduler.patience == 3 and bp.training.monitor.keep == "last"


def test_the_checked_blueprint_is_immutable_and_carries_what_the_check_found():
    bp = composer.load_blueprint(ROOT / "blueprints/late_fusion.yaml")
    assert isinstance(bp, CheckedBlueprint)
    assert bp.plan.nodes and bp.size.model_params == 109_377 and bp.source_map.file.endswith("late_fusion.yaml")
    with pytest.raises(dataclasses.FrozenInstanceError):
        bp.plan = None  # type: ignore[misc]
    assert not any(k.startswith("_") for k in vars(bp.blueprint).get("__pydantic_private__", None) or {})


def test_compiling_uses_the_plan_of_the_check(monkeypatch):
    import composer.graph.plan as plan_module

    bp = composer.load_blueprint(ROOT / "blueprints/late_fusion.yaml")
    monkeypatch.setattr(plan_module, "plan", lambda *a, **k: pytest.fail("planned again"))
    model = composer.compile_blueprint(bp)
    assert model.plan is bp.plan and model.size is bp.size


@pytest.mark.parametrize("task", [
    {"kind": "regression", "outputs": 1},
    {"kind": "regression", "outputs": 1, "label_range": [-1, 1]},
    {"kind": "regression", "outputs": 2, "classes": ["a", "b"], "label_range": [1, 7]},
    {"kind": "classification", "outputs": 3, "classes": ["neg", "neu", "pos"]},
    {"kind": "multilabel", "outputs": 2},
], ids=lambda t: f"{t['kind']}-{t['outputs']}")
def test_metric_names_are_the_keys_compute_metrics_gives(task):
    import numpy as np

    from composer.blueprint.schema import TaskConfig
    from composer.metrics import compute_metrics

    cfg = TaskConfig(**task)
    k = cfg.outputs
    pred = np.random.default_rng(0).normal(size=(6, k))
    label = np.arange(6) % k if cfg.kind == "classification" else np.random.default_rng(1).normal(size=(6, k)) > 0
    if cfg.kind == "regression":
        label = np.random.default_rng(1).normal(size=(6, k))
    assert task_metric_names(cfg) == list(compute_metrics(cfg, pred, label))
