"""EMT-DLFR: the ``emt`` fusion block, its sharing flags and cost, the DLFR losses, and the
shipped blueprint trained on two views (complete and incomplete)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import composer
from composer.blocks._base import Context, SpecError
from composer.registry import block_adapter, get_loss
from composer.blocks.fusion.emt import EMT
from composer.spec import Spec, sequence, vector
from composer.losses.dlfr import negative_cosine
from composer.profiling import count_macs
from composer.train.views import make_views, temporal_mask

BLUEPRINTS = Path(__file__).resolve().parents[1] / "blueprints"
MAIN = BLUEPRINTS / "emt_dlfr.yaml"
MOSI_LENGTHS = {"text": 50, "audio": 375, "vision": 500}
SUB_MPU_GEGLU_128 = 330_112  # one directional sub-MPU at d=128, FFN×4 (GEGLU)
ATTN_POOL_384 = 148_225  # attention pooling over flattened 3×128 contexts


def emt_block(inputs: dict[str, Spec], device: str = "cpu", **fields) -> EMT:
    config = block_adapter().validate_python({"type": "emt", "in": {p: f"x_{p}" for p in inputs}, **fields})
    with torch.device(device):
        return EMT(config, inputs)


def emt_inputs(d: int, modalities: list[str], times: dict[str, int | str] | None = None) -> dict[str, Spec]:
    times = times or {}
    specs = {m: sequence(times.get(m, f"T_{m}"), d) for m in modalities}
    specs.update({f"{m}_utt": vector(d) for m in modalities})
    return specs


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


# -- hierarchical parameter sharing (§3.3.4, Table 9) -------------------------------------

FLAGS = [(False, False, False), (True, False, False), (False, True, False), (False, False, True),
         (True, True, False), (True, False, True), (False, True, True), (True, True, True)]
TABLE9_M = [116.4, 113.4, 112.4, 112.1, 111.4, 111.1, 110.8, 110.5]


@pytest.mark.parametrize("flags", FLAGS, ids=lambda f: "dir%d-mod%d-lay%d" % f)
def test_sharing_flags_set_the_number_of_sub_mpus(flags):
    dirs, mods, lays = flags
    block = emt_block(emt_inputs(128, ["text", "audio", "vision"]), "meta", ffn="geglu",
                      share_directions=dirs, share_modalities=mods, share_layers=lays)
    units = (1 if lays else 3) * (1 if mods else 3) * (1 if dirs else 2)
    pools = 1 if lays else 3
    assert len(block.units) == units
    assert n_params(block) == units * SUB_MPU_GEGLU_128 + pools * ATTN_POOL_384


def test_sharing_savings_match_table9():
    counts = [n_params(emt_block(emt_inputs(128, ["text", "audio", "vision"]), "meta", ffn="geglu",
                                 share_directions=a, share_modalities=b, share_layers=c)) for a, b, c in FLAGS]
    all_shared = counts[-1]
    assert all_shared < 1_000_000  # "less than 1M (actually 0.5M)"
    for count, paper in zip(counts, TABLE9_M):
        assert abs((count - all_shared) / 1e6 - (paper - TABLE9_M[-1])) < 0.1  # both rounded to 0.1M


def test_shared_weights_are_the_same_modules():
    block = emt_block(emt_inputs(8, ["a", "b", "c"]), heads=2, layers=2, share_directions=True, share_modalities=True)
    assert block.unit(0, 0, 0) is block.unit(0, 0, 1)  # directions
    assert block.unit(0, 0, 0) is block.unit(0, 2, 0)  # modalities
    assert block.unit(0, 0, 0) is not block.unit(1, 0, 0)  # layers stay separate
    layered = emt_block(emt_inputs(8, ["a", "b"]), heads=2, layers=3, share_layers=True)
    assert layered.unit(0, 1, 1) is layered.unit(2, 1, 1)
    assert layered.unit(0, 0, 0) is not layered.unit(0, 1, 0)
    assert layered.unit(0, 0, 0) is not layered.unit(0, 0, 1)
    assert layered.pools[layered.pool_grid[0][0]] is layered.pools[layered.pool_grid[2][0]]
    # parameters() yields each shared tensor once
    ptrs = [p.data_ptr() for p in block.parameters()]
    assert len(ptrs) == len(set(ptrs))


def test_shared_block_gets_gradient_from_every_use():
    block = emt_block(emt_inputs(8, ["a", "b"]), heads=2, layers=2, share_directions=True,
                      share_modalities=True, share_layers=True)
    x = {"a": torch.randn(2, 5, 8), "b": torch.randn(2, 3, 8), "a_utt": torch.randn(2, 8), "b_utt": torch.randn(2, 8)}
    out = block(x, Context())
    out["global"].sum().backward()
    assert len(block.units) == 1 and block.units[0].ffn.fc1.weight.grad.abs().sum() > 0


# -- the block's behaviour -----------------------------------------------------------------

@pytest.mark.parametrize("strategy", ["oagl", "oall", "ooll"])
def test_padded_steps_do_not_change_the_outputs(strategy):
    torch.manual_seed(0)
    block = emt_block(emt_inputs(8, ["a", "b"]), heads=2, layers=2, strategy=strategy).eval()
    x = {"a": torch.randn(2, 6, 8), "b": torch.randn(2, 4, 8), "a_utt": torch.randn(2, 8), "b_utt": torch.randn(2, 8)}
    valid_a = torch.tensor([[True] * 6, [True] * 3 + [False] * 3])
    ctx = Context(masks={"T_a": valid_a})
    first = block(x, ctx)
    x2 = dict(x, a=x["a"].clone())
    x2["a"][1, 3:] = 100.0  # garbage on padded steps
    second = block(x2, ctx)
    torch.testing.assert_close(first["global"], second["global"])
    torch.testing.assert_close(first["b"], second["b"])
    torch.testing.assert_close(first["a"], second["a"])
    assert first["a"][1, 3:].abs().sum() == 0  # padded steps zeroed


def test_attention_over_an_all_padded_context_stays_finite():
    from composer.blocks.mpu import MultiHeadAttention

    attn = MultiHeadAttention(8, 2)
    out = attn(torch.randn(2, 3, 8), torch.randn(2, 4, 8), torch.tensor([[True] * 4, [False, True, True, True]]))
    assert torch.isfinite(out).all()


def test_outputs_name_global_and_one_port_per_sequence():
    specs = block_adapter().validate_python({"type": "emt", "in": {"t": "x", "a": "y", "t_u": "z", "a_u": "w"}}).infer(
        {"t": sequence("T_t", 16), "a": sequence("T_a", 16), "t_u": vector(16), "a_u": vector(16)})
    assert specs == {"global": vector(32), "t": sequence("T_t", 16), "a": sequence("T_a", 16)}


def test_oagl_without_utterance_vectors_is_a_readable_error():
    with pytest.raises(SpecError, match="utterance vectors"):
        emt_block({"a": sequence("T_a", 8), "b": sequence("T_b", 8)})


# -- cost (§3.3.3, Tables 1 and 8) ---------------------------------------------------------

def _emt_macs(strategy: str, d: int, lengths: dict[str, int], **fields) -> int:
    block = emt_block(emt_inputs(d, list(lengths)), "meta", strategy=strategy, **fields).eval()
    with torch.device("meta"):
        x = {m: torch.randn(1, t, d) for m, t in lengths.items()}
        x.update({f"{m}_utt": torch.randn(1, d) for m in lengths})
    return count_macs(lambda: block(x, Context()))


def test_oagl_cost_grows_linearly_and_ooll_quadratically_with_modalities():
    def macs(strategy, M):
        return _emt_macs(strategy, 16, {f"m{i}": 128 for i in range(M)}, layers=1, heads=2)  # M ≪ T

    oagl = [macs("oagl", M) for M in (2, 3, 4)]
    ooll = [macs("ooll", M) for M in (2, 3, 4)]
    step1, step2 = oagl[1] - oagl[0], oagl[2] - oagl[1]
    assert abs(step2 - step1) < 0.05 * step1  # constant increments: linear in M
    assert oagl[2] / oagl[0] < 2.2
    assert ooll[2] / ooll[0] > 5.5  # C(4,2)/C(2,2) = 6 MPUs: quadratic in M


def test_fusion_macs_follow_table8_order_and_scale():
    # MOSI unaligned lengths (text 50 tokens, audio 375, vision 500), batch 1, L=3, d=128
    fields = dict(ffn="geglu", share_directions=True, share_modalities=True, share_layers=True)
    macs = {s: _emt_macs(s, 128, MOSI_LENGTHS, **fields) / 1e9 for s in ("oagl", "ooll", "oall")}
    assert macs["oagl"] < macs["ooll"] < macs["oall"]
    assert 1.0 < macs["oagl"] < 1.6  # paper: 1.5 G
    assert 1.9 < macs["ooll"] / macs["oagl"] < 2.6  # paper: 3.1 / 1.5 = 2.07
    assert 4.8 < macs["oall"] / macs["oagl"] < 6.8  # paper: 8.3 / 1.5 = 5.53


# -- DLFR losses (§3.5) --------------------------------------------------------------------

def _loss(type_name: str, specs: dict[str, Spec], **fields):
    entry = get_loss(type_name)
    refs = {f: f"x_{f}" for f in entry.config.ref_fields}
    config = entry.config.model_validate({"type": type_name, **refs, **fields})
    return entry.impl(config, specs)


def test_reconstruction_loss_ignores_unmasked_positions():
    torch.manual_seed(0)
    loss = _loss("llfr", {"input": sequence("T", 4), "target": sequence("T", 3), "mask": Spec("tokens", ("B", "T"), "bool")})
    z = torch.randn(2, 5, 4, requires_grad=True)
    target = torch.randn(2, 5, 3)
    mask = torch.tensor([[True, False, False, True, False], [False, False, True, False, False]])
    value = loss({"input": z, "target": target, "mask": mask}, Context())
    value.backward()
    assert z.grad[~mask].abs().sum() == 0 and z.grad[mask].abs().sum() > 0
    changed = target.clone()
    changed[~mask] += 10.0
    assert torch.equal(loss({"input": z, "target": changed, "mask": mask}, Context()), value.detach())
    recon = loss.decoder(z)
    expected = F.smooth_l1_loss(recon[mask], target[mask])
    torch.testing.assert_close(value, expected)
    nothing = loss({"input": z, "target": target, "mask": torch.zeros_like(mask)}, Context())
    assert nothing.item() == 0.0


def test_reconstruction_loss_skips_padding_and_detaches_target():
    loss = _loss("llfr", {"input": sequence("T", 4), "target": sequence("T", 4), "mask": Spec("tokens", ("B", "T"), "bool")})
    z = torch.randn(1, 3, 4)
    target = torch.randn(1, 3, 4, requires_grad=True)
    mask = torch.tensor([[True, True, True]])
    ctx = Context(masks={"T": torch.tensor([[True, True, False]])})
    value = loss({"input": z, "target": target, "mask": mask}, ctx)
    torch.testing.assert_close(value, F.smooth_l1_loss(loss.decoder(z)[0, :2], target[0, :2]))
    value.backward()
    assert target.grad is None  # the target is detached


def test_simsiam_stops_gradient_through_the_target_branch():
    torch.manual_seed(0)
    loss = _loss("simsiam", {"a": vector(6), "b": vector(6)}, hidden=3)
    a = torch.randn(4, 6, requires_grad=True)
    b = torch.randn(4, 6)
    loss({"a": a, "b": b}, Context()).backward()
    full_grad = a.grad.clone()
    # the gradient reaching `a` is exactly that of the term where `a` is online (q(p(a)))
    a.grad = None
    online = 0.5 * negative_cosine(loss.predictor(loss.projector(a)), loss.projector(b).detach())
    online.backward()
    torch.testing.assert_close(full_grad, a.grad)
    # and the term where `a` is the target gives it none
    a.grad = None
    target_side = 0.5 * negative_cosine(loss.predictor(loss.projector(b)), loss.projector(a).detach())
    assert target_side.grad_fn is not None
    target_side.backward()
    assert a.grad is None


def test_simsiam_projector_and_predictor_follow_the_paper():
    loss = _loss("simsiam", {"a": vector(4), "b": vector(4)})
    assert loss.predictor[0].in_features == 4 and loss.predictor[0].out_features == 2  # hidden = D // 2
    assert loss.predictor[0].bias is None and not loss.projector[1].affine


# -- the incomplete view -------------------------------------------------------------------

def test_temporal_mask_keeps_special_text_tokens():
    bp = composer.load_blueprint(MAIN)
    ids = torch.tensor([[101, 2000, 2001, 102, 0, 0], [101, 2002, 2003, 2004, 2005, 102]])
    batch = {"text": ids, "text_mask": ids != 0, "audio": torch.randn(2, 4, 5), "vision": torch.randn(2, 3, 20)}
    out = temporal_mask(batch, bp, 1.0, torch.Generator().manual_seed(0), unk_token=100)
    assert out["text"].tolist() == [[101, 100, 100, 102, 0, 0], [101, 100, 100, 100, 100, 102]]
    assert out["view_masks"]["text"].tolist() == [[False, True, True, False, False, False], [False, True, True, True, True, False]]
    assert out["audio"].abs().sum() == 0 and out["view_masks"]["audio"].all()


# -- the shipped blueprint -------------------------------------------------------------------

def test_blueprint_sizes_match_table9():
    bp = composer.load_blueprint(MAIN)
    with torch.device("meta"):
        model = composer.compile_blueprint(bp)
    counts = model.parameter_counts()
    model_params = sum(v for k, v in counts.items() if not k.startswith("losses."))  # Table 9 excludes DLFR nets
    assert counts["text_enc"] == 109_482_240  # BERT-base with pooler: the paper's 109.5M
    assert counts["emt"] == SUB_MPU_GEGLU_128 + ATTN_POOL_384
    assert abs(model_params / 1e6 - 110.5) / 110.5 < 0.01
    unshared = model_params + 17 * SUB_MPU_GEGLU_128 + 2 * ATTN_POOL_384
    assert abs(unshared / 1e6 - 116.4) / 116.4 < 0.01


def tiny_blueprint(overrides=()):
    d = 8
    ov = [
        "modalities.text.length=7", "modalities.text.vocab=160", "modalities.audio.length=9", "modalities.vision.length=6",
        "blocks.text_enc.hidden_size=8", "blocks.text_enc.num_layers=1", "blocks.text_enc.num_heads=2",
        "blocks.text_enc.intermediate_size=16", "blocks.text_enc.vocab_size=160",
        "blocks.audio_enc.hidden=4", "blocks.vision_enc.hidden=4", "blocks.emt.layers=2", "blocks.emt.heads=2",
        "blocks.head.hidden=[8]",
    ]
    ov += [f"blocks.{b}.out={d}" for b in ("text_proj", "text_utt", "audio_proj", "audio_utt", "vision_proj", "vision_utt")]
    return composer.load_blueprint(MAIN, ov + list(overrides))


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    bp = tiny_blueprint()
    return bp, composer.compile_blueprint(bp)


def test_training_steps_with_both_views(tiny):
    bp, model = tiny
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    names = {"task", "recon_text", "recon_audio", "recon_vision", "attr_text", "attr_audio", "attr_vision", "attr_global", "attr_task"}
    before = model.emt.units[0].ffn.fc1.weight.detach().clone()
    for step in range(2):
        batches = make_views(model.example_inputs(4, seed=step), bp, gen)
        assert set(batches) == {"main", "incomplete"}
        outputs = {view: model(batch) for view, batch in batches.items()}
        total, parts = model.compute_loss(outputs, batches)
        assert set(parts) == names and torch.isfinite(total)
        opt.zero_grad()
        total.backward()
        for i, module in enumerate(model.losses):  # the restoration networks learn too
            for p in module.parameters():
                assert p.grad is not None, f"losses.{i} got no gradient"
        opt.step()
    assert not torch.equal(before, model.emt.units[0].ffn.fc1.weight)


def test_zero_weight_restoration_losses_leave_the_task_losses():
    bp = tiny_blueprint([f"losses.{i}.weight=0" for i in range(1, 8)])
    model = composer.compile_blueprint(bp)
    batches = make_views(model.example_inputs(3), bp, torch.Generator().manual_seed(1))
    total, parts = model.compute_loss({v: model(b) for v, b in batches.items()}, batches)
    torch.testing.assert_close(total.detach(), parts["task"] + parts["attr_task"])


@pytest.mark.parametrize("rate", [0.0, 0.5, 1.0])
def test_model_predicts_under_any_missing_rate(tiny, rate):
    bp, model = tiny
    model.eval()
    batch = model.example_inputs(3)
    masked = temporal_mask(batch, bp, rate, torch.Generator().manual_seed(2))
    with torch.no_grad():
        pred = model(masked)["prediction"]
    assert pred.shape == (3, 1) and torch.isfinite(pred).all()
    if rate == 1.0:
        assert masked["view_masks"]["audio"].sum() == batch["audio_lengths"].sum()


@pytest.mark.parametrize("strategy", ["oall", "ooll"])
def test_blueprint_switches_strategy_without_rewiring(strategy):
    bp = tiny_blueprint([f"blocks.emt.strategy={strategy}", "blocks.emt.share_layers=false"])
    model = composer.compile_blueprint(bp).eval()
    with torch.no_grad():
        out = model(model.example_inputs(2))
    assert out["values"]["emt.global"].shape == (2, 3 * 8) and out["prediction"].shape == (2, 1)


@pytest.mark.parametrize("name,dataset", [("emt_dlfr.yaml", "mosei"), ("emt_dlfr.yaml", "sims"), ("variants/emt_dlfr_complete.yaml", None)])
def test_datasets_and_variants_validate(name, dataset):
    bp = composer.load_blueprint(BLUEPRINTS / name, dataset=dataset)
    assert bp.blocks["emt"].strategy == "oagl"
    if dataset == "sims":  # Table 3: d = 32, L = 4, λ1 = λ2 = 0.5, bert-base-chinese
        assert bp.blocks["text_proj"].out == 32 and bp.blocks["emt"].layers == 4 and bp.loss_groups["lambda1"] == 0.5
        assert bp.modalities["text"].vocab == 21128 and bp.task.label_range == (-1.0, 1.0)
    if name.endswith("emt_dlfr_complete.yaml"):
        assert not bp.training.views and [loss.type for loss in bp.losses] == ["l1"]


def test_authors_preset_has_the_authors_widths_and_110468146_parameters():
    import composer

    bp = composer.load_blueprint(Path(__file__).parents[1] / "blueprints/variants/emt_dlfr_authors.yaml")
    model = composer.compile_blueprint(bp)
    assert model.parameter_summary()["model"] == 110_468_146  # Table 9: 110.5M
    assert bp.training.monitor.metric == "loss"  # the authors select on the incomplete view's total loss
    groups = {tuple(g.blocks): (g.lr, g.weight_decay) for g in bp.training.param_groups}
    assert groups[("vision_enc", "vision_out")] == (1.0e-4, 1.0e-3)


def test_mpu_block_is_the_unit_emt_is_built_from():
    from composer.blocks._base import Context
    from composer.registry import get_block
    from composer.blocks.mpu import PromotionUnit
    from composer.spec import sequence
    from composer.testing import make_config

    specs = {"target": sequence(5, 8), "source": sequence(7, 8)}
    block = get_block("mpu").impl(make_config("mpu", {"heads": 2, "ffn": "geglu"}, list(specs)), specs).eval()
    unit = PromotionUnit(8, 2, ffn="geglu").eval()
    unit.load_state_dict(block.unit.state_dict())
    x, c = torch.randn(2, 5, 8), torch.randn(2, 7, 8)
    torch.testing.assert_close(block({"target": x, "source": c}, Context()), unit(x, c))
    assert sum(p.numel() for p in block.parameters()) == 8 * 8 + 2 * (4 * 64 + 8) + (3 * 4 * 64 + 2 * 4 * 8 + 8)


def test_simsiam_without_projector_predictor_and_stop_gradient_is_the_plain_negative_cosine():
    from composer.blocks._base import Context
    from composer.spec import vector
    from composer.losses.dlfr import SimSiamConfig, SimSiamLoss

    config = SimSiamConfig(a="x", b="y", projector=False, predictor=False, stop_gradient=False)
    loss = SimSiamLoss(config, {"a": vector(5), "b": vector(5)})
    assert sum(p.numel() for p in loss.parameters()) == 0
    a, b = torch.randn(4, 5, requires_grad=True), torch.randn(4, 5, requires_grad=True)
    value = loss({"a": a, "b": b}, Context(batch={}))
    assert torch.allclose(value, -torch.nn.functional.cosine_similarity(a, b).mean())
    value.backward()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0  # gradient through both sides


@pytest.mark.parametrize("strategy", ["oagl", "oall"])
def test_serial_update_promotes_the_global_side_with_the_promoted_locals(strategy):
    from composer.blocks._base import Context
    from composer.blocks.fusion.emt import EMT
    from composer.spec import sequence as seq, vector as vec
    from composer.testing import make_config

    ins = {"a": seq("T_a", 8), "b": seq("T_b", 8)} | ({"a_utt": vec(8), "b_utt": vec(8)} if strategy == "oagl" else {})
    x = {"a": torch.randn(2, 5, 8), "b": torch.randn(2, 4, 8), "a_utt": torch.randn(2, 8), "b_utt": torch.randn(2, 8)}
    x = {k: v for k, v in x.items() if k in ins}

    def pair(layers):
        fields = {"strategy": strategy, "layers": layers, "heads": 2, "positions": False}
        parallel = EMT(make_config("emt", fields, list(ins)), ins).eval()
        serial = EMT(make_config("emt", {**fields, "update": "serial"}, list(ins)), ins).eval()
        serial.load_state_dict(parallel.state_dict())
        with torch.no_grad():
            return serial, parallel(x, Context()), serial(x, Context())

    _, p, s = pair(2)
    assert not torch.allclose(p["a"], s["a"])  # from layer 2 on, the locals meet another global side
    serial, p, s = pair(1)
    assert torch.allclose(p["a"], s["a"])  # layer 1 promotes the locals alike
    if strategy == "oagl":  # by hand: G_m from the promoted H_m, then the pool
        with torch.no_grad():
            context = torch.stack([x["a_utt"], x["b_utt"]], dim=1)
            promoted = [serial.unit(0, m, 0)(x[k], context, None, None) for m, k in enumerate(("a", "b"))]
            candidates = [serial.unit(0, m, 1)(context, h, None, None) for m, h in enumerate(promoted)]
            expected = serial.pools[serial.pool_grid[0][0]](torch.stack(candidates, dim=1)).flatten(1)
        assert torch.allclose(s["global"], expected, atol=1e-6) and not torch.allclose(p["global"], s["global"])
    with pytest.raises(Exception, match="ooll"):
        composer.load_blueprint({"blueprint": 1, "name": "x", "modalities": {"a": {"features": 8, "length": 4}, "b": {"features": 8, "length": 4}},
                                 "blocks": {"emt": {"type": "emt", "in": {"a": "a", "b": "b"}, "strategy": "ooll", "heads": 2, "update": "serial"}}})
