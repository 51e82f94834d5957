"""Shared checks of the equivalence tests: a Composer model against its plain-PyTorch reference
(tests/reference/), and a template against the built-in block it rebuilds."""

import torch

from composer.testing import padded_batch


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def assert_equivalent(model, reference_for, batch: dict | None = None):
    """The reference of ``model`` (same weights) has as many parameters, equal predictions on a
    padded batch (1e-5) and equal gradients of every parameter; returns the reference.

    The reference names each Composer parameter's twin in ``composer_names``; ``batch``
    defaults to :func:`composer.testing.padded_batch`."""
    reference = reference_for(model).eval()
    assert n_params(reference) == n_params(model)
    batch = batch if batch is not None else padded_batch(model, 3)
    ours, theirs = model(batch)["prediction"], reference(batch)
    assert ours.shape == theirs.shape == (len(ours), model.blueprint.task.outputs)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    ours.square().mean().backward()
    theirs.square().mean().backward()
    twins = dict(reference.named_parameters())
    for name, param in model.named_parameters():
        twin = twins[reference.composer_names[name]]
        assert param.grad is not None and param.grad.abs().sum() > 0, name
        torch.testing.assert_close(param.grad, twin.grad, atol=1e-5, rtol=1e-4, msg=lambda m: f"{name}: {m}")
    return reference


def max_value_difference(a: dict, b: dict, pairs: list[tuple[str, str]], atol: float) -> float:
    """Max |difference| over ``(key in a, key in b)`` pairs of model values; asserts each is below ``atol``."""
    worst = 0.0
    for key_a, key_b in pairs:
        assert a[key_a].shape == b[key_b].shape, (key_a, key_b)
        diff = (a[key_a] - b[key_b]).abs().max().item()
        assert diff < atol, f"{key_a} vs {key_b}: {diff:.2e}"
        worst = max(worst, diff)
    return worst
