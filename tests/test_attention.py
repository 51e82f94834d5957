"""The fused attention path (issue: performance): equal to nn.MultiheadAttention with the same
weights, head dims padded to a multiple of 8 with the original scale, one cached mask."""

import pytest
import torch
from torch import nn

from composer.layers.attention import Attention, attend_mask, future_allowed
from composer.layers.mult import MulTEncoder, future_mask, key_padding


@pytest.mark.parametrize("dim,heads", [(30, 5), (50, 10), (16, 2), (40, 5)])
@pytest.mark.parametrize("causal", [False, True])
def test_attention_equals_multihead_attention_with_the_same_weights(dim, heads, causal):
    torch.manual_seed(0)
    ours = Attention(dim, heads)
    torch.manual_seed(0)
    reference = nn.MultiheadAttention(dim, heads, batch_first=True)
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), reference.state_dict().values()))  # same init
    assert list(ours.state_dict()) == list(reference.state_dict())
    q, kv = torch.randn(3, 7, dim), torch.randn(3, 9, dim)
    valid = torch.arange(9)[None] < torch.tensor([9, 5, 2])[:, None]
    pad = key_padding(valid)
    got = ours(q, kv, kv, attend_mask(7, 9, q.device, causal=causal, key_padding=pad))
    want, _ = reference(q, kv, kv, key_padding_mask=pad, attn_mask=future_mask(7, 9) if causal else None, need_weights=False)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    self_got = ours(q, q, q)
    self_want, _ = reference(q, q, q, need_weights=False)
    torch.testing.assert_close(self_got, self_want, atol=1e-5, rtol=1e-5)


def test_head_dims_are_padded_to_a_multiple_of_eight_keeping_the_scale():
    attn = Attention(30, 5)  # head dim 6
    assert attn.head_dim == 6 and attn.padded_head_dim == 8
    q = torch.randn(2, 4, 30)
    heads = attn._split(torch.nn.functional.linear(q, attn.in_proj_weight, attn.in_proj_bias), 3)
    assert heads[0].shape[-1] == 8 and (heads[0][..., 6:] == 0).all()
    scores = heads[0] @ heads[1].transpose(-1, -2) / 6 ** 0.5  # the unpadded 1/sqrt(6)
    manual = (scores.softmax(-1) @ heads[2])[..., :6].transpose(1, 2).flatten(2)
    torch.testing.assert_close(attn(q, q, q), attn.out_proj(manual), atol=1e-6, rtol=1e-6)


def test_the_future_triangle_is_built_once_per_shape():
    a = future_allowed(5, 7, torch.device("cpu"))
    assert future_allowed(5, 7, torch.device("cpu")) is a
    assert torch.equal(~a, future_mask(5, 7))


def test_an_encoder_builds_one_mask_for_all_its_layers(monkeypatch):
    import composer.layers.mult as mult

    calls = []
    real = mult.attend_mask
    monkeypatch.setattr(mult, "attend_mask", lambda *a, **k: calls.append(1) or real(*a, **k))
    encoder = MulTEncoder(16, 2, 4, causal=True).eval()
    encoder(torch.randn(2, 5, 16), torch.randn(2, 6, 16), key_padding_mask=torch.zeros(2, 6, dtype=torch.bool))
    assert len(calls) == 1
