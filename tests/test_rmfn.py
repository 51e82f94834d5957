"""RMFN: the LSTHM cell (eqs. 7-12), the Multistage Fusion Process (eqs. 1-6), the recurrent
system with its feedback (eq. 13), the shipped blueprints and their ablation overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import composer
from composer.blocks._base import Context
from composer.blocks.fusion.mfp import MultistageFusion
from composer.blocks.lsthm import LSTHMCell, hard_sigmoid
from composer.errors import BlueprintError
from composer.spec import sequence, vector
from composer.testing import make_config

BLUEPRINTS = Path(__file__).resolve().parents[1] / "blueprints"
RMFN = BLUEPRINTS / "rmfn.yaml"


def _mfp(inputs: dict, **fields) -> MultistageFusion:
    config = make_config("mfp", fields, list(inputs))
    return MultistageFusion(config, inputs)


def _system(inputs: dict, **fields):
    from composer.blocks.lsthm import LSTHMSystem

    return LSTHMSystem(make_config("lsthm_system", fields, list(inputs)), inputs)


SMALL_MFP = {"type": "mfp", "stages": 2, "hidden": 6, "out": 5, "summarize_hidden": [4]}
ALIGNED = {"text": sequence("T", 4), "audio": sequence("T", 3), "vision": sequence("T", 2)}
WIDTHS = {"text": 5, "audio": 3, "vision": 2}


# -- LSTHM cell ---------------------------------------------------------------------------
def test_hard_sigmoid_is_the_keras_piecewise_line():
    x = torch.tensor([-10.0, -2.5, -1.0, 0.0, 1.0, 2.5, 10.0])
    assert torch.allclose(hard_sigmoid(x), torch.tensor([0.0, 0.0, 0.3, 0.5, 0.7, 1.0, 1.0]))


@pytest.mark.parametrize("gate", ["hard_sigmoid", "sigmoid"])
def test_lsthm_step_matches_hand_computed_gates(gate):
    torch.manual_seed(1)
    D, H, Z, B = 3, 2, 4, 2
    cell = LSTHMCell(D, H, Z, gate=gate)
    x, h, c, z = torch.randn(B, D), torch.randn(B, H), torch.randn(B, H), torch.randn(B, Z)
    sigma = hard_sigmoid if gate == "hard_sigmoid" else torch.sigmoid

    def pre(k):  # W_k x + U_k h + V_k z + b_k for gate block k (order f, i, o, c̄)
        rows = slice(k * H, (k + 1) * H)
        return (
            x @ cell.W.weight[rows].T + cell.W.bias[rows]
            + h @ cell.U.weight[rows].T + cell.U.bias[rows]
            + z @ cell.V.weight[rows].T + cell.V.bias[rows]
        )

    f, i, o, proposal = sigma(pre(0)), sigma(pre(1)), sigma(pre(2)), pre(3)  # eqs. 8, 7, 9, 10
    c_expected = f * c + i * torch.tanh(proposal)  # eq. 11
    h_expected = o * torch.tanh(c_expected)  # eq. 12
    h_new, c_new = cell(x, (h, c), z)
    assert torch.allclose(c_new, c_expected, atol=1e-6)
    assert torch.allclose(h_new, h_expected, atol=1e-6)


def test_lsthm_without_hybrid_input_has_no_v_and_is_an_lstm_step():
    cell = LSTHMCell(3, 2, 0)
    assert cell.V is None
    x, state = torch.randn(2, 3), (torch.zeros(2, 2), torch.zeros(2, 2))
    h, c = cell(x, state)
    assert h.shape == c.shape == (2, 2)


# -- Multistage Fusion Process ------------------------------------------------------------
def test_mfp_stage_count_changes_parameters_and_outputs_as_expected():
    inputs = {"text": vector(4), "audio": vector(3)}
    counts, attentions = {}, {}
    h = {"text": torch.randn(2, 4), "audio": torch.randn(2, 3)}
    for k in (1, 3, 6):
        torch.manual_seed(0)
        block = _mfp(inputs, stages=k, hidden=6, out=5, summarize_hidden=[4])
        counts[k] = sum(p.numel() for p in block.parameters())
        out = block(h, Context())
        assert out["out"].shape == (2, 5)
        attentions[k] = out["attention"]
        assert out["attention"].shape == (2, k, 7)  # one softmax over d = 4 + 3 per stage
    # only S reads K stage states: each extra stage adds hidden x summarize_hidden[0] weights
    assert counts[3] - counts[1] == 2 * 6 * 4
    assert counts[6] - counts[3] == 3 * 6 * 4
    # the decoder is the same for every K, so the first stages' attention agrees
    assert torch.allclose(attentions[6][:, :3], attentions[3], atol=1e-6)
    assert torch.allclose(attentions[3][:, :1], attentions[1], atol=1e-6)


def test_mfp_summarizing_the_last_stage_keeps_parameters_fixed_in_k():
    inputs = {"0": vector(4), "1": vector(3)}
    sizes = {k: sum(p.numel() for p in _mfp(inputs, stages=k, summarize_input="last").parameters()) for k in (1, 4)}
    assert sizes[1] == sizes[4]


def test_mfp_attention_rows_sum_to_one_and_weight_h():
    block = _mfp({"text": vector(4), "audio": vector(3)}, stages=3, hidden=6, out=5)
    h = {"text": torch.randn(5, 4), "audio": torch.randn(5, 3)}
    attention = block(h, Context())["attention"]  # (B, K, d)
    assert torch.allclose(attention.sum(-1), torch.ones(5, 3), atol=1e-6)
    assert (attention > 0).all()
    # stages differ: the decoder feeds a^{k-1} back in
    assert not torch.allclose(attention[:, 0], attention[:, 1])


def test_mfp_rescale_multiplies_the_highlighted_vector_by_its_width():
    inputs = {"text": vector(4), "audio": vector(3)}
    torch.manual_seed(0)
    plain = _mfp(inputs, stages=1, hidden=5, out=3)
    scaled = _mfp(inputs, stages=1, hidden=5, out=3, rescale=True)
    scaled.load_state_dict(plain.state_dict())
    h = {"text": torch.randn(2, 4), "audio": torch.randn(2, 3)}
    seen = {}
    for name, block in (("plain", plain), ("scaled", scaled)):
        block.fuse.register_forward_pre_hook(lambda m, args, name=name: seen.__setitem__(name, args[0]))
        block(h, Context())
    assert torch.allclose(seen["scaled"], 7 * seen["plain"], atol=1e-6)


def test_mfp_without_highlight_has_no_attention_and_no_highlight_lstm():
    block = _mfp({"text": vector(4), "audio": vector(3)}, stages=3, highlight=False)
    names = [n for n, _ in block.named_parameters()]
    assert not any(n.startswith(("highlight", "memory_init")) for n in names)
    assert set(block.out_specs) == {"out"}
    z = block({"text": torch.randn(2, 4), "audio": torch.randn(2, 3)}, Context())
    assert isinstance(z, torch.Tensor) and z.shape == (2, 128)


def test_mfp_fuses_utterance_vectors_in_a_blueprint():
    bp = composer.load_blueprint(
        {
            "blueprint": 1,
            "name": "mfp_late",
            "modalities": {"text": {"kind": "vector", "features": 6}, "audio": {"kind": "vector", "features": 3}},
            "blocks": {
                "fusion": {"type": "mfp", "in": {"text": "text", "audio": "audio"}, "stages": 2, "hidden": 4, "out": 4},
                "head": {"type": "mlp", "in": "fusion.out", "out": 1},
            },
            "outputs": {"prediction": "head"},
            "losses": [{"type": "l1", "pred": "head"}],
        }
    )
    model = composer.compile_blueprint(bp)
    out = model(model.example_inputs(3))
    assert out["prediction"].shape == (3, 1)
    assert out["values"]["fusion.attention"].shape == (3, 2, 9)


# -- the recurrent system -----------------------------------------------------------------
def test_system_exposes_lsthms_fusion_and_feedback_as_named_submodules():
    model = composer.compile_blueprint(composer.load_blueprint(RMFN))
    names = [n for n, _ in model.named_parameters()]
    for modality in ("text", "audio", "vision"):
        assert f"rmfn.lsthm.{modality}.V.weight" in names
    assert any(n.startswith("rmfn.fusion.highlight.") for n in names)
    assert any(n.startswith("rmfn.fusion.fuse.") for n in names)
    assert any(n.startswith("rmfn.fusion.summarize.") for n in names)
    assert "rmfn.feedback.initial" in names
    assert model.rmfn.lsthm.text.V.in_features == 128  # z_t feeds every LSTHM
    assert model.rmfn.lsthm.text.gate == "hard_sigmoid"


def test_no_mfp_variant_lsthms_ignore_other_modalities():
    torch.manual_seed(0)
    system = _system(ALIGNED, hidden=WIDTHS, fusion=None)
    assert system.fusion is None and system.feedback is None
    assert all(cell.V is None for cell in system.lsthm.values())
    x = {m: torch.randn(2, 5, int(s.features)) for m, s in ALIGNED.items()}
    e = system(x, Context())
    assert e.shape == (2, 10)  # [h_l; h_a; h_v] only, no z
    changed = dict(x, audio=torch.randn(2, 5, 3))
    e2 = system(changed, Context())
    assert torch.allclose(e[:, :5], e2[:, :5]) and torch.allclose(e[:, 8:], e2[:, 8:])  # text and vision untouched
    assert not torch.allclose(e[:, 5:8], e2[:, 5:8])


def test_feedback_carries_other_modalities_into_each_lsthm():
    torch.manual_seed(0)
    system = _system(ALIGNED, hidden=WIDTHS, fusion=SMALL_MFP)
    x = {m: torch.randn(2, 5, int(s.features)) for m, s in ALIGNED.items()}
    e = system(x, Context())["out"]
    e2 = system(dict(x, audio=torch.randn(2, 5, 3)), Context())["out"]
    assert e.shape == (2, 5 + 3 + 2 + 5)
    assert not torch.allclose(e[:, :5], e2[:, :5])  # text's state heard the audio through z


def test_padded_steps_do_not_update_the_state():
    torch.manual_seed(0)
    system = _system(ALIGNED, hidden=WIDTHS, fusion=SMALL_MFP).eval()
    x = {m: torch.randn(2, 6, int(s.features)) for m, s in ALIGNED.items()}
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    padded = {m: v.clone() for m, v in x.items()}
    for v in padded.values():
        v[1, 4:] = 100.0  # garbage on padded steps
    out = system(padded, Context(masks={"T": mask}))
    truncated = system({m: v[1:, :4] for m, v in x.items()}, Context())
    assert torch.allclose(out["out"][1], truncated["out"][0], atol=1e-5)
    attention = out["attention"].view(2, 6, 2, 10)  # (B, T, K, d)
    assert torch.allclose(attention[0].sum(-1), torch.ones(6, 2), atol=1e-5)
    assert torch.allclose(attention[1, :4].sum(-1), torch.ones(4, 2), atol=1e-5)
    assert (attention[1, 4:] == 0).all()


def test_system_rejects_unaligned_inputs_and_missing_widths():
    with pytest.raises(composer.SpecError, match="aligned"):
        _system({"text": sequence("T_text", 4), "audio": sequence("T_audio", 3)}, hidden={"text": 2, "audio": 2})
    with pytest.raises(composer.SpecError, match="missing audio"):
        _system({"text": sequence("T", 4), "audio": sequence("T", 3)}, hidden={"text": 2})


# -- blueprints and overrides -------------------------------------------------------------
def test_rmfn_blueprint_builds_with_paper_sizes():
    model = composer.compile_blueprint(composer.load_blueprint(RMFN))
    counts = model.parameter_counts()
    assert counts == {"rmfn": 463728, "head": 15489}
    assert {m: cell.hidden_size for m, cell in model.rmfn.lsthm.items()} == {"text": 64, "audio": 16, "vision": 32}
    out = model(model.example_inputs(2))
    assert out["prediction"].shape == (2, 1)
    assert out["values"]["rmfn.out"].shape == (2, 64 + 16 + 32 + 128)  # eq. 13
    assert out["values"]["rmfn.attention"].shape == (2, 20, 3 * 112)


@pytest.mark.parametrize("stages", [1, 2, 3, 4, 5, 6])
def test_stage_override_rebuilds_with_k_stages(stages):
    bp = composer.load_blueprint(RMFN, overrides=[f"blocks.rmfn.fusion.stages={stages}"])
    model = composer.compile_blueprint(bp)
    assert model.rmfn.fusion.config.stages == stages
    assert model.parameter_counts()["rmfn"] == 463728 + (stages - 3) * 128 * 128
    assert bp.plan.values["rmfn.attention"].shape[-1] == stages * 112


def test_ablation_overrides_build():
    # the shipped search space sweeps fusion.stages, so dropping the fusion drops the search too
    no_mfp = composer.compile_blueprint(composer.load_blueprint(RMFN, overrides=["blocks.rmfn.fusion=null", "search=null"]))
    assert no_mfp.rmfn.fusion is None and all(c.V is None for c in no_mfp.rmfn.lsthm.values())
    assert no_mfp.parameter_counts() == {"rmfn": 102080, "head": 7297}
    variant = composer.compile_blueprint(composer.load_blueprint(BLUEPRINTS / "variants" / "rmfn_no_mfp.yaml"))
    assert variant.parameter_counts() == no_mfp.parameter_counts()
    no_highlight = composer.compile_blueprint(composer.load_blueprint(RMFN, overrides=["blocks.rmfn.fusion.highlight=false"]))
    assert not hasattr(no_highlight.rmfn.fusion, "highlight")
    assert no_highlight.parameter_counts()["rmfn"] == 349824
    for model in (no_mfp, no_highlight):
        assert model(model.example_inputs(2))["prediction"].shape == (2, 1)


def test_fusion_is_swappable_by_yaml():
    bp = composer.load_blueprint(RMFN, overrides=["blocks.rmfn.fusion={type: concat}", "search=null"])
    model = composer.compile_blueprint(bp)
    assert type(model.rmfn.fusion).__name__ == "Concat"
    assert model.rmfn.lsthm.text.V.in_features == 112  # z = [h_l; h_a; h_v]
    assert model(model.example_inputs(2))["values"]["rmfn"].shape == (2, 112 + 112)


@pytest.mark.parametrize(
    "override,message",
    [
        ("blocks.rmfn.fusion.stages=0", "field 'stages' of the mfp fusion: Input should be greater than or equal to 1"),
        ("blocks.rmfn.fusion.stagez=2", "field 'stagez' of the mfp fusion: unknown field"),
        ("blocks.rmfn.fusion.type=mfq", "unknown block type 'mfq' (did you mean 'mfp'?)"),
        ("blocks.rmfn.fusion={stages: 2}", "fusion needs `type:`"),
        ("blocks.rmfn.fusion={type: mlp, out: 3}", "fusion (mlp) cannot fuse the LSTHM states"),
    ],
)
def test_bad_fusion_config_is_reported_with_its_inner_path(override, message):
    with pytest.raises(BlueprintError) as info:
        composer.load_blueprint(RMFN, overrides=[override])
    text = str(info.value)
    assert "blocks.rmfn.fusion" in text and message in text


def test_classification_variant_builds_and_computes_a_loss():
    model = composer.compile_blueprint(composer.load_blueprint(BLUEPRINTS / "rmfn_classification.yaml"))
    batch = model.example_inputs(3)
    out = model(batch)
    assert out["prediction"].shape == (3, 2)
    total, _ = model.compute_loss({"main": out}, {"main": batch})
    assert torch.isfinite(total)


def test_render_shows_lsthms_mfp_stages_and_feedback():
    from composer.blocks._inside import inside_of

    model = composer.compile_blueprint(composer.load_blueprint(RMFN, overrides=["blocks.rmfn.fusion.stages=4"]))
    parts = {p.name: p for p in inside_of(model.rmfn, 2)}
    assert set(parts) == {"lsthm.text", "lsthm.audio", "lsthm.vision", "fusion", "feedback"}
    assert parts["feedback"].inputs == ("fusion",) and parts["lsthm.text"].inputs == ("feedback",)
    assert "4 stages" in parts["fusion"].label
    assert [q.name for q in parts["fusion"].parts] == ["memory_init", "highlight", "fuse", "summarize"]
    assert sum(p.params for p in parts.values()) == model.parameter_counts()["rmfn"]


def test_blueprint_round_trips_through_yaml():
    bp = composer.load_blueprint(RMFN, overrides=["blocks.rmfn.fusion.stages=5"])
    again = composer.load_blueprint(composer.dump_blueprint(bp))
    assert again.blocks["rmfn"] == bp.blocks["rmfn"]
    assert again.blocks["rmfn"].fusion["stages"] == 5


def test_no_mfp_model_saves_and_reloads_without_its_fusion(tmp_path):
    model = composer.compile_blueprint(composer.load_blueprint(BLUEPRINTS / "variants" / "rmfn_no_mfp.yaml"))
    assert "fusion: null" in composer.dump_blueprint(model.blueprint)
    again = composer.load_model(model.save(tmp_path / "no_mfp.safetensors"))
    assert again.rmfn.fusion is None
    batch = model.example_inputs(2)
    model.eval(), again.eval()
    assert torch.allclose(model(batch)["prediction"], again(batch)["prediction"])


# -- training -----------------------------------------------------------------------------
def _small_blueprint(multimodal: bool) -> dict:
    """Tiny RMFN, or a text-only LSTM over the same three-modality data (audio/vision unused)."""
    modalities = {name: {"features": w, "length": 8, "time": "T_words"} for name, w in (("text", 6), ("audio", 4), ("vision", 4))}
    if multimodal:
        encoder = {
            "type": "lsthm_system",
            "in": {"text": "text", "audio": "audio", "vision": "vision"},
            "hidden": {"text": 8, "audio": 6, "vision": 6},
            "fusion": {"type": "mfp", "stages": 2, "hidden": 12, "out": 8, "summarize_hidden": [12]},
        }
        head_in = "enc.out"
    else:
        encoder = {"type": "lstm", "in": "text", "hidden": 20, "output": "last"}
        head_in = "enc"
    return {
        "blueprint": 1,
        "name": "rmfn_tiny" if multimodal else "text_only",
        "modalities": modalities,
        "blocks": {"enc": encoder, "head": {"type": "mlp", "in": head_in, "hidden": [16], "out": 1}},
        "outputs": {"prediction": "head"},
        "losses": [{"type": "l1", "pred": "head"}],
        "training": {
            "lr": 0.01,
            "batch_size": 32,
            "epochs": 8,
            "data": {"samples": {"train": 384, "valid": 128, "test": 32}, "seed": 0},
        },
    }


def _valid_mae(blueprint: dict, out: Path) -> float:
    """Train with ``composer.train`` on the built-in synthetic set; the best valid MAE."""
    result = composer.train(blueprint, out=out, progress=False, seed=0)
    return float(result.summary["best"]["valid"]["mae"])


def test_rmfn_trains_and_beats_a_unimodal_baseline_on_synthetic_data(tmp_path):
    # the synthetic label mixes cues of all three modalities with bimodal and trimodal products
    text_only = _valid_mae(_small_blueprint(False), tmp_path / "text_only")
    rmfn = _valid_mae(_small_blueprint(True), tmp_path / "rmfn")
    print(f"valid MAE: text-only LSTM {text_only:.3f}, RMFN {rmfn:.3f}")
    assert rmfn < 0.8 * text_only, (rmfn, text_only)


def test_lsthm_system_keeps_its_fusions_auxiliary_losses_and_feeds_it_vector_inputs():
    import composer

    data = {
        "blueprint": 1, "name": "lsthm_aux",
        "modalities": {"text": {"features": 4, "length": 5, "time": "T"}, "audio": {"features": 3, "length": 5, "time": "T"},
                       "face": {"kind": "vector", "features": 2}},
        "blocks": {
            "sys": {"type": "lsthm_system", "in": {"text": "text", "audio": "audio", "face": "face"}, "hidden": {"text": 4, "audio": 3},
                    "fusion": {"type": "concat"}},
            "moe_sys": {"type": "lsthm_system", "in": ["text"], "hidden": [3], "fusion": {"type": "moe", "out": 4, "experts": 3, "top_k": 2}},
            "fusion": {"type": "concat", "in": ["sys", "moe_sys"]},
            "head": {"type": "mlp", "in": "fusion", "out": 1},
        },
        "losses": [{"type": "l1", "pred": "head"}],
    }
    model = composer.compile_blueprint(composer.load_blueprint(data)).train()
    assert model.plan.node("sys").out_specs["out"].features == 4 + 3 + (4 + 3 + 2)  # z = concat(h_text, h_audio, face)
    batch = model.example_inputs(4)
    out = model(batch)
    assert set(out["aux_losses"]) == {"moe_sys.fusion_balance"}
    total, parts = model.compute_loss({"main": out}, {"main": batch})
    assert "moe_sys.fusion_balance" in parts
    face = batch["face"].clone().requires_grad_(True)
    model({**batch, "face": face})["prediction"].sum().backward()
    assert face.grad.abs().sum() > 0  # the vector input reaches the prediction through the fusion


@pytest.mark.parametrize("name, metrics", [
    ("rmfn_iemocap", ["acc_happy", "f1_happy", "acc_neutral", "f1_neutral", "f1_weighted"]),
    ("rmfn_pom", ["mae_confident", "corr_humorous", "acc_persuasive", "mae"]),
])
def test_iemocap_and_pom_variants_train_and_report_per_task_metrics(name, metrics, tmp_path):
    import composer

    path = Path(__file__).parents[1] / "blueprints" / "variants" / f"{name}.yaml"
    small = ["training.epochs=1", "training.data.samples={train: 32, valid: 16, test: 16}", "modalities.text.length=6",
             "modalities.audio.length=6", "modalities.vision.length=6"]
    result = composer.train(composer.load_blueprint(path, small), out=tmp_path / "run", progress=False)
    for metric in metrics:
        assert metric in result.summary["best"]["test"], metric
