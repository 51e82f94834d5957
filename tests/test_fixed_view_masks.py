"""``resample: split``: a view's masks fixed once per split from per-modality seeds, as EMT-DLFR's
data loader makes them (data/load_data.py: ``np.random.seed(s)``, one uniform draw over the
split's ``(N, T)``, a step kept where the draw exceeds the rate, padding never dropped)."""

import numpy as np
import pytest
import torch

from composer import load_blueprint
from composer.data.base import TensorSplit
from composer.errors import ComposerError
from composer.train.views import make_views

N, T, SEEDS = 9, 6, {"a": 111, "b": 1111}


def blueprint(resample="split", seeds=SEEDS, rate=0.4):
    view = {"type": "temporal_mask", "rate": rate, "resample": resample}
    if seeds is not None:
        view["seeds"] = seeds
    return load_blueprint({
        "blueprint": 1, "name": "fixed_masks", "task": {"kind": "regression", "outputs": 1},
        "modalities": {"a": {"features": 3, "length": T}, "b": {"features": 2, "length": T}},
        "blocks": {"pa": {"type": "pool", "in": "a", "mode": "mean"}, "pb": {"type": "pool", "in": "b", "mode": "mean"},
                   "cat": {"type": "concat", "in": ["pa", "pb"]}, "head": {"type": "mlp", "in": "cat", "out": 1}},
        "losses": [{"type": "l1", "pred": "head"}, {"type": "l1", "pred": "incomplete:head"}],
        "training": {"views": {"incomplete": view}},
    })


def split() -> TensorSplit:
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([6, 3, 5, 1, 6, 4, 2, 6, 5])
    return TensorSplit({
        "a": torch.randn(N, T, 3, generator=g), "a_lengths": lengths,
        "b": torch.randn(N, T, 2, generator=g), "b_lengths": lengths.flip(0),
        "label": torch.randn(N),
    })


def the_authors_masks(seed: int, lengths: torch.Tensor, rate: float) -> torch.Tensor:
    """EMT-DLFR's draw, written from its description: kept = (U > rate) * valid, U = uniform (N, T)."""
    valid = (np.arange(T)[None, :] < lengths.numpy()[:, None]).astype(float)
    np.random.seed(seed)
    kept = (np.random.uniform(size=valid.shape) > rate) * valid
    return torch.from_numpy(valid - kept).bool()  # dropped


def masks_of_an_epoch(bp, data: TensorSplit, order_seed: int, view_seed: int) -> dict[str, torch.Tensor]:
    """Every sample's masks, gathered from shuffled batches of 4."""
    out = {m: torch.zeros(N, T, dtype=torch.bool) for m in ("a", "b")}
    gen = torch.Generator().manual_seed(view_seed)
    for batch in data.batches(4, shuffle=True, generator=torch.Generator().manual_seed(order_seed)):
        masks = make_views(batch, bp, gen)["incomplete"]["view_masks"]
        for m in out:
            out[m][batch["index"]] = masks[m]
    return out


def test_split_masks_are_the_authors_masks():
    data = split()
    masks = masks_of_an_epoch(blueprint(), data, 0, 0)
    assert torch.equal(masks["a"], the_authors_masks(111, data.tensors["a_lengths"], 0.4))
    assert torch.equal(masks["b"], the_authors_masks(1111, data.tensors["b_lengths"], 0.4))
    assert masks["a"].any() and not masks["a"].all()


def test_split_masks_do_not_change_with_epochs_or_batch_order():
    data, bp = split(), blueprint()
    first, second = masks_of_an_epoch(bp, data, 0, 0), masks_of_an_epoch(bp, data, 1, 7)
    assert all(torch.equal(first[m], second[m]) for m in first)
    per_batch = blueprint(resample="batch", seeds=None)
    a, b = masks_of_an_epoch(per_batch, data, 0, 0), masks_of_an_epoch(per_batch, data, 1, 7)
    assert not torch.equal(a["a"], b["a"])  # the default draws again: the control


def test_split_masks_are_nested_across_rates():
    data = split()
    low, high = masks_of_an_epoch(blueprint(rate=0.2), data, 0, 0), masks_of_an_epoch(blueprint(rate=0.6), data, 0, 0)
    for m in low:
        assert torch.equal(low[m] & high[m], low[m]) and high[m].sum() > low[m].sum()


def test_masked_steps_are_zero_and_padding_is_never_dropped():
    data, bp = split(), blueprint(rate=0.5)
    batch = data.batch(torch.arange(N))
    view = make_views(batch, bp, torch.Generator())["incomplete"]
    valid = torch.arange(T)[None, :] < data.tensors["a_lengths"][:, None]
    assert not (view["view_masks"]["a"] & ~valid).any()
    assert (view["a"][view["view_masks"]["a"]] == 0).all()


def test_seeds_need_split_resampling_and_name_modalities():
    with pytest.raises(ComposerError, match="resample: split"):
        blueprint(resample="batch")
    with pytest.raises(ComposerError, match="'c'"):
        blueprint(seeds={"c": 3})
