"""GLoMo: the `moe` block (eqs. 5-7), the coding and fusion blocks (eqs. 1-4, 8-13),
the shipped blueprint, its ablation variants and its size (Table 5)."""

import math
from pathlib import Path

import pytest
import torch

from composer import compile_blueprint, load_blueprint
from composer.blocks._base import Context, SpecError
from composer.registry import get_block
from composer.blocks.moe import cv_squared
from composer.errors import BlueprintError
from composer.spec import sequence, vector
from composer.testing import make_config

BLUEPRINTS = Path(__file__).resolve().parents[1] / "blueprints"
GLOMO = BLUEPRINTS / "glomo.yaml"
VARIANTS = sorted((BLUEPRINTS / "variants").glob("glomo_*.yaml"))


# a tiny but complete GLoMo: small random BERT, short sequences, d = 16
TINY = [
    "modalities.text.vocab=200", "modalities.text.length=8", "modalities.audio.length=7", "modalities.vision.length=6",
    "blocks.text_bert.hidden_size=16", "blocks.text_bert.num_layers=2", "blocks.text_bert.num_heads=2",
    "blocks.text_bert.intermediate_size=32", "blocks.text_bert.vocab_size=200",
]


def tiny(d=16, **extra):
    sets = list(TINY)
    for block in ("text_coding", "audio_coding", "vision_coding"):
        sets.append(f"blocks.{block}.dim={d}")
    for block in ("audio_coding", "vision_coding", "fusion"):
        sets.append(f"blocks.{block}.heads=4")
    for block in ("text_moe", "audio_moe", "vision_moe"):
        sets.append(f"blocks.{block}.out={d}")
    sets.append("blocks.fusion.ff_dim=32")
    return sets + [f"{k}={v}" for k, v in extra.items()]


def moe(fields, width=6):
    config = make_config("moe", fields, ["in"])
    return get_block("moe").impl(config, {"in": vector(width)})


# -- mixture of experts ---------------------------------------------------------------------


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("experts,k", [(3, 2), (4, 1), (3, 3)])
def test_gates_have_exactly_k_nonzeros_per_row_and_rows_sum_to_one(training, experts, k):
    block = moe({"out": 4, "experts": experts, "top_k": k}).train(training)
    torch.nn.init.normal_(block.w_gate)
    out = block({"in": torch.randn(10, 6)}, Context())
    gates = out["gates"]
    assert gates.shape == (10, experts)
    assert torch.all((gates > 0).sum(dim=1) == k)
    assert torch.allclose(gates.sum(dim=1), torch.ones(10))


def test_gate_and_noise_weights_start_at_zero():
    block = moe({"out": 4})
    assert torch.count_nonzero(block.w_gate) == 0 and torch.count_nonzero(block.w_noise) == 0


def test_cv_squared_is_zero_for_uniform_values_and_positive_otherwise():
    assert cv_squared(torch.full((3,), 4.0)).item() == 0.0
    assert cv_squared(torch.tensor([1.0, 2.0, 6.0])).item() > 0.1
    assert cv_squared(torch.tensor([5.0])).item() == 0.0


def test_balance_loss_is_zero_for_uniform_importance_and_load():
    # k = s without noise: every sample weighs every expert 1/s -> uniform importance and load
    block = moe({"out": 4, "experts": 3, "top_k": 3, "noisy": False})
    out = block({"in": torch.randn(8, 6)}, Context())
    assert out["balance"].item() == pytest.approx(0.0, abs=1e-12)


def test_balance_loss_is_positive_for_unbalanced_routing_and_scaled_by_omega():
    x = torch.randn(8, 6)
    losses = {}
    for omega in (0.01, 0.02):
        block = moe({"out": 4, "experts": 3, "top_k": 1, "noisy": False, "balance_weight": omega}).eval()
        out = block({"in": x}, Context())  # zero gate weights: every sample picks expert 0
        assert torch.all(out["gates"][:, 0] == 1)
        losses[omega] = out["balance"].item()
    # importance (8, 0, 0) and load (8, 0, 0): CV² = var/mean² = 3 each (unbiased variance)
    assert losses[0.01] == pytest.approx(0.01 * (3 + 3))
    assert losses[0.02] == pytest.approx(2 * losses[0.01])


def test_noisy_load_is_differentiable_in_training():
    block = moe({"out": 4, "experts": 4, "top_k": 2}).train()
    torch.nn.init.normal_(block.w_gate, std=0.1)
    block({"in": torch.randn(16, 6)}, Context())["balance"].backward()
    assert block.w_noise.grad is not None and block.w_noise.grad.abs().sum() > 0


def test_gradients_reach_exactly_the_selected_experts():
    block = moe({"out": 4, "experts": 4, "top_k": 1, "noisy": False}).eval()
    with torch.no_grad():
        block.w_gate.copy_(torch.tensor([[5.0, -5.0, 0.0, 0.0]] + [[0.0] * 4] * 5))
    x = torch.zeros(4, 6)
    x[:2, 0], x[2:, 0] = 1.0, -1.0  # rows 0-1 choose expert 0, rows 2-3 expert 1
    out = block({"in": x}, Context())
    selected = set(out["gates"].nonzero()[:, 1].tolist())
    assert selected == {0, 1}
    out["out"].sum().backward()
    for i, expert in enumerate(block.experts):
        grad = expert[2].weight.grad
        reached = grad is not None and grad.abs().sum().item() > 0
        assert reached == (i in selected), f"expert {i}: selected={i in selected}, gradient={reached}"


def test_weighted_sum_and_log_space_combinations_follow_their_formulas():
    torch.manual_seed(1)
    x = torch.randn(5, 6)
    block = moe({"out": 3, "experts": 3, "top_k": 2, "noisy": False}).eval()
    torch.nn.init.normal_(block.w_gate)
    log_block = moe({"out": 3, "experts": 3, "top_k": 2, "noisy": False, "combine": "log_sum_exp"}).eval()
    log_block.load_state_dict(block.state_dict())
    out, log_out = block({"in": x}, Context()), log_block({"in": x}, Context())
    experts = torch.stack([e(x) for e in block.experts], dim=1)  # (B, s, d)
    g = out["gates"][..., None]
    assert torch.allclose(out["out"], (g * experts).sum(1), atol=1e-6)  # eq. 6
    assert torch.allclose(log_out["out"], torch.log((g * experts.exp()).sum(1)), atol=1e-5)  # authors' code


def test_top_k_above_experts_is_a_spec_error():
    with pytest.raises(SpecError, match="top_k=3 exceeds"):
        moe({"out": 4, "experts": 2, "top_k": 3})


# -- coding and fusion blocks ---------------------------------------------------------------


def test_text_coding_pools_n_locals_from_the_joined_layers():
    config = make_config("glomo_text_coding", {"dim": 4, "n": 3}, ["cls", "layers"])
    block = get_block("glomo_text_coding").impl(config, {"cls": vector(6), "layers": sequence(10, 6)})
    cls, layers = torch.randn(2, 6), torch.randn(2, 10, 6)
    out = block({"cls": cls, "layers": layers}, Context())
    assert out["global"].shape == (2, 4) and out["local"].shape == (2, 12)
    conv = torch.nn.functional.conv1d(layers.transpose(1, 2), block.conv.conv.weight, padding=1)  # (B, d, T)
    expected = torch.nn.functional.adaptive_max_pool1d(conv, 3).transpose(1, 2).flatten(1)  # [l_1; l_2; l_3]
    assert torch.allclose(out["local"], expected, atol=1e-6)
    assert block.conv.conv.bias is None


@pytest.mark.parametrize("length", [3, 7], ids=["short", "long"])
def test_text_local_representation_of_a_padded_sentence_matches_eq_2_by_hand(length):
    """Eq. 2 on the sentence: X_t^l = CONCAT(AdaMaxPool_n(Conv1D([BERT^-1; BERT^-2]))) over its
    2L valid states, whatever the padded length (8 here; 'short' is under half of it)."""
    model = compile_blueprint(load_blueprint(GLOMO, tiny())).eval()
    batch = model.example_inputs(2, seed=3)
    ids = batch["text"].clone()
    mask = torch.arange(8)[None] < torch.tensor([8, length])[:, None]
    batch["text"], batch["text_mask"] = ids.masked_fill(~mask, 0), mask
    with torch.no_grad():
        got = model(batch)["values"]["text_coding.local"][1]  # (n·d,)
        bert = model.text_bert.bert
        states = bert(input_ids=ids[1:, :length], output_hidden_states=True).hidden_states  # unpadded sentence
        joined = torch.cat([states[-1], states[-2]], dim=1)  # (1, 2L, H)
        conv = model.text_coding.conv.conv
        local = torch.nn.functional.conv1d(joined.transpose(1, 2), conv.weight, padding=conv.kernel_size[0] // 2)  # (1, d, 2L)
        expected = torch.nn.functional.adaptive_max_pool1d(local, 3).transpose(1, 2).flatten()  # [l_1; l_2; l_3]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_authors_join_pools_all_positions_and_depends_on_padding():
    model = compile_blueprint(load_blueprint(GLOMO, tiny() + ["blocks.text_bert.layers_padding=include"])).eval()
    batch = model.example_inputs(1, seed=3)
    batch["text_mask"][:, 5:] = False
    batch["text"][:, 5:] = 0
    longer = dict(batch, text=torch.cat([batch["text"], torch.zeros(1, 4, dtype=torch.long)], 1),
                  text_mask=torch.cat([batch["text_mask"], torch.zeros(1, 4, dtype=torch.bool)], 1),
                  text_segment=torch.zeros(1, 12, dtype=torch.long))
    with torch.no_grad():
        a = model(batch)["values"]["text_coding.local"]
        b = model(longer)["values"]["text_coding.local"]
    assert not torch.allclose(a, b)  # the authors' code pools padded BERT states too


def test_sequence_coding_global_is_the_max_over_valid_steps():
    config = make_config("glomo_coding", {"dim": 4, "n": 2, "heads": 2, "layers": 1}, ["in"])
    block = get_block("glomo_coding").impl(config, {"in": sequence("T_a", 3)}).eval()
    x = torch.randn(2, 6, 3)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    out = block({"in": x}, Context(masks={"T_a": mask}))
    short = block({"in": x[1:, :4]}, Context())
    assert torch.allclose(out["global"][1], short["global"][0], atol=1e-5)
    assert torch.allclose(out["local"][1], short["local"][0], atol=1e-5)


def fusion(fields, kinds=("global", "local"), d=8):
    ports = [f"{k}_{m}" for k in kinds for m in ("text", "audio", "vision")]
    config = make_config("glomo_fusion", {"out": 1, "heads": 2, "ff_dim": 16, **fields}, ports)
    return get_block("glomo_fusion").impl(config, {p: vector(d) for p in ports}), ports


def test_mixup_weights_sum_to_one_per_sample():
    block, ports = fusion({})
    out = block({p: torch.randn(5, 8) for p in ports}, Context())
    assert out["weights"].shape == (5, 3) and out["out"].shape == (5, 1)
    assert torch.allclose(out["weights"].sum(dim=1), torch.ones(5), atol=1e-6)
    assert torch.all(out["weights"] >= 0)


def test_mixup_is_the_w_g_weighted_sum_of_modality_representations():
    block, ports = fusion({"layers": 0, "attn_dropout": 0.0})
    inputs = {p: torch.randn(3, 8) for p in ports}
    out = block(inputs, Context())
    g = torch.stack([inputs[f"global_{m}"] for m in ("text", "audio", "vision")], 1)
    l = torch.stack([inputs[f"local_{m}"] for m in ("text", "audio", "vision")], 1)
    w_g, z_g = block.attention["global"](g)
    _, z_l = block.attention["local"](l)
    z_m = torch.stack([mlp(torch.cat([g[:, i], l[:, i]], -1)) for i, mlp in enumerate(block.modality_mlps)], 1)
    z_1 = block.pair_mlp(torch.cat([z_g, z_l], -1))
    z_2 = (w_g[..., None] * z_m).sum(1)
    assert torch.allclose(out["weights"], w_g)
    assert torch.allclose(out["out"], block.predict(torch.cat([z_1, z_2], -1)), atol=1e-6)


def test_fusion_parameter_count_of_the_mosi_configuration():
    block, _ = fusion({"heads": 16, "ff_dim": 2048}, d=48)
    encoder = 2 * (4 * 48 * 48 + 4 * 48 + 2 * 48 * 2048 + 2048 + 48 + 4 * 48)
    attn = 144 * 48 + 48 + 48 * 3 + 3
    assert sum(p.numel() for p in block.parameters()) == encoder + 3 * (96 * 48 + 48) + 2 * attn + (96 * 48 + 48) + 97


def test_fusion_needs_both_kinds_for_every_modality():
    ports = ["global_text", "global_audio", "local_text"]
    config = make_config("glomo_fusion", {"out": 1}, ports)
    with pytest.raises(SpecError, match="audio lacks a local_<modality> input"):
        config.infer({p: vector(8) for p in ports})


def test_mixup_global_without_global_inputs_is_a_spec_error():
    with pytest.raises(SpecError, match="mixup: global needs global"):
        fusion({}, kinds=("local",))


# -- the blueprint ----------------------------------------------------------------------------


def test_shipped_blueprint_has_table_5_parameter_count_offline():
    bp = load_blueprint(GLOMO)
    with torch.device("meta"):  # shapes only: BERT-base's 109M parameters are never allocated
        model = compile_blueprint(bp)
    counts = model.parameter_counts()
    assert sum(counts.values()) == 109_818_887
    assert counts["text_bert"] == 108_891_648  # BERT-base without its pooler


def test_tiny_blueprint_forward_gives_prediction_and_three_balance_losses():
    model = compile_blueprint(load_blueprint(GLOMO, overrides=tiny()))
    batch = model.example_inputs(4)
    out = model(batch)
    assert out["prediction"].shape == (4, 1)
    assert sorted(out["aux_losses"]) == ["audio_moe.balance", "text_moe.balance", "vision_moe.balance"]
    total, parts = model.compute_loss({"main": out}, {"main": batch})
    assert torch.isfinite(total) and set(parts) >= {"l1_0", "text_moe.balance"}


def test_tiny_blueprint_trains_with_the_trainer_on_synthetic_tokens(tmp_path):
    from composer.train.trainer import train

    sets = tiny() + ["training.data={samples: {train: 24, valid: 8, test: 8}}", "training.batch_size=8", "training.lr=1.0e-3"]
    result = train(GLOMO, out=tmp_path / "run", overrides=sets, epochs=2, progress=False, device="cpu")
    assert result["epochs_run"] == 2
    assert math.isfinite(result["best"]["valid"]["mae"])


def test_tiny_blueprint_loss_falls_on_a_fixed_batch():
    torch.manual_seed(0)
    model = compile_blueprint(load_blueprint(GLOMO, overrides=tiny()))
    batch = model.example_inputs(6)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        total, _ = model.compute_loss({"main": model(batch)}, {"main": batch})
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        losses.append(total.item())
    assert losses[-1] < 0.7 * losses[0]


ABLATION_SETS = {
    "SUM": ["blocks.fusion.strategy=sum"],
    "CON": ["blocks.fusion.strategy=concat"],
    "ATTN_F": ["blocks.fusion.strategy=attention"],
    "MUL": ["blocks.fusion.strategy=product"],
    "ATTN_G": ["blocks.fusion.mixup=attention"],
    "MLP_G": ["blocks.fusion.mixup=mlp"],
    "ReAt_G": ["blocks.fusion.mixup=local"],
}


@pytest.mark.parametrize("name", list(ABLATION_SETS))
def test_fusion_ablations_are_set_lines_that_build_and_run(name):
    model = compile_blueprint(load_blueprint(GLOMO, overrides=tiny() + ABLATION_SETS[name]))
    out = model(model.example_inputs(2))
    assert out["prediction"].shape == (2, 1)


@pytest.mark.parametrize("path", VARIANTS, ids=lambda p: p.stem)
def test_variant_files_validate_and_run_tiny(path):
    sets = tiny()
    if "global_only" in path.stem:  # no MoE blocks; the text global is a plain `linear`
        sets = [s for s in sets if "_moe." not in s and not s.startswith("blocks.text_coding.")]
        sets.append("blocks.text_coding.out=16")
    model = compile_blueprint(load_blueprint(path, overrides=sets))
    out = model(model.example_inputs(2))
    assert out["prediction"].shape == (2, 1)
    assert bool(out["aux_losses"]) == ("mlp_m" not in path.stem and "global_only" not in path.stem)


def test_search_space_names_experts_top_k_and_n():
    bp = load_blueprint(GLOMO)
    assert {"blocks.text_moe.experts", "blocks.text_moe.top_k", "blocks.text_coding.n"} <= set(bp.search.space)
    bp4 = load_blueprint(GLOMO, overrides=tiny() + ["blocks.audio_moe.experts=4", "blocks.audio_moe.top_k=1"])
    assert compile_blueprint(bp4).audio_moe.w_gate.shape[1] == 4
    with pytest.raises(BlueprintError, match=r"blocks\.audio_moe\.top_k.*top_k=2 exceeds"):
        compile_blueprint(load_blueprint(GLOMO, overrides=tiny() + ["blocks.audio_moe.experts=1"]))


def test_authors_bare_linear_fusion_mlps_have_the_same_parameters_and_drop_the_relu():
    base = compile_blueprint(load_blueprint(GLOMO, tiny())).eval()
    bare = compile_blueprint(load_blueprint(GLOMO, tiny() + ["blocks.fusion.mlp_activation=false"])).eval()
    assert sum(p.numel() for p in base.parameters()) == sum(p.numel() for p in bare.parameters())
    bare.load_state_dict(base.state_dict())
    assert isinstance(bare.fusion.pair_mlp[1], torch.nn.Identity) and isinstance(base.fusion.pair_mlp[1], torch.nn.ReLU)
    batch = base.example_inputs(2)
    with torch.no_grad():
        assert not torch.allclose(base(batch)["prediction"], bare(batch)["prediction"])


def test_attention_pool_block_is_glomos_attn():
    from composer.blocks.glomo.fusion import ModalityAttention

    specs = {"text": vector(4), "audio": vector(4), "vision": vector(4)}
    block = get_block("attention_pool").impl(make_config("attention_pool", {}, list(specs)), specs).eval()
    attn = ModalityAttention(3, 4, 0.0).eval()
    attn.load_state_dict(block.attention.state_dict())
    xs = {k: torch.randn(2, 4) for k in specs}
    out = block(xs, Context())
    weights, fused = attn(torch.stack(list(xs.values()), dim=1))
    torch.testing.assert_close(out["out"], fused)
    torch.testing.assert_close(out["weights"].sum(-1), torch.ones(2))
