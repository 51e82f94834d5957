"""MSAF (Su et al.): split attention fusion, BlockDropout, time segments, the sentiment
blueprint, placements, and the module-size figures of §5.5."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import composer
from composer.blocks._base import Context
from composer.registry import get_block
from composer.errors import BlueprintError, DataError
from composer.spec import feature_map, sequence, vector
from composer.profiling import count_flops
from composer.testing import make_config

ROOT = Path(__file__).resolve().parents[1]
BLUEPRINT = ROOT / "blueprints" / "msaf.yaml"
PLACEMENTS = ROOT / "blueprints" / "msaf_placements.yaml"



def build(fields: dict, specs: dict, seed: int = 0):
    torch.manual_seed(seed)
    return get_block("msaf").impl(make_config("msaf", fields, list(specs)), specs)


def msaf_parameters(channels: int, reduction: int, widths: list[int], segments: int = 1) -> int:
    """Eqs. 2-3 per segment: Linear(C → C') + BatchNorm(C') + one Linear(C' → C) per block."""
    reduced = channels // reduction
    blocks = sum(math.ceil(w / channels) for w in widths)
    return segments * (channels * reduced + reduced + 2 * reduced + blocks * (reduced * channels + channels))


def reference_msaf(block, xs: list[torch.Tensor], lam: float) -> list[torch.Tensor]:
    """Eqs. 1-6 written literally for channels-first maps: pad the channel dim, split, join, highlight."""
    C = block.config.channels
    core = block.segment[0]
    padded = [F.pad(x, (0,) * (2 * (x.dim() - 2)) + (0, -x.shape[1] % C)) for x in xs]  # pad channels (dim 1)
    blocks = [list(p.split(C, dim=1)) for p in padded]  # B_m^i: (B, C, *S)
    descriptors = [torch.stack(bs).sum(0).flatten(2).mean(-1) for bs in blocks]  # eq. 1: D_m (B, C)
    joint = core.join(torch.stack(descriptors).sum(0))  # eq. 2: Z (B, C')
    weights = core.highlight.weight.split(C, dim=0)  # W_m^i (C, C'), in block order
    biases = core.highlight.bias.split(C, dim=0)
    logits = torch.stack([joint @ w.T + b for w, b in zip(weights, biases)])  # eq. 3: (N, B, C)
    attention = logits.softmax(dim=0)  # eq. 4
    outs, i = [], 0
    for x, bs in zip(xs, blocks):
        scaled = []
        for b in bs:
            a = attention[i].reshape(attention.shape[1:] + (1,) * (b.dim() - 2))
            scaled.append((lam + (1 - lam) * a) * b)  # eq. 5
            i += 1
        outs.append(torch.cat(scaled, dim=1)[:, : x.shape[1]])  # eq. 6, padding removed
    return outs


# -- the operator ------------------------------------------------------------------------


def test_attention_sums_to_one_across_blocks_per_channel():
    block = build({"channels": 4, "reduction": 2}, {"a": sequence(6, 8), "b": sequence(6, 12)}).eval()
    block({"a": torch.randn(3, 6, 8), "b": torch.randn(3, 6, 12)}, Context())
    assert block.attention.shape == (3, 1, 2 + 3, 4)  # (B, q, N, C)
    torch.testing.assert_close(block.attention.sum(dim=2), torch.ones(3, 1, 4))
    per_modality = block.attention_by_modality()
    assert per_modality["a"].shape == (3, 1, 2, 4) and per_modality["b"].shape == (3, 1, 3, 4)


def test_lowest_attention_one_makes_the_block_the_identity():
    block = build({"channels": 4, "lowest_attention": 1.0, "block_dropout": 0.3, "reduction": 2},
                  {"a": sequence(5, 6), "b": feature_map(10, 2, 3)}).train()
    x = {"a": torch.randn(3, 5, 6), "b": torch.randn(3, 10, 2, 3)}
    out = block(x, Context())
    assert all(torch.equal(out[k], x[k]) for k in x)


def test_matches_literal_equations_with_channel_padding():
    # C = 4 divides neither 6 nor 10: the last block of each modality is zero-padded in channels
    specs = {"video": feature_map(10, 3, 2), "audio": feature_map(6, 5)}
    block = build({"channels": 4, "reduction": 2, "lowest_attention": 0.25}, specs).eval()
    for p in block.parameters():  # non-trivial BatchNorm statistics are part of eq. 2 too
        p.data.normal_()
    block.segment[0].join[1].running_mean.normal_()
    xs = [torch.randn(3, 10, 3, 2), torch.randn(3, 6, 5)]
    out = block(dict(zip(specs, xs)), Context())
    expected = reference_msaf(block, xs, lam=0.25)
    assert block.block_counts == [3, 2]
    for port, want in zip(specs, expected):
        torch.testing.assert_close(out[port], want)


def test_outputs_keep_the_input_shapes_and_ports():
    specs = {"text": sequence("T", 7), "video": feature_map(9, 4, 2), "pose": vector(5)}
    block = build({"channels": 3, "reduction": 1}, specs)
    x = {"text": torch.randn(2, 4, 7), "video": torch.randn(2, 9, 4, 2), "pose": torch.randn(2, 5)}
    out = block(x, Context())
    assert list(out) == list(specs)
    assert {k: v.shape for k, v in out.items()} == {k: v.shape for k, v in x.items()}


def test_eval_mode_is_deterministic():
    block = build({"channels": 4, "block_dropout": 0.5, "segments": 2, "reduction": 2},
                  {"a": sequence(8, 8), "b": sequence(8, 4)})
    x = {"a": torch.randn(4, 8, 8), "b": torch.randn(4, 8, 4)}
    block.train()
    block(x, Context())  # update BatchNorm statistics once
    block.eval()
    first, second = block(x, Context()), block(x, Context())
    assert all(torch.equal(first[k], second[k]) for k in x)
    block.train()
    torch.manual_seed(1)
    noisy = block(x, Context())
    assert not all(torch.equal(noisy[k], first[k]) for k in x)  # training draws BlockDropout masks


@pytest.mark.parametrize("style,scale", [("paper", 1 / 0.5), ("authors", 1 / 0.5**2)])
def test_block_dropout_drops_whole_blocks_scaled_by_keep_probability(style, scale):
    specs = {"a": vector(8), "b": vector(4)}
    block = build({"channels": 4, "reduction": 2, "block_dropout": 0.5, "block_dropout_style": style}, specs).train()
    x = {"a": torch.ones(64, 8), "b": torch.ones(64, 4)}
    torch.manual_seed(3)
    out = block(x, Context())
    factors = torch.cat([out["a"], out["b"]], dim=1).view(64, 3, 4)  # (B, N, C): with x = 1 the output is the factor
    ratio = factors / block.attention[:, 0]  # mask per (sample, block)
    assert torch.allclose(ratio, ratio[..., :1].expand_as(ratio))  # one value per block, all channels
    values = ratio[..., 0]
    assert torch.all((values == 0) | torch.isclose(values, torch.tensor(scale)))
    dropped = (values == 0).float().mean().item()
    assert 0.35 < dropped < 0.65  # p = 0.5 over 192 (sample, block) draws


@pytest.mark.parametrize("lam", [0.0, 0.5])
def test_authors_block_dropout_is_the_paper_block_run_on_block_dropped_features(monkeypatch, lam):
    """anita-hu/MSAF (MSAF.py): the mask multiplies the feature blocks before the join and the
    output again; with λ > 0 a dropped block is zero (the audit's check, 2e-7 there)."""
    import composer.blocks.fusion.msaf as msaf

    specs = {"a": vector(8), "b": vector(4)}
    fields = {"channels": 4, "reduction": 2, "block_dropout": 0.5, "lowest_attention": lam}
    authors = build({**fields, "block_dropout_style": "authors"}, specs).train()
    plain = build({**fields, "block_dropout": 0.0}, specs).train()
    plain.load_state_dict(authors.state_dict())
    mask = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0]]).view(3, 1, 3, 1) / 0.5  # (B, q, N, 1)
    monkeypatch.setattr(msaf, "block_dropout_mask", lambda shape, p, like: mask)
    x = {"a": torch.randn(3, 8), "b": torch.randn(3, 4)}
    got = authors(x, Context())
    per_channel = {"a": mask[:, 0, :2, 0].repeat_interleave(4, dim=1), "b": mask[:, 0, 2:, 0].repeat_interleave(4, dim=1)}
    dropped_inputs = {k: v * per_channel[k] for k, v in x.items()}  # blocks dropped before the join
    expected = {k: v * per_channel[k] for k, v in plain(dropped_inputs, Context()).items()}  # and once more after
    for k in x:
        torch.testing.assert_close(got[k], expected[k])
    assert (got["a"][0, 4:] == 0).all()  # a dropped block is zero, whatever λ


def test_gradients_reach_every_modality_and_every_parameter():
    specs = {"text": sequence("T", 8), "audio": sequence("T", 5), "video": feature_map(6, 3, 3)}
    block = build({"channels": 4, "reduction": 2}, specs).train()
    x = {"text": torch.randn(3, 6, 8), "audio": torch.randn(3, 6, 5), "video": torch.randn(3, 6, 3, 3)}
    for t in x.values():
        t.requires_grad_(True)
    out = block(x, Context())
    (out["text"].pow(2).sum() + out["audio"].sum() + out["video"].sum()).backward()
    for port, t in x.items():
        assert t.grad is not None and t.grad.abs().sum() > 0, port
    # the text loss alone reaches the other modalities through the shared attention
    x2 = {k: v.detach().clone().requires_grad_(True) for k, v in x.items()}
    block(x2, Context())["text"].pow(2).sum().backward()
    assert x2["audio"].grad.abs().sum() > 0 and x2["video"].grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in block.parameters())


def test_too_large_reduction_is_a_config_error():
    with pytest.raises(Exception, match="reduction 8 leaves no unit for channels 4"):
        make_config("msaf", {"channels": 4, "reduction": 8}, ["a", "b"])


def test_segments_need_a_time_axis():
    from composer.blocks._base import SpecError

    with pytest.raises(SpecError, match="segments: 2 cuts a time axis"):
        build({"channels": 2, "reduction": 1, "segments": 2}, {"a": vector(4), "b": sequence("T", 4)})
    with pytest.raises(SpecError, match="fewer than segments"):
        build({"channels": 2, "reduction": 1, "segments": 5}, {"a": sequence(3, 4), "b": sequence(3, 4)})


# -- the RNN variant (§3.2) ----------------------------------------------------------------


def test_segment_lengths_put_the_remainder_in_the_last_segment():
    from composer.blocks.fusion.msaf import segment_ids

    assert segment_ids(12, 5).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 4, 4]
    assert segment_ids(50, 5).bincount().tolist() == [10] * 5
    with pytest.raises(DataError, match="cannot be cut into 5 segments"):
        segment_ids(4, 5)


def test_q_segments_give_q_independent_blocks():
    specs = {"a": sequence("T", 8), "b": sequence("T", 6)}
    fields = {"channels": 4, "reduction": 2}
    single = build(fields, specs)
    block = build({**fields, "segments": 3}, specs).eval()
    assert len(block.segment) == 3
    n_params = sum(p.numel() for p in block.parameters())
    assert n_params == 3 * sum(p.numel() for p in single.parameters()) == msaf_parameters(4, 2, [8, 6], segments=3)
    weights = [core.highlight.weight for core in block.segment]
    assert len({w.data_ptr() for w in weights}) == 3 and not torch.equal(weights[0], weights[1])
    # T = 7, q = 3: segments [0, 2), [2, 4), [4, 7); changing steps of segment 1 changes only its attention
    x = {"a": torch.randn(2, 7, 8), "b": torch.randn(2, 7, 6)}
    out = block(x, Context())
    before = block.attention.clone()
    x["b"][:, 2:4] += 3.0
    after_out = block(x, Context())
    assert block.attention.shape == (2, 3, 2 + 2, 4)
    assert torch.equal(block.attention[:, [0, 2]], before[:, [0, 2]])
    assert not torch.allclose(block.attention[:, 1], before[:, 1])
    for k in ("a",):  # modality a is untouched; its output moves only inside segment 1
        assert torch.equal(after_out[k][:, [0, 1, 4, 5, 6]], out[k][:, [0, 1, 4, 5, 6]])
        assert not torch.allclose(after_out[k][:, 2:4], out[k][:, 2:4])


def test_sequence_and_channels_first_layouts_agree():
    fields = {"channels": 4, "reduction": 2, "segments": 3}
    seq = build(fields, {"a": sequence(9, 8), "b": sequence(9, 6)}).eval()
    maps = build(fields, {"a": feature_map(8, 9), "b": feature_map(6, 9)}).eval()
    maps.load_state_dict(seq.state_dict())
    x = {"a": torch.randn(2, 9, 8), "b": torch.randn(2, 9, 6)}
    out_seq = seq(x, Context())
    out_map = maps({k: v.transpose(1, 2) for k, v in x.items()}, Context())  # (B, T, D) -> (B, C, T)
    for k in x:
        torch.testing.assert_close(out_map[k].transpose(1, 2), out_seq[k])


def test_padded_steps_do_not_change_the_valid_outputs():
    specs = {"a": sequence("T", 8), "b": sequence("T", 4)}
    block = build({"channels": 4, "reduction": 2, "segments": 2}, specs).eval()
    mask = torch.tensor([[True] * 10, [True] * 6 + [False] * 4])  # second sample: 4 padded steps
    ctx = Context(masks={"T": mask})
    x = {"a": torch.randn(2, 10, 8), "b": torch.randn(2, 10, 4)}
    before = block(x, ctx)
    x["a"][1, 6:] = 100.0
    x["b"][1, 6:] = -50.0
    after = block(x, ctx)
    for k in x:
        torch.testing.assert_close(after[k][mask], before[k][mask])
    unmasked = block(x, Context())
    assert not torch.allclose(unmasked["a"][mask], before["a"][mask])  # without the mask they would count


def test_with_lengths_each_sample_segments_its_valid_steps():
    """§3.2 with lengths: a sample padded to 10 steps is cut like the same 6 steps unpadded."""
    from composer.blocks.fusion.msaf import valid_segment_ids

    assert valid_segment_ids(torch.tensor([12, 6]), 12, 5).tolist() == [
        [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 4, 4], [0, 1, 2, 3, 4, 4, 4, 4, 4, 4, 4, 4]]
    specs = {"a": sequence("T", 8), "b": sequence("T", 4)}
    block = build({"channels": 4, "reduction": 2, "segments": 3}, specs).eval()
    x = {"a": torch.randn(1, 6, 8), "b": torch.randn(1, 6, 4)}
    alone = block(x, Context())  # 6 steps, no padding
    padded = {k: torch.cat([v, torch.randn(1, 4, v.shape[2])], dim=1) for k, v in x.items()}
    ctx = Context(masks={"T": torch.tensor([[True] * 6 + [False] * 4])})
    out = block(padded, ctx)
    for k in x:
        torch.testing.assert_close(out[k][:, :6], alone[k])


def test_without_lengths_segments_follow_the_axis_as_the_authors_do():
    specs = {"a": sequence(10, 8), "b": sequence(10, 4)}
    block = build({"channels": 4, "reduction": 2, "segments": 3}, specs).eval()
    x = {"a": torch.randn(2, 10, 8), "b": torch.randn(2, 10, 4)}
    out = block(x, Context())
    # by hand: segments [0, 3), [3, 6), [6, 10) of the whole axis
    bounds = [(0, 3), (3, 6), (6, 10)]
    C = 4
    for k_seg, (lo, hi) in enumerate(bounds):
        means = {k: v[:, lo:hi].mean(1) for k, v in x.items()}  # (B, C_m)
        descriptor = means["a"][:, :4] + means["a"][:, 4:] + means["b"]
        attention = block.segment[k_seg](descriptor)  # (B, 3 blocks, C)
        torch.testing.assert_close(out["a"][:, lo:hi], x["a"][:, lo:hi] * attention[:, :2].flatten(1)[:, None])
        torch.testing.assert_close(out["b"][:, lo:hi], x["b"][:, lo:hi] * attention[:, 2][:, None])


# -- the sentiment network (§4.2) and placements (§5.4) -----------------------------------


def test_sentiment_blueprint_has_the_papers_parameter_count():
    model = composer.compile_blueprint(composer.load_blueprint(BLUEPRINT))
    assert sum(p.numel() for p in model.parameters()) == 689_337
    counts = model.parameter_counts()
    assert counts["msaf"] == msaf_parameters(16, 2, [32, 64, 128], segments=5) == 10_840
    assert counts["head"] == 224 + 1


def test_sentiment_blueprint_trains_one_step():
    short = [f"modalities.{m}.length=10" for m in ("visual", "audio", "text")]  # aligned: all three
    model = composer.compile_blueprint(composer.load_blueprint(BLUEPRINT, overrides=short))
    batch = model.example_inputs(4)
    out = model(batch)
    assert out["prediction"].shape == (4, 1)
    loss, parts = model.compute_loss({"main": out}, {"main": batch})
    loss.backward()
    assert model.msaf.segment[4].highlight.weight.grad is not None
    assert model.msaf.attention.shape == (4, 5, 14, 16)


def _in_use(model) -> int:
    """Parameters of the enabled blocks (a disabled block keeps unused weights in the model)."""
    counts = model.parameter_counts()
    return sum(counts[n.id] for n in model.plan.nodes if n.enabled)


@pytest.fixture(scope="module")
def lstms_only() -> int:
    """Parameters in use with every MSAF position off: nine LSTMs and the head."""
    off = [f"blocks.msaf_{i}.enabled=false" for i in (1, 2, 3)]
    return _in_use(composer.compile_blueprint(composer.load_blueprint(PLACEMENTS, overrides=off)))


@pytest.mark.parametrize(
    "overrides,on",
    [
        ([], {"msaf_2", "msaf_3"}),
        (["blocks.msaf_2.enabled=false"], {"msaf_3"}),
        (["blocks.msaf_1.enabled=true", "blocks.msaf_3.enabled=false"], {"msaf_1", "msaf_2"}),
        (["blocks.msaf_2.enabled=false", "blocks.msaf_3.enabled=false"], set()),
    ],
)
def test_placements_switch_by_yaml(overrides, on, lstms_only):
    short = [f"modalities.{m}.length=8" for m in ("visual", "audio", "text")]
    model = composer.compile_blueprint(composer.load_blueprint(PLACEMENTS, overrides=overrides + short)).eval()
    sizes = {"msaf_1": 10_840, "msaf_2": 10_840, "msaf_3": msaf_parameters(16, 2, [32, 64, 128])}
    assert _in_use(model) == lstms_only + sum(sizes[k] for k in on)
    values = model(model.example_inputs(2))["values"]
    feeds = {"msaf_1": "_l1", "msaf_2": "_l2", "msaf_3": "_l3"}
    for position, suffix in feeds.items():
        for modality in ("visual", "audio", "text"):
            same = torch.equal(values[f"{position}.{modality}"], values[f"{modality}{suffix}"])
            assert same == (position not in on), (position, modality)


def test_placement_search_space_lists_the_enabled_flags():
    bp = composer.load_blueprint(PLACEMENTS)
    assert set(bp.search.space) == {f"blocks.msaf_{i}.enabled" for i in (1, 2, 3)}
    assert all(entry.choice == [True, False] for entry in bp.search.space.values())


def test_late_position_cannot_use_time_segments():
    with pytest.raises(BlueprintError, match="segments"):
        composer.load_blueprint(PLACEMENTS, overrides=["blocks.msaf_3.segments=5"])


# -- module size (§5.5) -----------------------------------------------------------------


def test_module_size_matches_section_5_5():
    # two modalities of 1024 channels, C = min(C_m)/2 = 512, r = 4: the maximum of Fig. 5, ≈330K
    specs = {"a": feature_map(1024, 3, 4, 4), "b": feature_map(1024, 3, 4, 4)}
    block = build({"channels": 512, "reduction": 4}, specs)
    n = sum(p.numel() for p in block.parameters())
    assert n == msaf_parameters(512, 4, [1024, 1024]) == 330_112
    assert abs(n - 330_000) / 330_000 < 0.001


@pytest.mark.parametrize("channels,paper,unit", [(64, 10.4, 1e3), (1024, 2.6, 1e6)])
def test_flops_match_section_5_5(channels, paper, unit):
    # paper's input (4, #Channels, 3, 128, 128); the counted matrix products do not depend on
    # the spatial size (the join averages first), so a smaller map gives the same count.
    specs = {"a": feature_map(channels, 3, 4, 4), "b": feature_map(channels, 3, 4, 4)}
    block = build({"channels": channels // 2, "reduction": 4}, specs).eval()
    x = {k: torch.randn(4, channels, 3, 4, 4) for k in specs}
    flops = count_flops(lambda: block(x, Context()))
    C, reduced, blocks = channels // 2, channels // 8, 4
    assert flops == 2 * 4 * (C * reduced + reduced * blocks * C)  # 2 FLOPs per multiply-accumulate
    batchnorm = 2 * 4 * reduced  # affine BatchNorm: a multiply and an add per element
    assert round((flops + 2 * batchnorm) / unit, 1) == paper  # 10,368 -> "10.4K"; 2,623,488 -> "2.6M"
    assert abs(flops / unit - paper) / paper < 0.02  # the counter alone: 10,240 (-1.5 %), 2,621,440 (+0.8 %)
