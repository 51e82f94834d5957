"""MulT: the transformer layer against a hand-written reference, and the MulT blueprint size."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import composer
from composer.layers.mult import MulTEncoder, future_mask
from composer.layers.positional import sinusoidal_positions

ROOT = Path(__file__).resolve().parents[1]



def reference_layer(layer, x, source, heads):
    """One MulT layer written out from the public code (pre-LN, shared LayerNorm, ReLU FFN)."""
    d = x.shape[-1]
    ln0, ln1 = layer.norms
    q_in, kv_in = ln0(x), ln0(source)
    w_q, w_k, w_v = layer.attn.in_proj_weight.chunk(3)
    b_q, b_k, b_v = layer.attn.in_proj_bias.chunk(3)
    q = (q_in @ w_q.T + b_q) * (d // heads) ** -0.5
    k, v = kv_in @ w_k.T + b_k, kv_in @ w_v.T + b_v
    split = lambda t: t.view(t.shape[0], t.shape[1], heads, d // heads).transpose(1, 2)  # (B, h, T, d/h)
    scores = split(q) @ split(k).transpose(-1, -2)  # (B, h, Tq, Tk)
    attended = (scores.softmax(-1) @ split(v)).transpose(1, 2).reshape(x.shape)  # (B, Tq, d)
    x = x + layer.attn.out_proj(attended)
    return x + layer.fc2(F.relu(layer.fc1(ln1(x))))


def test_crossmodal_encoder_matches_reference_computation():
    torch.manual_seed(0)
    enc = MulTEncoder(6, 2, 2).eval()
    x, source = torch.randn(2, 3, 6), torch.randn(2, 5, 6)
    embed = lambda t: math.sqrt(6) * t + sinusoidal_positions(t.shape[1], 6)[None]
    h, s = embed(x), embed(source)
    for layer in enc.layers:
        h = reference_layer(layer, h, s, heads=2)  # key/value stay the embedded source
    assert torch.allclose(enc(x, source), enc.norm(h), atol=1e-5)


def test_parameters_per_layer_are_12d2_plus_13d():
    d, layers = 30, 5
    enc = MulTEncoder(d, 5, layers)
    assert sum(p.numel() for p in enc.parameters()) == layers * (12 * d * d + 13 * d) + 2 * d


def test_attention_output_projection_is_xavier_initialised():
    torch.manual_seed(0)
    d = 40
    weight = MulTEncoder(d, 5, 1).layers[0].attn.out_proj.weight
    bound = math.sqrt(6 / (2 * d))
    assert weight.abs().max() <= bound
    assert weight.abs().max() > 0.9 * bound  # not PyTorch's default (bound 1/√d ≈ 0.16 < 0.27)


def test_causal_mask_forbids_future_steps():
    mask = future_mask(3, 3)
    assert mask.tolist() == [[False, True, True], [False, False, True], [False, False, False]]
    enc = MulTEncoder(4, 2, 1, causal=True).eval()
    x = torch.randn(1, 4, 4)
    changed = x.clone()
    changed[0, 3] = 5.0
    assert torch.allclose(enc(x)[0, :3], enc(changed)[0, :3], atol=1e-5)


def test_key_and_value_get_independent_embedding_dropout_in_training():
    torch.manual_seed(0)
    enc = MulTEncoder(4, 1, 1, embed_dropout=0.5)
    calls = []
    original = enc.layers[0].forward

    def spy(x, source=None, mask=None, value=None):
        calls.append((source, value))
        return original(x, source, mask=mask, value=value)

    enc.layers[0].forward = spy
    enc.train()(torch.randn(1, 3, 4), torch.randn(1, 8, 4))
    key, value = calls[-1]
    assert value is not None and not torch.equal(key, value)
    enc.eval()(torch.randn(1, 3, 4), torch.randn(1, 8, 4))
    assert calls[-1][1] is None  # evaluation: one embedded source serves as key and value


def test_mult_blueprint_has_1071211_parameters():
    model = composer.compile_blueprint(composer.load_blueprint(ROOT / "blueprints/mult.yaml"))
    assert sum(p.numel() for p in model.parameters()) == 1_071_211  # Table 2: MulT 1.07M


def test_mult_blueprint_runs_on_a_short_batch():
    model = composer.compile_blueprint(composer.load_blueprint(ROOT / "blueprints/mult.yaml")).eval()
    gen = torch.Generator().manual_seed(0)
    batch = {"text": torch.randn(2, 5, 300, generator=gen), "audio": torch.randn(2, 7, 5, generator=gen),
             "vision": torch.randn(2, 6, 20, generator=gen), "audio_lengths": torch.tensor([7, 4])}
    out = model(batch)
    assert out["prediction"].shape == (2, 1) and torch.isfinite(out["prediction"]).all()
