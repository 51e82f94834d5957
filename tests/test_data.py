"""Synthetic data, standard feature pickles and the split interface."""

import pickle

import numpy as np
import pytest
import torch

import composer
from composer.data import load_data, load_standard_pickle, synthetic_data
from composer.errors import DataError

MODS = {"text": {"features": 8, "length": 10}, "audio": {"features": 4, "length": 10}, "vision": {"features": 6, "length": 10}}



def _bp(blocks=None, modalities=None, task=None, loss="l1", **training):
    mods = modalities or MODS
    if blocks is None:
        blocks = {f"{m}_enc": {"type": "gru", "in": m, "hidden": 16, "output": "last"} for m in mods}
        blocks["fusion"] = {"type": "concat", "in": [f"{m}_enc" for m in mods]}
        blocks["head"] = {"type": "mlp", "in": "fusion", "hidden": [16], "out": 1}
    data = {"blueprint": 1, "name": "t", "modalities": mods, "blocks": blocks, "losses": [{"type": loss, "pred": "head"}], "training": training}
    if task:
        data["task"] = task
    return composer.load_blueprint(data)


def test_synthetic_data_is_deterministic_for_a_seed():
    bp = _bp(data={"samples": {"train": 20, "valid": 5, "test": 5}})
    a, b = synthetic_data(bp), synthetic_data(bp)
    c = synthetic_data(bp, seed=1)
    for key, value in a["train"].tensors.items():
        assert torch.equal(value, b["train"].tensors[key])
    assert not torch.equal(a["train"].tensors["audio"], c["train"].tensors["audio"])


def test_synthetic_shapes_follow_the_modalities():
    mods = {"text": {"kind": "tokens", "length": 12, "vocab": 200}, "audio": {"features": 3, "length": 7}, "face": {"kind": "vector", "features": 5}}
    blocks = {"pool": {"type": "concat", "in": ["face", "face"]}, "head": {"type": "mlp", "in": "pool", "out": 1}}
    bp = _bp(blocks=blocks, modalities=mods, data={"samples": {"train": 16, "valid": 4, "test": 4}})
    t = synthetic_data(bp)["train"].tensors
    assert t["audio"].shape == (16, 7, 3) and t["audio_lengths"].shape == (16,)
    assert t["face"].shape == (16, 5)
    ids, mask = t["text"], t["text_mask"]
    assert ids.shape == (16, 12) and ids.dtype == torch.long and (ids < 200).all()
    assert (ids[:, 0] == 101).all()
    last = mask.sum(1) - 1
    assert (ids[torch.arange(16), last] == 102).all()
    assert (ids[~mask] == 0).all()
    # padded steps of float sequences are zero
    pad = torch.arange(7)[None] >= t["audio_lengths"][:, None]
    assert (t["audio"][pad] == 0).all()


def test_synthetic_regression_labels_lie_in_range_and_classification_is_balanced():
    bp = _bp(data={"samples": {"train": 300, "valid": 10, "test": 10}})
    y = synthetic_data(bp)["train"].tensors["label"]
    assert y.min() >= -3 and y.max() <= 3 and (y == 0).any()
    bpc = _bp(task={"kind": "classification", "outputs": 3}, loss="ce", data={"samples": {"train": 300, "valid": 30, "test": 30}},
              blocks={"a": {"type": "gru", "in": "audio", "hidden": 4, "output": "last"}, "head": {"type": "mlp", "in": "a", "out": 3}})
    counts = torch.bincount(synthetic_data(bpc)["train"].tensors["label"], minlength=3)
    assert counts.min() > 70


def test_fusion_beats_unimodal_on_synthetic_data(tmp_path):
    common = dict(lr=3e-3, batch_size=32, epochs=8, data={"samples": {"train": 400, "valid": 100, "test": 200}})
    uni_blocks = {"text_enc": {"type": "gru", "in": "text", "hidden": 16, "output": "last"}, "head": {"type": "mlp", "in": "text_enc", "hidden": [16], "out": 1}}
    uni = composer.train(_bp(blocks=uni_blocks, **common), out=tmp_path / "uni", progress=False).summary["best"]["test"]
    fused = composer.train(_bp(**common), out=tmp_path / "fused", progress=False).summary["best"]["test"]
    # measured: unimodal corr 0.38 / mae 1.23, fusion corr 0.71 / mae 0.72
    assert fused["corr"] > uni["corr"] + 0.15
    assert fused["mae"] < uni["mae"] - 0.2


def _standard_file(path, n=6, t_a=9, aligned=False, bad=True):
    rng = np.random.default_rng(0)
    data = {}
    for split in ("train", "valid", "test"):
        audio = rng.standard_normal((n, t_a, 4)).astype(np.float32)
        if bad and split == "train":
            audio[0, 0, 0] = np.nan
            audio[1, 2, 3] = -np.inf
            audio[2, 1, 1] = np.inf
        ids = rng.integers(1000, 2000, size=(n, 10))
        ids[:, 0] = 101
        ids[:, -1] = 102
        data[split] = {
            "text": rng.standard_normal((n, 10, 8)).astype(np.float32),
            "text_bert": np.stack([ids, np.ones_like(ids), np.zeros_like(ids)], axis=1).astype(np.float64),
            "audio": audio,
            "vision": rng.standard_normal((n, 10 if aligned else 11, 6)).astype(np.float32),
            "audio_lengths": rng.integers(1, t_a + 1, size=n),
            "vision_lengths": np.full(n, 11),
            "regression_labels": rng.uniform(-3, 3, size=(n, 1)).astype(np.float32),
            "id": np.array([f"{split}_{i}" for i in range(n)], dtype=object),
        }
    with open(path, "wb") as f:
        pickle.dump(data, f)
    return path


def test_standard_pickle_cleans_non_finite_values_and_counts_them(tmp_path):
    bp = _bp()
    data = load_standard_pickle(bp, _standard_file(tmp_path / "mosi.pkl"))
    audio = data["train"].tensors["audio"]
    assert torch.isfinite(audio).all() and audio[0, 0, 0] == 0
    assert any("cleaned 3 non-finite" in note and "train.audio: 3" in note for note in data.notes)
    assert data["train"].tensors["label"].shape == (6,)
    assert data["test"].ids[0] == "test_0"


def test_standard_pickle_reads_text_bert_for_token_modalities(tmp_path):
    mods = {"text": {"kind": "tokens", "length": 10}, "audio": {"features": 4, "length": 9}}
    blocks = {"a": {"type": "gru", "in": "audio", "hidden": 4, "output": "last"}, "head": {"type": "mlp", "in": "a", "out": 1}}
    bp = _bp(blocks=blocks, modalities=mods)
    t = load_standard_pickle(bp, _standard_file(tmp_path / "x.pkl"))["valid"].tensors
    assert t["text"].dtype == torch.long and t["text"].shape == (6, 10)
    assert t["text_mask"].dtype == torch.bool and t["text_segment"].shape == (6, 10)


def test_standard_pickle_shape_mismatch_names_key_and_expected_shape(tmp_path):
    mods = {**MODS, "audio": {"features": 5, "length": 10}}
    with pytest.raises(DataError, match=r"key 'audio' has shape \(6, 9, 4\).*expects \(N, T, 5\)"):
        load_standard_pickle(_bp(modalities=mods), _standard_file(tmp_path / "x.pkl"))


def test_aligned_modalities_must_share_their_length(tmp_path):
    mods = {"text": {"features": 8, "time": "T"}, "vision": {"features": 6, "time": "T"}}
    blocks = {"a": {"type": "gru", "in": "text", "hidden": 4, "output": "last"}, "b": {"type": "gru", "in": "vision", "hidden": 4, "output": "last"},
              "f": {"type": "concat", "in": ["a", "b"]}, "head": {"type": "mlp", "in": "f", "out": 1}}
    with pytest.raises(DataError, match="share the time axis"):
        load_standard_pickle(_bp(blocks=blocks, modalities=mods), _standard_file(tmp_path / "x.pkl"))
    ok = load_standard_pickle(_bp(blocks=blocks, modalities=mods), _standard_file(tmp_path / "y.pkl", aligned=True))
    assert ok["train"].tensors["vision"].shape[1] == 10


def test_pickle_loader_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"train": Evil()}))
    with pytest.raises(DataError, match="refusing"):
        load_standard_pickle(_bp(), path)


def test_load_data_accepts_arrays_and_dataset_objects():
    bp = _bp()
    n = 4
    arrays = {s: {"text": np.zeros((n, 5, 8), np.float32), "audio": np.zeros((n, 5, 4), np.float32), "vision": np.zeros((n, 5, 6), np.float32),
                  "label": np.zeros(n, np.float32)} for s in ("train", "valid", "test")}
    data = load_data(bp, arrays)
    assert data.sizes() == {"train": 4, "valid": 4, "test": 4}

    class MyLayout:
        def load(self, blueprint):
            return load_data(blueprint, arrays)

    assert load_data(bp, MyLayout()).sizes()["test"] == 4
    arrays["train"]["audio"] = np.zeros((n, 5, 3), np.float32)
    with pytest.raises(DataError, match=r"'audio' has shape \(4, 5, 3\), expected \(N, T, 4\)"):
        load_data(bp, arrays)


def test_data_inspect_lists_splits_keys_shapes_and_non_finite_counts(tmp_path, capsys):
    from composer.cli import main
    from composer.data.inspect import inspect_file

    split = {"text": np.zeros((4, 5, 6), "float32"), "audio": np.full((4, 5, 3), np.nan, "float32"),
             "audio_lengths": np.array([5, 3, 2, 1]), "regression_labels": np.linspace(-3, 3, 4), "id": np.array(list("abcd"))}
    path = tmp_path / "d.pkl"
    path.write_bytes(pickle.dumps({"train": split, "valid": split, "test": split}))
    info = inspect_file(path)
    train = info["splits"]["train"]
    assert train["samples"] == [4] and train["keys"]["audio"]["non_finite"] == 60
    assert train["keys"]["audio_lengths"]["min"] == 1 and train["keys"]["text"]["shape"] == (4, 5, 6)
    assert main(["data", "inspect", str(path)]) == 0
    assert "audio_lengths" in capsys.readouterr().out
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(b"cos\nsystem\n(S'true'\ntR.")
    assert main(["data", "inspect", str(evil)]) == 1


def test_normalize_uses_train_statistics_over_valid_steps_and_leaves_padding():
    from composer.data import load_data

    bp = _bp(data={"samples": {"train": 64, "valid": 16, "test": 16}, "normalize": ["audio"]})
    raw = load_data(_bp(data={"samples": {"train": 64, "valid": 16, "test": 16}}))
    done = load_data(bp)
    train = done["train"].tensors
    valid = torch.arange(train["audio"].shape[1])[None] < train["audio_lengths"][:, None]
    frames = train["audio"][valid]
    assert torch.allclose(frames.mean(0), torch.zeros(frames.shape[1]), atol=1e-4)
    assert torch.allclose(frames.std(0, unbiased=False), torch.ones(frames.shape[1]), atol=1e-3)
    assert (train["audio"][~valid] == 0).all() and torch.equal(train["text"], raw["train"].tensors["text"])
    test_valid = torch.arange(done["test"].tensors["audio"].shape[1])[None] < done["test"].tensors["audio_lengths"][:, None]
    mean = raw["train"].tensors["audio"][valid].double().mean(0)
    std = raw["train"].tensors["audio"][valid].double().std(0, unbiased=False)
    expected = ((raw["test"].tensors["audio"].double() - mean) / (std + 1e-6))[test_valid].float()
    assert torch.allclose(done["test"].tensors["audio"][test_valid], expected, atol=1e-5)  # the train split's statistics
    again = load_data(bp, done)
    assert torch.equal(again["train"].tensors["audio"], train["audio"])  # normalised once
    with pytest.raises(composer.BlueprintError, match=r"training.data.normalize\[0\]: 'face' is not a sequence or vector modality"):
        _bp(data={"normalize": ["face"]})  # refused by the check, before any data is read


def test_synthetic_data_does_not_depend_on_the_order_the_splits_are_written_in():
    a = synthetic_data(_bp(data={"samples": {"train": 8, "valid": 4, "test": 4}}))
    b = synthetic_data(_bp(data={"samples": {"test": 4, "train": 8, "valid": 4}}))
    assert all(torch.equal(a[s].tensors["audio"], b[s].tensors["audio"]) for s in ("train", "valid", "test"))
