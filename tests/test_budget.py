"""One budget for everything a small blueprint input can grow (issue #28): each hostile input
below is a few kilobytes at most; each is refused within seconds and a few hundred megabytes,
naming the limit, the value found and the setting that raises it (docs/guarantees.md)."""

from __future__ import annotations

import copy
import os
import signal
import tracemalloc
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

import composer
from composer.blueprint._yaml import parse_scalar, read_yaml
from composer.blueprint.expr import ExprError, evaluate
from composer.errors import BlueprintError, ComposerError

ROOT = Path(__file__).resolve().parents[1]
MULT = ROOT / "blueprints" / "mult.yaml"


@contextmanager
def bounded(seconds: float = 30, megabytes: float = 300):
    """Fail (instead of hanging or swapping) when the body runs longer or allocates more
    Python memory than given."""
    def stop(*_):
        raise TimeoutError(f"took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    tracemalloc.start()
    try:
        yield
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        tracemalloc.stop()
    assert peak < megabytes * 2**20, f"allocated {peak / 2**20:.0f} MB"


def refusal(load, *settings: str) -> str:
    """The message of the BlueprintError ``load()`` raises within the bounds; it must name each setting."""
    with bounded(), pytest.raises(BlueprintError) as info:
        load()
    message = str(info.value)
    for setting in settings:
        assert setting in message, message
    return message


def laughs(levels: int, name: str = "a") -> list[str]:
    """YAML lines defining anchors ``{name}0..`` where each holds 9 of the previous (9**levels values)."""
    lines = [f"{name}0: &{name}0 [lol,lol,lol,lol,lol,lol,lol,lol,lol]"]
    lines += [f"{name}{i}: &{name}{i} [" + ",".join([f"*{name}{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return lines


def small(**extra) -> dict:
    data = {
        "blueprint": 1, "name": "small", "task": {"kind": "regression", "outputs": 1},
        "modalities": {"text": {"features": 4, "length": 5}},
        "blocks": {"pool": {"type": "pool", "in": "text", "mode": "mean"}, "head": {"type": "mlp", "in": "pool", "out": 1}},
        "losses": [{"type": "l1", "pred": "head"}],
    }
    data.update(extra)
    return copy.deepcopy(data)


# -- blueprint text and --set values ---------------------------------------------------------
def test_an_alias_bomb_in_a_set_value_is_refused_before_it_is_built():
    bomb = "[" + ", ".join(["&a [lol,lol,lol,lol,lol,lol,lol,lol,lol]"] + [
        f"&{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]" for i in range(8)]) + "]"
    assert len(bomb) < 400
    message = refusal(lambda: composer.load_blueprint(MULT, [f"description={bomb}"]))
    assert "--set value" in message and "aliases" in message
    assert parse_scalar("[&x 1, *x]") == [1, 1]  # a small alias is still fine


def test_a_set_value_counts_like_a_file_and_may_not_be_infinite():
    with pytest.raises(BlueprintError, match="nested too deeply|levels"):
        parse_scalar("[" * 3000 + "]" * 3000)
    message = refusal(lambda: composer.load_blueprint(small(), ["training.lr=1e999"]))
    assert "not a finite number" in message


def test_integers_of_thousands_of_digits_and_infinite_numbers_are_blueprint_problems():
    with pytest.raises(BlueprintError, match="unsupported YAML value"):
        read_yaml("x: " + "9" * 5000 + "\n")
    with pytest.raises(BlueprintError, match="not a finite number"):
        read_yaml("training: {lr: .inf}\n")


def test_the_values_bound_holds_for_a_blueprint_and_its_imports_together(tmp_path, monkeypatch):
    # 64 template files of about 400 bytes, each expanding to 9**5 values: 3.8M values in all
    for n in range(64):
        text = "description:\n" + "\n".join("  " + line for line in laughs(5)) + "\ntemplates:\n" + (
            f"  t{n}: {{params: {{p: *a4}}, inputs: [x], blocks: {{b: {{type: pool, in: x, mode: mean}}}}, outputs: {{out: b}}}}\n")
        assert len(text) < 600
        (tmp_path / f"t{n}.yaml").write_text(text)
    path = tmp_path / "bp.yaml"
    path.write_text(yaml.safe_dump(small(imports=[f"t{n}.yaml" for n in range(64)])))
    message = refusal(lambda: composer.load_blueprint(path), "COMPOSER_MAX_VALUES")
    assert "imports included" in message
    monkeypatch.setenv("COMPOSER_MAX_VALUES", "50000")
    refusal(lambda: composer.load_blueprint(path), "50,000")


def test_the_characters_bound_holds_for_a_blueprint_and_its_imports_together(tmp_path, monkeypatch):
    template = {"inputs": ["x"], "blocks": {"b": {"type": "pool", "in": "x", "mode": "mean"}}, "outputs": {"out": "b"}}
    for n in range(3):
        (tmp_path / f"t{n}.yaml").write_text(yaml.safe_dump({"description": "x" * 600, "templates": {f"t{n}": template}}))
    path = tmp_path / "bp.yaml"
    path.write_text(yaml.safe_dump(small(imports=[f"t{n}.yaml" for n in range(3)])))
    composer.load_blueprint(path)
    monkeypatch.setenv("COMPOSER_MAX_YAML_CHARS", "2000")  # each file is below it, all of them are not
    message = refusal(lambda: composer.load_blueprint(path), "COMPOSER_MAX_YAML_CHARS")
    assert "imports have" in message


# -- templates ----------------------------------------------------------------------------------
def nested_uses(depth: int, fan: int = 4) -> str:
    """A blueprint whose one use expands into fan**depth blocks (each template uses the previous fan times)."""
    lines = ["blueprint: 1", "name: nest", "task: {kind: regression, outputs: 1}", "modalities: {text: {features: 4, length: 5}}",
             "templates:", "  t0: {inputs: [x], blocks: {b: {type: pool, in: x, mode: mean}}, outputs: {out: b}}"]
    for k in range(1, depth + 1):
        uses = ", ".join(f"u{i}: {{type: t{k - 1}, in: x}}" for i in range(fan))
        lines.append(f"  t{k}: {{inputs: [x], blocks: {{{uses}}}, outputs: {{out: u0}}}}")
    lines += ["blocks:", f"  top: {{type: t{depth}, in: text}}", "  head: {type: mlp, in: top, out: 1}", "losses: [{type: l1, pred: head}]"]
    return "\n".join(lines) + "\n"


def test_template_expansion_is_bounded_by_the_total_number_of_blocks_not_the_depth(monkeypatch):
    text = nested_uses(7)  # 4**7 = 16,384 blocks from 1.3 KB
    assert len(text) < 2000
    message = refusal(lambda: composer.load_blueprint(text), "COMPOSER_MAX_BLOCKS")
    assert "5,001 blocks is above the limit of 5,000" in message
    with bounded(seconds=30):
        assert len(composer.load_blueprint(nested_uses(4)).blocks) == 4**4 + 1  # expansion is linear: 256 blocks load at once
    monkeypatch.setenv("COMPOSER_MAX_BLOCKS", "100")
    refusal(lambda: composer.load_blueprint(nested_uses(4)), "COMPOSER_MAX_BLOCKS")


def test_expanded_blocks_count_against_the_values_bound():
    lines = laughs(5, "v")  # a parameter default of 9**5 values, copied into every use
    text = "\n".join(f"x{line}" for line in lines) + "\n" + nested_uses(2).replace(
        "t0: {inputs: [x],", "t0: {params: {big: *v4}, inputs: [x],").replace(
        "b: {type: pool, in: x, mode: mean}", "b: {type: pool, in: x, mode: mean, big: '${big}'}")
    message = refusal(lambda: composer.load_blueprint(text), "COMPOSER_MAX_VALUES")
    assert "templates expand to more than" in message


def test_a_template_type_that_is_not_a_name_is_a_problem_not_a_crash():
    data = small(templates={"t": {"inputs": ["x"], "blocks": {"b": {"type": ["pool"], "in": "x"}}, "outputs": {"out": "b"}}})
    data["blocks"]["pool"]["type"] = ["t"]
    with pytest.raises(BlueprintError):
        composer.load_blueprint(data)


# -- string interpolation and expressions ---------------------------------------------------------
def test_string_interpolation_is_bounded():
    variables = {"v0": "x" * 16, **{f"v{i}": f"${{v{i - 1}}}${{v{i - 1}}}" for i in range(1, 40)}}
    data = small(vars=variables, description="${v39}")
    assert len(yaml.safe_dump(data)) < 1500
    message = refusal(lambda: composer.load_blueprint(data), "COMPOSER_MAX_TEXT_CHARS")
    assert "above the limit of 100,000" in message


@pytest.mark.parametrize("text", ["(10.0 ** 15) ** 64", "1e999", "(-8) ** 0.5", "abs(1, 2)", "1" * 480])
def test_expressions_that_overflow_or_misuse_a_function_are_expression_errors(text):
    with pytest.raises(ExprError):
        evaluate(text, lambda name: 1)
    assert evaluate("min(3)", lambda name: 1) == 3 and evaluate("max(2, d)", lambda name: 5) == 5


# -- layers and widths before any per-layer work ---------------------------------------------------
@pytest.mark.parametrize("value", ["1000000", "1" + "0" * 30])
def test_layer_counts_are_refused_before_any_per_layer_work(value):
    message = refusal(lambda: composer.load_blueprint(MULT, [f"blocks.cm_t_a.layers={value}"]), "COMPOSER_MAX_LAYERS", "blocks.cm_t_a.layers")
    assert "above the limit of 1,000" in message


def test_widths_and_width_lists_are_bounded(monkeypatch):
    refusal(lambda: composer.load_blueprint(MULT, ["blocks.head.hidden=[" + ",".join(["4"] * 1001) + "]"]), "COMPOSER_MAX_LAYERS")
    refusal(lambda: composer.load_blueprint(MULT, ["blocks.head.hidden=[" + "9" * 40 + "]"]), "COMPOSER_MAX_WIDTH", "blocks.head.hidden")
    monkeypatch.setenv("COMPOSER_MAX_LAYERS", "4")
    refusal(lambda: composer.load_blueprint(MULT), "COMPOSER_MAX_LAYERS", "blocks.cm_t_a.layers")
    monkeypatch.setenv("COMPOSER_MAX_LAYERS", "many")
    with pytest.raises(ComposerError, match="COMPOSER_MAX_LAYERS='many'"):
        composer.load_blueprint(MULT)


def test_task_outputs_are_bounded_before_per_output_metric_names_are_made():
    message = refusal(lambda: composer.load_blueprint(small(), ["task.outputs=2097151"]), "COMPOSER_MAX_OUTPUTS", "task.outputs")
    assert "above the limit of 10,000" in message


def test_the_number_of_parameter_tensors_is_bounded(monkeypatch):
    monkeypatch.setenv("COMPOSER_MAX_TENSORS", "50")
    refusal(lambda: composer.load_blueprint(MULT), "COMPOSER_MAX_TENSORS")


# -- activations grow with the square of the sequence length ---------------------------------------
def test_validate_refuses_attention_over_long_sequences_that_train_could_not_hold(monkeypatch):
    monkeypatch.setenv("COMPOSER_MAX_MEMORY", "1000GB")
    short = composer.load_blueprint(MULT).size
    long = composer.load_blueprint(MULT, ["modalities.vision.length=5000"]).size  # vision attends itself in mem_v: 100x
    assert long.activation_bytes > 20 * short.activation_bytes
    monkeypatch.setenv("COMPOSER_MAX_MEMORY", "8GB")
    message = refusal(lambda: composer.load_blueprint(MULT, ["modalities.text.length=200000"]), "COMPOSER_MAX_MEMORY")
    assert "too large to train here" in message


# -- imports -----------------------------------------------------------------------------------
TEMPLATE = {"templates": {"avg": {"inputs": ["x"], "blocks": {"b": {"type": "pool", "in": "x", "mode": "mean"}}, "outputs": {"out": "b"}}}}


def importing(tmp_path: Path, where: str) -> Path:
    data = small(imports=[where])
    data["blocks"]["pool"] = {"type": "avg", "in": "text"}
    path = tmp_path / "bp" / "model.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def test_imports_read_only_the_blueprint_folder_and_the_search_path(tmp_path, monkeypatch):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "lib.yaml").write_text(yaml.safe_dump(TEMPLATE))
    for spelled in (str(outside / "lib.yaml"), "../elsewhere/lib.yaml"):
        message = refusal(lambda: composer.load_blueprint(importing(tmp_path, spelled)), "COMPOSER_IMPORT_PATH", "COMPOSER_ALLOW_ANY_IMPORT")
        assert "outside the folders imports may read" in message
    (tmp_path / "bp" / "link.yaml").symlink_to(outside / "lib.yaml")  # a link out of the folder is outside too
    refusal(lambda: composer.load_blueprint(importing(tmp_path, "link.yaml")), "outside the folders")
    monkeypatch.setenv("COMPOSER_IMPORT_PATH", str(outside))
    assert "pool/b" in composer.load_blueprint(importing(tmp_path, "lib.yaml")).blocks  # found on the search path
    monkeypatch.delenv("COMPOSER_IMPORT_PATH")
    monkeypatch.setenv("COMPOSER_ALLOW_ANY_IMPORT", "1")
    assert "pool/b" in composer.load_blueprint(importing(tmp_path, "../elsewhere/lib.yaml")).blocks


def test_an_import_symlink_loop_is_a_problem(tmp_path):
    (tmp_path / "bp").mkdir()
    (tmp_path / "bp" / "a.yaml").symlink_to(tmp_path / "bp" / "b.yaml")
    (tmp_path / "bp" / "b.yaml").symlink_to(tmp_path / "bp" / "a.yaml")
    message = refusal(lambda: composer.load_blueprint(importing(tmp_path, "a.yaml")))
    assert "cannot import 'a.yaml'" in message


def test_the_shipped_template_library_stays_importable_from_the_examples():
    with bounded(seconds=60, megabytes=600):
        assert composer.load_blueprint(ROOT / "examples" / "templates" / "mult_branches.yaml").blocks


def test_a_rate_list_is_counted_before_it_is_built():
    import tracemalloc

    from composer.train.evaluation import parse_rates

    tracemalloc.start()
    try:
        with pytest.raises(ComposerError, match=r"1,000,000,001 rates is above the limit of 1,000 \(set COMPOSER_MAX_RATES"):
            parse_rates("0:1:1e-9")
        assert tracemalloc.get_traced_memory()[1] < 1_000_000
    finally:
        tracemalloc.stop()
    assert len(parse_rates("0:1:0.1")) == 11


@pytest.mark.parametrize("override", ["blocks.text_enc.hidden=true", "blocks.head.hidden=[yes]"])
def test_a_boolean_is_not_read_as_a_number(override):
    with pytest.raises(BlueprintError, match="expected a number, got"):
        composer.load_blueprint(ROOT / "blueprints/late_fusion.yaml", [override])


def test_a_length_whose_synthetic_data_would_not_fit_is_refused_by_validate():
    with pytest.raises(BlueprintError, match=r"training.data.samples: synthetic data: .* Set COMPOSER_MAX_DATA"):
        composer.load_blueprint(ROOT / "blueprints/late_fusion.yaml", ["modalities.text.length=200000"])
