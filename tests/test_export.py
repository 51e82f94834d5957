"""Inference export (composer.export, ``composer export``): every paper blueprint, built tiny,
goes to ONNX (checked with onnxruntime) and to a torch.export program (saved, loaded, run),
on a padded batch one sample larger than the traced one and one step longer on each dynamic
time axis; both agree with the eager model within 1e-4.

An export costs 5-20 s of tracing on a CPU core, so by default three blueprints run: late
fusion (GRUs, every time axis fixed), EMT-DLFR (tokens with mask and segment ids, shared
layers, a dynamic text axis) and GLoMo (every time axis dynamic, a weight named ``global``,
the program's fixed-time fallback). ``COMPOSER_EXPORT_ALL=1`` runs all 27 presets and variants
(docs/export.md lists that run's results).
"""

import json
import os

import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import onnx  # noqa: E402

import composer  # noqa: E402
from composer import export as ex  # noqa: E402
from composer.cli import main  # noqa: E402

from shipped import PRESETS  # noqa: E402

DEFAULT = {"late_fusion", "emt_dlfr", "glomo", "mult", "rmfn"}  # one per export behaviour; the rest share their code paths
PRESETS_BY_NAME = {p.stem: p for p in PRESETS}
ALL = os.environ.get("COMPOSER_EXPORT_ALL") == "1"
BERT = {"init": "random", "hidden_size": 16, "num_layers": 2, "num_heads": 2, "intermediate_size": 32, "vocab_size": 200}

#: Time axes the ONNX graph keeps dynamic, per family (the others are fixed at the traced
#: length; onnxruntime refuses another). Why a family's axes are fixed: docs/export.md.
DYNAMIC_TIME = {
    "emt_dlfr": {"T_text"},  # BERT takes any length; the audio/vision GRUs are unrolled per step
    "glomo": {"T_text", "T_audio", "T_vision"},
    "mult": {"T_text", "T_audio", "T_vision"},  # the future mask is built in the graph while tracing
}
#: Families whose program cannot be saved with symbolic time in torch 2.13 (the serialiser
#: refuses some of their symbolic length expressions): the .pt2 is traced with fixed time.
PROGRAM_FIXED_TIME = {"hct_mg", "mult"}


def family(path) -> str:
    stem = path.stem
    return next((f for f in ("emt_dlfr", "glomo", "hct_mg", "msaf", "mult", "rmfn") if stem.startswith(f)), stem)


def tiny(path, lengths=(4, 5, 6)):
    """The blueprint with a tiny random BERT, one layer per stack and short, distinct lengths per time axis."""
    bp = composer.load_blueprint(path)
    sets, times = [], {}
    for name, m in bp.modalities.items():
        if m.kind in ("sequence", "tokens"):
            steps = times.setdefault(m.time_symbol(name), lengths[len(times) % len(lengths)])
            sets.append(f"modalities.{name}.length={min(steps, m.length)}")
        if m.kind == "tokens":
            sets.append(f"modalities.{name}.vocab=200")
    for block, config in bp.blocks.items():
        if config.type == "bert":
            sets += [f"blocks.{block}.{k}={v}" for k, v in BERT.items()]
        if isinstance(getattr(config, "layers", None), int) and config.layers > 1:
            sets.append(f"blocks.{block}.layers=1")
        if hasattr(config, "sa_layers"):
            sets.append(f"blocks.{block}.sa_layers=1")
    torch.manual_seed(0)
    return composer.compile_blueprint(composer.load_blueprint(path, sets)).eval()


def preset_params():
    for path in PRESETS:
        marks = [] if ALL or path.stem in DEFAULT else [pytest.mark.skip(reason="set COMPOSER_EXPORT_ALL=1 to export every preset and variant")]
        yield pytest.param(path, id=path.stem, marks=marks)


_EXPORTED = {}


def exported(path, folder):
    """``(model, trace result, program result, folder)``: the tiny model traced once and written
    to ``folder/m.onnx`` and ``folder/m.pt2``; kept for the tests that reuse it."""
    if path.stem not in _EXPORTED:
        model = tiny(path)
        result = ex.trace(model, 2)
        ex.export_onnx(model, folder / "m.onnx", result=result, optimize=False)
        saved = ex.export_program(model, folder / "m.pt2", result=result)
        _EXPORTED[path.stem] = model, result, saved, folder
    return _EXPORTED[path.stem]


@pytest.mark.parametrize("path", preset_params())
def test_every_paper_blueprint_exports_to_onnx_and_a_program_that_match_pytorch(path, tmp_path_factory):
    model, result, saved, folder = exported(path, tmp_path_factory.mktemp(path.stem))
    dynamic_time = {a for axes in result.dynamic.values() for a in axes.values()} - {"B"}
    assert dynamic_time == DYNAMIC_TIME.get(family(path), set())
    assert all(result.dynamic[s.name][0] == "B" for s in result.inputs)

    batch = ex.verification_batch(model, result)
    assert len(batch[result.inputs[0].name]) == 3
    onnx_diff = ex.verify_onnx(model, folder / "m.onnx", batch)
    proto = onnx.load(str(folder / "m.onnx"))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert [i.name for i in proto.graph.input] == [s.name for s in ex.input_specs(model)]
    assert [o.name for o in proto.graph.output] == ["prediction"]
    assert [s["name"] for s in json.loads(meta["composer.inputs"])] == [i.name for i in proto.graph.input]
    assert composer.load_blueprint(meta["composer.blueprint"]).name == model.blueprint.name

    assert (saved is not result) == (family(path) in PROGRAM_FIXED_TIME)
    program_batch = batch if saved is result else ex.verification_batch(model, saved)
    program_diff = ex.verify_program(model, folder / "m.pt2", program_batch)
    print(f"{path.stem}: dynamic time {sorted(dynamic_time)}; onnx {onnx_diff:.1e}, program {program_diff:.1e}")


def test_the_input_order_is_modality_then_padding_then_segments():
    names = lambda name: [s.name for s in ex.input_specs(tiny(PRESETS_BY_NAME[name]))]  # noqa: E731
    assert names("emt_dlfr") == ["text", "text_mask", "text_segment", "audio", "audio_lengths", "vision", "vision_lengths"]
    # RMFN's three modalities are aligned (one time axis): the first one's lengths stand for all
    assert names("rmfn") == ["text", "text_lengths", "audio", "vision"]




@pytest.fixture
def late_fusion(tmp_path_factory):
    model, result, _, folder = exported(PRESETS_BY_NAME["late_fusion"], tmp_path_factory.mktemp("late_fusion"))
    return model, result, folder


def test_a_fixed_time_axis_is_refused_at_another_length_not_silently_wrong(late_fusion):
    model, result, folder = late_fusion
    assert [s.name for s in result.inputs if len(result.axes(s.name)) > 1] == ["text", "audio", "vision"]
    assert result.axes("text") == ["B", 4, 300]
    longer = ex.sample_inputs(model, 3, times={"T_text": 5})
    with pytest.raises(ex.ExportError, match="onnxruntime could not run"):
        ex.verify_onnx(model, folder / "m.onnx", longer)
    with pytest.raises(ex.ExportError, match="could not run"):
        ex.verify_program(model, folder / "m.pt2", longer)


def test_verification_fails_when_the_weights_differ(late_fusion):
    model, _, folder = late_fusion
    other = tiny(PRESETS_BY_NAME["late_fusion"])
    with torch.no_grad():
        other.head.net[3].bias.add_(1.0)  # the prediction moves by exactly 1
    with pytest.raises(ex.ExportError, match="differs from PyTorch by 1.00e"):
        ex.verify_onnx(other, folder / "m.onnx", ex.sample_inputs(model, 3))


def test_a_learned_gate_is_fixed_in_the_export_only():
    from composer.blocks.gating import ModalityGate

    model = tiny(PRESETS_BY_NAME["hct_mg"])
    gate = next(m for m in model.modules() if isinstance(m, ModalityGate))
    with torch.no_grad():
        gate.logits.copy_(torch.tensor([0.1, 0.5, 0.2]))  # the second modality is the primary now
    module = ex.InferenceModule(model)
    inner = next(m for m in module.model.modules() if isinstance(m, ModalityGate))
    assert inner.frozen and inner.primary_index() == 1
    assert not gate.frozen and gate.logits.requires_grad
    batch = ex.sample_inputs(model, 3)
    assert torch.equal(module(*(batch[n] for n in module.names)), ex._reference(model, batch))


def test_weight_names_that_are_python_keywords_are_renamed():
    module = ex.InferenceModule(tiny(PRESETS_BY_NAME["glomo"]))
    names = list(module.state_dict())
    assert any(".attention.global_." in n for n in names) and not any(".global." in n for n in names)
    assert not any(n.startswith("weights.losses.") for n in names)


def test_cli_exports_a_checkpoint_and_prints_inputs_and_differences(tmp_path, capsys):
    model = tiny(PRESETS_BY_NAME["late_fusion"])
    weights = model.save(tmp_path / "best.safetensors")
    code = main(["export", str(weights), "--onnx", str(tmp_path / "m.onnx"), "--program", str(tmp_path / "m.pt2"), "--no-optimize"])
    out, err = capsys.readouterr()
    assert code == 0, err
    for text in ("text_lengths  int64  [B]", "text  float32  [B, 4, 300]", "output: prediction", "max |ONNX - PyTorch|", "max |program - PyTorch|"):
        assert text in out
    assert (tmp_path / "m.onnx").is_file() and (tmp_path / "m.pt2").is_file()
    assert main(["export", str(weights)]) == 2
    assert main(["export", str(weights), "--onnx", str(tmp_path / "m.txt")]) == 1
