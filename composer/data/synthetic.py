"""The built-in synthetic dataset: planted unimodal, cross-modal and incongruent signals.

Every sample has latent factors, and the label is a known function of them that no single
modality determines:

* ``u[m] ~ N(0, 1)`` — a *unimodal cue* per modality (think "how positive the words are");
* ``b[m] ∈ {-1, +1}`` — an *interaction bit* per modality; the label depends on the
  products ``b[i]·b[j]`` (bimodal) and ``Π b[m]`` (trimodal), which a model can only
  recover by looking at several modalities together;
* ``c ∈ {0, 1}`` (probability ``incongruent``) — an *incongruence flag* shown only by the
  last modality; when set, the first modality's cue counts with the opposite sign
  (the words say one thing, the tone the other).

``raw = Σ_m s_m u[m] / √M + 0.6 · Σ_{i<j} b[i] b[j] / √P + 0.4 · Π_m b[m]``
with ``s_0 = 1 - 2c``, ``s_m = 1`` otherwise, P the number of modality pairs (the trimodal
term exists only for M >= 3). Regression labels are ``3·tanh(0.6·raw)`` rounded
to multiples of 0.2 (MOSI-like, with some exact zeros) and rescaled to the task's
``label_range``; classification uses equal-frequency bins of ``raw``; multilabel and several
regression outputs use one random mixture of the same terms per output.

Observations, shaped by the blueprint's modalities:

* ``sequence (T, D)``: Gaussian noise of scale ``noise`` on the valid steps (lengths drawn in
  ``[T/2, T]``, shared by aligned modalities, zero padding); the cue ``u[m]`` along a fixed
  random direction (strength 0.5 on every valid step, 1.0 inside one random window), the
  bit along a second direction (its own window), the flag (last modality) along a third;
* ``tokens (T)``: ``[CLS] words... [SEP] [PAD]...``; filler words plus a cue word chosen by
  ``u[m]`` quantised to 7 levels, a bit word and a flag word at random positions;
* ``vector (D)`` and ``map (C, *S)``: the same three directions plus noise (a map spreads
  them over a random spatial bump).

Extra labels (``training.data.extra_labels``) come as ``label_<name>``: a modality's name gives
that modality's unimodal label, its cue ``u[m]`` through the same mapping (what CH-SIMS'
per-modality annotations are); another name a random mixture of the terms.

The directions and word ids depend on the seed only, so all splits share one "world"; the
whole set is generated in one vectorised pass (about 0.1 s for 768 MOSI-shaped samples).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from composer.data.base import DataSplits, TensorSplit, check_label_range
from composer.data.budget import Budget, synthetic_bytes
from composer.errors import DataError

__all__ = ["synthetic_data", "latent_factors", "synthetic_bytes"]

UNI_WEIGHT, BI_WEIGHT, TRI_WEIGHT = 1.0, 0.6, 0.4
CLS, SEP, PAD = 101, 102, 0


def _directions(rng: np.random.Generator, width: int, count: int = 3) -> np.ndarray:
    """``count`` unit vectors of ``width`` (orthonormal when ``width >= count``)."""
    a = rng.standard_normal((width, count))
    if width >= count:
        q, _ = np.linalg.qr(a)
        return q.T.astype(np.float32)
    return (a / np.linalg.norm(a, axis=0, keepdims=True)).T.astype(np.float32)


def latent_factors(rng: np.random.Generator, n: int, m: int, incongruent: float) -> dict[str, np.ndarray]:
    """Latents ``u (n, m)``, ``b (n, m)``, ``c (n,)`` and the terms of the raw label."""
    u = rng.standard_normal((n, m)).astype(np.float32)
    b = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=(n, m))
    c = (rng.random(n) < incongruent).astype(np.float32)
    sign = np.ones((n, m), dtype=np.float32)
    sign[:, 0] = 1.0 - 2.0 * c
    uni = (sign * u).sum(1) / math.sqrt(m)
    pairs = list(itertools.combinations(range(m), 2))
    bi = sum(b[:, i] * b[:, j] for i, j in pairs) / math.sqrt(len(pairs)) if pairs else np.zeros(n, np.float32)
    tri = np.prod(b, axis=1) if m >= 3 else np.zeros(n, np.float32)
    return {"u": u, "b": b, "c": c, "signed_u": sign * u, "uni": uni, "bi": bi, "tri": tri}


def _raw_labels(rng: np.random.Generator, lat: dict[str, np.ndarray], outputs: int) -> np.ndarray:
    """``(n, outputs)`` raw scores; output 0 is the documented mixture, others random mixtures."""
    first = UNI_WEIGHT * lat["uni"] + BI_WEIGHT * lat["bi"] + TRI_WEIGHT * lat["tri"]
    cols = [first]
    m = lat["u"].shape[1]
    for _ in range(outputs - 1):
        w = rng.standard_normal(m)
        w /= np.linalg.norm(w)
        s_bi, s_tri = rng.choice([-1.0, 1.0], size=2)
        cols.append(UNI_WEIGHT * lat["signed_u"] @ w + BI_WEIGHT * s_bi * lat["bi"] + TRI_WEIGHT * s_tri * lat["tri"])
    return np.stack(cols, axis=1).astype(np.float32)


def _extra_raw(rng: np.random.Generator, lat: dict[str, np.ndarray], index: int | None, outputs: int) -> np.ndarray:
    """``(n, outputs)`` raw scores of an extra label: for a modality (``index``), what that modality
    alone shows, its cue ``u[index]`` (a unimodal annotation, as CH-SIMS' ``regression_labels_T``);
    otherwise, and for further outputs, a random mixture of the cues and the interaction terms."""
    cols = [lat["u"][:, index]] if index is not None else []
    m = lat["u"].shape[1]
    while len(cols) < outputs:
        w = rng.standard_normal(m)
        w /= np.linalg.norm(w)
        cols.append(UNI_WEIGHT * lat["signed_u"] @ w + BI_WEIGHT * rng.choice([-1.0, 1.0]) * lat["bi"])
    return np.stack(cols, axis=1).astype(np.float32)


def _windows(rng: np.random.Generator, lengths: np.ndarray, t: int) -> np.ndarray:
    """``(n, t)`` bool: one random window of about a third of each sample's valid length."""
    width = np.maximum(1, lengths // 3)
    start = (rng.random(len(lengths)) * (lengths - width + 1)).astype(np.int64)
    steps = np.arange(t)[None, :]
    return (steps >= start[:, None]) & (steps < (start + width)[:, None])


def _envelope(rng: np.random.Generator, lengths: np.ndarray, t: int) -> np.ndarray:
    """``(n, t)`` signal strength: 0.5 on every step, 1.0 inside one random window."""
    return 0.5 + 0.5 * _windows(rng, lengths, t)


def _sequence(rng, world, lat, m, flag_modality, lengths, t, noise) -> np.ndarray:
    n = len(lengths)
    d = world["dirs"]  # (3, D)
    x = noise * rng.standard_normal((n, t, d.shape[1])).astype(np.float32)
    x += (lat["u"][:, m, None] * _envelope(rng, lengths, t))[..., None] * d[0]
    x += (lat["b"][:, m, None] * _envelope(rng, lengths, t))[..., None] * d[1]
    if flag_modality:
        x += (lat["c"][:, None] * _envelope(rng, lengths, t))[..., None] * d[2]
    valid = np.arange(t)[None, :] < lengths[:, None]  # (n, t)
    return x * valid[..., None]


def _tokens(rng, world, lat, m, flag_modality, lengths, t) -> np.ndarray:
    n = len(lengths)
    ids = rng.integers(world["filler_low"], world["filler_high"], size=(n, t))
    level = np.clip(np.round(lat["u"][:, m] * 1.5), -3, 3).astype(np.int64) + 3  # 7 cue levels
    words = [world["cue_words"][level], world["bit_words"][(lat["b"][:, m] > 0).astype(np.int64)]]
    if flag_modality:
        words.append(np.where(lat["c"] > 0, world["flag_word"], ids[:, 1]))
    for word in words:  # each at a random position among the inner tokens 1..L-2
        pos = 1 + (rng.random(n) * np.maximum(1, lengths - 2)).astype(np.int64)
        ids[np.arange(n), pos] = word
    ids[:, 0] = CLS
    ids[np.arange(n), lengths - 1] = SEP
    ids[np.arange(t)[None, :] >= lengths[:, None]] = PAD
    return ids


def _vector_or_map(rng, world, lat, m, flag_modality, shape, noise) -> np.ndarray:
    n = lat["u"].shape[0]
    d = world["dirs"]  # (3, C)
    signal = lat["u"][:, m, None] * d[0] + lat["b"][:, m, None] * d[1]
    if flag_modality:
        signal = signal + lat["c"][:, None] * d[2]
    spatial = shape[1:]
    if spatial:
        grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in spatial], indexing="ij")
        centre = rng.uniform(-0.5, 0.5, size=(n, len(spatial)))
        dist2 = sum((g[None] - centre[(slice(None),) + (i,) + (None,) * len(spatial)]) ** 2 for i, g in enumerate(grids))
        bump = np.exp(-dist2 / 0.5)  # (n, *S)
        signal = signal.reshape(n, -1, *([1] * len(spatial))) * bump[:, None]
    return (signal + noise * rng.standard_normal((n, *shape))).astype(np.float32)


def _world(rng: np.random.Generator, cfg) -> dict:
    if cfg.kind != "tokens":
        return {"dirs": _directions(rng, cfg.features)}
    low = 1000 if cfg.vocab > 2000 else 103 if cfg.vocab > 140 else 3
    if cfg.vocab - low < 20:
        raise DataError(f"synthetic tokens need a vocabulary of at least {low + 20} ids, got vocab {cfg.vocab}")
    special = rng.choice(np.arange(low, cfg.vocab), size=10, replace=False)
    return {
        "cue_words": special[:7],
        "bit_words": special[7:9],
        "flag_word": special[9],
        "filler_low": low,
        "filler_high": cfg.vocab,
    }


def synthetic_data(
    blueprint,
    *,
    samples: dict[str, int] | None = None,
    noise: float | None = None,
    seed: int | None = None,
    incongruent: float | None = None,
) -> DataSplits:
    """Generate train/valid/test splits for the blueprint's modalities and task.

    Defaults come from ``blueprint.training.data`` (``samples``, ``noise``, ``seed``,
    ``incongruent``). The same arguments always give the same tensors.
    """
    cfg = blueprint.training.data
    given = dict(samples or cfg.samples)
    samples = {s: given[s] for s in ("train", "valid", "test") if s in given}  # split order fixed: a YAML file and a dict give the same data
    noise = cfg.noise if noise is None else noise
    seed = cfg.seed if seed is None else seed
    incongruent = cfg.incongruent if incongruent is None else incongruent
    names = list(blueprint.modalities)
    check_label_range(blueprint.task)
    total = sum(samples.values())
    Budget(source="synthetic data").take(synthetic_bytes(blueprint, total), f"{total:,} samples of the blueprint's modalities (their `length` and `features`)")
    world_rng = np.random.default_rng([seed, 0])
    worlds = {name: _world(world_rng, m) for name, m in blueprint.modalities.items()}
    task = blueprint.task

    rng = np.random.default_rng([seed, 1])
    lat = latent_factors(rng, total, len(names), incongruent)
    raw = _raw_labels(world_rng, lat, task.outputs if task.kind != "classification" else 1)
    tensors: dict[str, np.ndarray] = {"label": _labels(task, raw)}
    extra_rng = np.random.default_rng([seed, 2])  # its own stream: the other tensors stay as they were
    for label_name in cfg.extra_labels:
        index = names.index(label_name) if label_name in names else None
        tensors[f"label_{label_name}"] = _labels(task, _extra_raw(extra_rng, lat, index, raw.shape[1]))

    lengths_by_time: dict[str, np.ndarray] = {}
    for i, (name, m) in enumerate(blueprint.modalities.items()):
        flag = i == len(names) - 1
        if m.kind in ("sequence", "tokens"):
            symbol = m.time_symbol(name)
            if symbol not in lengths_by_time:
                low = max(3 if m.kind == "tokens" else 1, math.ceil(m.length / 2))
                lengths_by_time[symbol] = rng.integers(min(low, m.length), m.length + 1, size=total)
            lengths = lengths_by_time[symbol]
            if m.kind == "sequence":
                tensors[name] = _sequence(rng, worlds[name], lat, i, flag, lengths, m.length, noise)
                tensors[f"{name}_lengths"] = lengths.astype(np.int64)
            else:
                ids = _tokens(rng, worlds[name], lat, i, flag, lengths, m.length)
                tensors[name] = ids.astype(np.int64)
                tensors[f"{name}_mask"] = ids != PAD
                tensors[f"{name}_segment"] = np.zeros_like(ids)
        else:
            shape = (m.features, *m.spatial)
            tensors[name] = _vector_or_map(rng, worlds[name], lat, i, flag, shape, noise)

    splits, start = {}, 0
    for split, n in samples.items():
        part = {k: torch.from_numpy(np.ascontiguousarray(v[start : start + n])) for k, v in tensors.items()}
        splits[split] = TensorSplit(part, [f"synthetic_{split}_{j}" for j in range(n)])
        start += n
    note = f"synthetic data (seed {seed}, noise {noise}, incongruent {incongruent}): " + ", ".join(f"{k} {v}" for k, v in samples.items())
    return DataSplits(splits, notes=[note], source="synthetic")


def _labels(task, raw: np.ndarray) -> np.ndarray:
    """Task labels from raw scores ``(n, K)``."""
    if task.kind == "classification":
        edges = np.quantile(raw[:, 0], np.linspace(0, 1, task.outputs + 1)[1:-1])
        return np.searchsorted(edges, raw[:, 0]).astype(np.int64)
    if task.kind == "multilabel":
        return (raw > np.median(raw, axis=0, keepdims=True)).astype(np.float32)
    y = np.round(3.0 * np.tanh(0.6 * raw) / 0.2) * 0.2  # [-3, 3] in steps of 0.2
    y = np.clip(y, -3.0, 3.0)
    low, high = task.label_range
    y = (low + (y + 3.0) / 6.0 * (high - low)).astype(np.float32)
    return y[:, 0] if task.outputs == 1 else y
