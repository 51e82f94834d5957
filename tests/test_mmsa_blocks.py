"""The zoo's blocks in training mode: ``batch_norm`` equals ``nn.BatchNorm1d`` where MMSA applies it
(statistics, running statistics, gradients) and skips padding by default; ``low_rank_fusion`` by
hand against TFN's full weight tensor (LMF eq. 3 = eq. 6)."""

from __future__ import annotations

import torch
from torch import nn

from composer.blocks._base import Context
from composer.blocks.batch_norm import BatchNorm
from composer.blocks.fusion.low_rank import LowRankFusion
from composer.configs.batch_norm import BatchNormConfig
from composer.configs.fusion.low_rank import LowRankFusionConfig
from composer.spec import sequence, vector


def _norm(fields: dict, spec) -> BatchNorm:
    return BatchNorm(BatchNormConfig(inputs="x", **fields), {"in": spec}).train()


def test_batch_norm_over_steps_with_padding_included_is_mmsa_batchnorm1d_of_the_length():
    x = torch.randn(5, 6, 3, requires_grad=True)
    ours, theirs = _norm({"over": "steps", "steps": 6, "padding": "include"}, sequence("T", 3)), nn.BatchNorm1d(6).train()
    mask = torch.arange(6)[None] < torch.tensor([6, 4, 6, 2, 5])[:, None]
    y = ours({"in": x}, Context(masks={"T": mask}))
    torch.testing.assert_close(y, theirs(x), atol=1e-6, rtol=0)
    torch.testing.assert_close(ours.norm.running_var, theirs.running_var, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours.norm.running_mean, theirs.running_mean, atol=1e-6, rtol=0)
    (g1,) = torch.autograd.grad(y.square().sum(), x)
    (g2,) = torch.autograd.grad(theirs(x).square().sum(), x)
    torch.testing.assert_close(g1, g2, atol=1e-5, rtol=1e-5)


def test_batch_norm_over_features_skips_padded_steps_by_default():
    x = torch.randn(3, 5, 4)
    mask = torch.arange(5)[None] < torch.tensor([5, 2, 3])[:, None]
    ours, plain = _norm({}, sequence("T", 4)), nn.BatchNorm1d(4).train()
    y = ours({"in": x}, Context(masks={"T": mask}))
    torch.testing.assert_close(y[mask], plain(x[mask]), atol=1e-6, rtol=0)  # statistics of the valid steps only
    noisy = torch.where(mask[..., None], x, 100 * torch.randn_like(x))
    ours2 = _norm({}, sequence("T", 4))
    torch.testing.assert_close(ours2({"in": noisy}, Context(masks={"T": mask}))[mask], y[mask], atol=1e-6, rtol=0)
    included = _norm({"padding": "include"}, sequence("T", 4))({"in": noisy}, Context(masks={"T": mask}))
    assert (included[mask] - y[mask]).abs().max() > 1e-2  # negative control: padding read


def test_low_rank_fusion_equals_tfn_weight_tensor_of_its_factors():
    ports = {"a": vector(2), "b": vector(3)}
    block = LowRankFusion(LowRankFusionConfig(inputs=["x", "y"], rank=3, out=2), ports)
    za, zb = torch.randn(4, 2), torch.randn(4, 3)
    ones = torch.ones(4, 1)
    fa, fb = block.factors["a"], block.factors["b"]  # (r, D+1, out)
    weight = torch.einsum("r,rio,rjo->ijo", block.weights[0], fa, fb)  # eq. 3: Σ_i λ_i w_a^(i) ⊗ w_b^(i)
    z = torch.einsum("bi,bj->bij", torch.cat([za, ones], 1), torch.cat([zb, ones], 1))  # eq. 2: [z_a; 1] ⊗ [z_b; 1]
    expected = torch.einsum("bij,ijo->bo", z, weight) + block.bias  # eq. 1: W · Z + b
    torch.testing.assert_close(block({"a": za, "b": zb}, Context()), expected, atol=1e-5, rtol=1e-5)
