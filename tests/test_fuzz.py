"""Fuzzing (hypothesis, bounded in time): hostile blueprints and feature files give a
:class:`ComposerError`, never a traceback."""

from __future__ import annotations

import copy
import pickle
import re

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import composer
from composer.cli import main
from composer.errors import ComposerError
from test_budget import bounded, laughs, nested_uses

FUZZ = settings(max_examples=int(__import__("os").environ.get("COMPOSER_FUZZ_EXAMPLES", 100)), deadline=None, suppress_health_check=list(HealthCheck), derandomize="COMPOSER_FUZZ_RANDOM" not in __import__("os").environ)

BASE = {
    "blueprint": 1,
    "name": "fuzz",
    "task": {"kind": "regression", "outputs": 1},
    "modalities": {"text": {"features": 4, "length": 5}, "audio": {"features": 3, "length": 4}},
    "blocks": {
        "text_enc": {"type": "transformer", "in": "text", "dim": 8, "heads": 2, "layers": 1},
        "audio_enc": {"type": "lstm", "in": "audio", "hidden": 4, "output": "last"},
        "pool": {"type": "pool", "in": "text_enc", "mode": "mean"},
        "fusion": {"type": "concat", "in": ["pool", "audio_enc"]},
        "head": {"type": "mlp", "in": "fusion", "hidden": [4], "out": 1},
    },
    "losses": [{"type": "l1", "pred": "head"}],
    "training": {"epochs": 1, "batch_size": 4, "seed": 1},
    "search": {"space": {"blocks.head.hidden": {"choice": [[4], [8]]}}},
}

values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12) | st.sampled_from(["text", "audio", "text_enc", "audio_enc.seq", "head", "mean", "gru", "l1", "x.y.z"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _paths(data, prefix=()):
    yield prefix
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _paths(v, prefix + (i,))


PATHS = [p for p in _paths(BASE) if p]


@st.composite
def mutated_blueprints(draw):
    data = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        node = data
        try:
            for part in path[:-1]:
                node = node[part]
            if draw(st.booleans()) or not isinstance(node, dict):
                node[path[-1]] = draw(values)
            else:
                node.pop(path[-1], None)
        except (KeyError, IndexError, TypeError):
            continue
    return data


@FUZZ
@given(mutated_blueprints())
def test_mutated_blueprints_give_composer_errors_only(monkeypatch, data):
    monkeypatch.setenv("COMPOSER_MAX_MEMORY", "200MB")
    try:
        bp = composer.load_blueprint(data)
        model = composer.compile_blueprint(bp)
        model.eval()
        model(model.example_inputs(2))
    except ComposerError:
        pass


@FUZZ
@given(st.text(max_size=300))
def test_random_yaml_text_gives_composer_errors_only(text):
    try:
        composer.load_blueprint(text + "\n")
    except ComposerError:
        pass


arrays = st.one_of(
    st.builds(lambda shape, kind: np.zeros(shape, dtype=kind),
              st.lists(st.integers(0, 4), min_size=0, max_size=4).map(tuple), st.sampled_from(["float32", "int64", "bool", "U3", "float16"])),
    st.lists(st.integers(-5, 5), max_size=5), st.text(max_size=5), st.none(), st.integers(),
)
keys = st.sampled_from(["text", "audio", "audio_lengths", "regression_labels", "id", "text_bert", "other"])
feature_files = st.one_of(
    st.dictionaries(st.sampled_from(["train", "valid", "test", "dev", "x"]), st.dictionaries(keys, arrays, max_size=6), max_size=4),
    arrays, st.lists(arrays, max_size=3),
)


@FUZZ
@given(feature_files)
def test_random_feature_files_give_data_errors_only(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("f") / "d.pkl"
    path.write_bytes(pickle.dumps(content))
    bp = composer.load_blueprint(BASE)
    try:
        composer.data.load_data(bp, str(path))
    except ComposerError:
        pass


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes_as_a_feature_file_give_data_errors_only(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("b") / "d.pkl"
    path.write_bytes(raw)
    with pytest.raises(ComposerError):
        composer.data.load_data(composer.load_blueprint(BASE), str(path))


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize="COMPOSER_FUZZ_RANDOM" not in __import__("os").environ)
@given(mutated_blueprints())
def test_no_traceback_reaches_the_cli(tmp_path_factory, capsys, data):
    path = tmp_path_factory.mktemp("cli") / "bp.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    code = main(["validate", str(path)])
    assert code in (0, 1)
    assert "Traceback" not in capsys.readouterr().err


# -- hostile growth: every input below is small; each must load or be refused within the budget --
BASE_TEXT = yaml.safe_dump(BASE, sort_keys=False)
SET_PATHS = [".".join(str(p) for p in path) for path in PATHS] + ["vars.x", "description", "blocks.text_enc.layers", "vars.a.b.c"]
ALIAS_BOMB = "[" + ", ".join(["&a [x,x,x,x,x,x,x,x,x]"] + [f"&{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]" for i in range(7)]) + "]"
hostile_values = st.one_of(
    st.sampled_from([ALIAS_BOMB, "[" * 200 + "]" * 200, "{a: " * 80 + "1" + "}" * 80, "9" * 5000, "1e999", "-.inf", ".nan",
                     "10" + "0" * 40, "[" + ",".join(["4"] * 2000) + "]", "${2 ** 64}", "${(10.0 ** 15) ** 64}", "${x}" * 50,
                     "[&x [1,2], *x, *x]", "!!python/object:os.system ls", "<<: *nope", "&a [*a]", "'${1e999}'"]),
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
    st.text(max_size=40),
)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(SET_PATHS), hostile_values), min_size=1, max_size=3))
def test_hostile_set_values_are_refused_within_the_budget(overrides):
    with bounded(seconds=30, megabytes=300):
        try:
            composer.load_blueprint(BASE, [f"{path}={value}" for path, value in overrides])
        except ComposerError:
            pass


@st.composite
def hostile_blueprint_texts(draw):
    """BASE as YAML text with one to three growth attacks spliced in: anchors and aliases, nested
    template uses, interpolation chains, huge counts, imports out of the folder."""
    data = copy.deepcopy(BASE)
    head = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["aliases", "templates", "interpolation", "layers", "imports", "vars"]))
        if kind == "aliases":
            levels, name = draw(st.integers(2, 8)), f"z{len(head)}n"
            head += laughs(levels, name)  # top-level anchors z<k>n0.. (unknown keys, once read)
            data[draw(st.sampled_from(["description", "reported", "vars"]))] = f"ALIAS:{name}{levels - 1}"
        elif kind == "templates":
            return nested_uses(draw(st.integers(1, 8)), draw(st.integers(1, 6)))
        elif kind == "interpolation":
            n = draw(st.integers(1, 40))
            data["vars"] = {"s0": "ab" * draw(st.integers(1, 50)), **{f"s{i}": f"${{s{i - 1}}}" * draw(st.integers(1, 4)) for i in range(1, n)}}
            data[draw(st.sampled_from(["description", "name"]))] = f"${{s{n - 1}}}"
        elif kind == "layers":
            data["blocks"]["text_enc"][draw(st.sampled_from(["layers", "dim", "heads"]))] = draw(st.integers(-5, 10**40))
        elif kind == "imports":
            data["imports"] = [draw(st.sampled_from(["/etc/hosts.yaml", "../../x.yaml", "a/../../b.yaml", "x.yml", "/dev/zero.yaml"]))]
        else:
            data["vars"] = {"l0": list(range(10)), **{f"l{i}": [f"${{l{i - 1}}}"] * 10 for i in range(1, draw(st.integers(2, 12)))}}
            data["blocks"]["head"]["hidden"] = f"${{l{len(data['vars']) - 1}}}"
    text = re.sub(r"'?ALIAS:(\w+)'?", r"*\1", yaml.safe_dump(data, sort_keys=False))
    return "".join(line + "\n" for line in head) + text


@settings(FUZZ, max_examples=int(__import__("os").environ.get("COMPOSER_FUZZ_EXAMPLES", 40)))  # each input builds a model's plan: fewer by default
@given(hostile_blueprint_texts())
def test_hostile_blueprint_texts_are_refused_within_the_budget(text):
    with bounded(seconds=30, megabytes=300):
        try:
            composer.load_blueprint(text)
        except ComposerError:
            pass
