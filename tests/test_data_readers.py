"""Readers for the data the authors used: the word-aligned MAG/MIB pickle (GLoMo) and
CMU-MultimodalSDK computational sequences (.csd, MSAF).

Every fixture is written here, in tmp_path: small pickles, small HDF5 files and a 20-token
WordPiece vocabulary. The authors' procedures (GLoMo's ``convert_to_features``, the SDK's
``align`` + ``get_tensors``) are re-implemented in a few lines as references.
"""

from __future__ import annotations

import inspect
import json
import pickle

import numpy as np
import pytest
import torch

import composer
from composer.cli import main
from composer.data import load_data
from composer.data.csd import EPSILON
from composer.data.folds import BUILTIN, read_split
from composer.data.inspect import inspect_file
from composer.errors import ComposerError, DataError

try:
    import h5py
except ImportError:  # the optional `sdk` extra
    h5py = None
needs_h5py = pytest.mark.skipif(h5py is None, reason="reading .csd files needs the sdk extra (h5py)")

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "movie", "was", "great", "good", "bad", "not", "really", "it", "##ly", "##s", "!", "plot", "sp", "fun"]
SENTENCES = [["The", "movie", "was", "greatly", "bad"], ["not", "fun", "!"], ["it", "was", "really", "really", "good", "plots", "sp"], ["zzz"], ["great"]]
BERT = {"type": "bert", "in": "text", "init": "random", "hidden_size": 8, "num_layers": 1, "num_heads": 2, "intermediate_size": 16, "vocab_size": 200}


@pytest.fixture
def vocab(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(WORDS) + "\n")
    return path


def _bp(modalities, data, task=None, bert=True, **training):
    enc = {"sequence": {"type": "gru", "hidden": 4, "output": "last"}, "vector": {"type": "mlp", "out": 4}}
    blocks = {f"{m}_enc": {**enc[c.get("kind", "sequence")], "in": m} for m, c in modalities.items() if c.get("kind") != "tokens"}
    if bert:
        blocks["text_bert"] = BERT
    ins = [*blocks] if not bert else [b for b in blocks if b != "text_bert"] + ["text_bert.cls"]
    out = (task or {}).get("outputs", 1)
    blocks["fusion"] = {"type": "concat", "in": ins}
    blocks["head"] = {"type": "mlp", "in": "fusion", "hidden": [8], "out": out}
    loss = "ce" if task and task["kind"] == "classification" else "l1"
    doc = {"blueprint": 1, "name": "readers", "modalities": modalities, "blocks": blocks, "losses": [{"type": loss, "pred": "head"}],
           "training": {"epochs": 1, "batch_size": 4, "data": data, **training}}
    if task:
        doc["task"] = task
    return composer.load_blueprint(doc)


# -- MAG / MIB pickles ----------------------------------------------------------------------
MAG_MODS = {"text": {"kind": "tokens", "length": 8, "vocab": 200}, "audio": {"features": 4, "length": 8}, "vision": {"features": 5, "length": 8}}


def _example(rng, words, name):
    n = len(words)
    visual = rng.standard_normal((n, 5)).astype(np.float32)
    acoustic = rng.standard_normal((n, 4)).astype(np.float32)
    return ((np.array(words), visual, acoustic), np.array([[rng.uniform(-3, 3)]]), name)


def _mag(n=5, seed=0):
    rng = np.random.default_rng(seed)
    return {split: [_example(rng, SENTENCES[i % len(SENTENCES)], f"{split}_vid[{i}]") for i in range(n)] for split in ("train", "dev", "test")}


def _write(path, obj):
    path.write_bytes(pickle.dumps(obj))
    return path


def _bert_tokenizer(vocab):
    from transformers import BertTokenizer

    key = "vocab" if "vocab" in inspect.signature(BertTokenizer.__init__).parameters else "vocab_file"
    return BertTokenizer(**{key: str(vocab)})


def _authors_features(example, tokenizer, max_seq_length):
    """GLoMo's convert_to_features + prepare_bert_input, restated: per-word pieces, rows repeated
    per piece, cut to T-2, [CLS]/[SEP] with zero rows, padded to T."""
    (words, visual, acoustic), _, _ = example
    tokens, inversions = [], []
    for idx, word in enumerate(words):
        pieces = tokenizer.tokenize(str(word))
        tokens += pieces
        inversions += [idx] * len(pieces)
    visual, acoustic = visual[inversions][: max_seq_length - 2], acoustic[inversions][: max_seq_length - 2]
    tokens = ["[CLS]"] + tokens[: max_seq_length - 2] + ["[SEP]"]
    pad = max_seq_length - len(tokens)
    zero = lambda d, k: np.zeros((k, d), np.float32)  # noqa: E731
    visual = np.concatenate([zero(5, 1), visual, zero(5, 1), zero(5, pad)])
    acoustic = np.concatenate([zero(4, 1), acoustic, zero(4, 1), zero(4, pad)])
    ids = tokenizer.convert_tokens_to_ids(tokens) + [0] * pad
    return ids, [1] * len(tokens) + [0] * pad, visual, acoustic


def test_mag_pickle_matches_the_authors_word_piece_alignment(tmp_path, vocab):
    data = _mag()
    path = _write(tmp_path / "mosi.pkl", data)
    bp = _bp(MAG_MODS, {"source": "mag_pickle", "path": str(path), "vocab": str(vocab)})
    out = load_data(bp)
    tok = _bert_tokenizer(vocab)
    t = out["valid"].tensors
    worst = 0.0
    for i, example in enumerate(data["dev"]):
        ids, mask, visual, acoustic = _authors_features(example, tok, 8)
        assert t["text"][i].tolist() == ids and t["text_mask"][i].long().tolist() == mask
        worst = max(worst, float((t["vision"][i] - torch.from_numpy(visual)).abs().max()), float((t["audio"][i] - torch.from_numpy(acoustic)).abs().max()))
        assert int(t["audio_lengths"][i]) == sum(mask) == int(t["vision_lengths"][i])
    assert worst == 0.0
    # "greatly" is two pieces: its visual row is repeated; the 7-word sentence is cut to T - 2 = 6 pieces
    first = t["text"][0].tolist()
    assert first[:8] == [2, 5, 6, 7, 8, 14, 10, 3]
    assert torch.equal(t["vision"][0, 4], t["vision"][0, 5]) and torch.equal(t["vision"][0, 4], torch.from_numpy(data["dev"][0][0][1][3]))
    assert int(t["text_mask"][2].sum()) == 8 and t["text"][2, -1] == 3
    assert out["train"].ids[1] == "train_vid[1]" and t["label"].shape == (5,)
    assert abs(float(t["label"][0]) - float(data["dev"][0][1][0, 0])) < 1e-6


def test_mag_pickle_without_a_text_modality_reads_the_word_rows(tmp_path):
    path = _write(tmp_path / "mosi.pkl", _mag())
    mods = {"audio": {"features": 4, "length": 4}, "vision": {"features": 5, "length": 6}}
    t = load_data(_bp(mods, {"source": "mag_pickle", "path": str(path)}, bert=False))["test"].tensors
    assert t["audio"].shape == (5, 6, 4) and t["audio_lengths"].tolist() == [5, 3, 6, 1, 1]
    raw = _mag()["test"][2][0][2]
    assert torch.equal(t["audio"][2], torch.from_numpy(raw[:6]))


def test_a_pickle_path_is_read_in_whichever_layout_it_holds(tmp_path, vocab):
    path = _write(tmp_path / "mosi.pkl", _mag())
    bp = _bp(MAG_MODS, {"vocab": str(vocab)})
    assert load_data(bp, str(path)).sizes() == {"train": 5, "valid": 5, "test": 5}
    standard = {s: {"text": np.zeros((2, 3, 4), np.float32), "regression_labels": np.zeros(2)} for s in ("train", "valid", "test")}
    spath = _write(tmp_path / "standard.pkl", standard)
    mods = {"text": {"features": 4, "length": 3}}
    assert load_data(_bp(mods, {"source": "pickle", "path": str(spath)}, bert=False)).sizes()["test"] == 2
    with pytest.raises(DataError, match="expected the MAG layout"):
        load_data(_bp(mods, {"source": "mag_pickle", "path": str(spath)}, bert=False))


def _edit(kind):
    data = _mag()
    ex = data["train"][1]
    (words, visual, acoustic), label, seg = ex
    if kind == "flat":
        data["train"][1] = (words, visual, acoustic, label, seg)
    elif kind == "rows":
        data["train"][1] = ((words, visual[:-1], acoustic), label, seg)
    elif kind == "width":
        data["train"][1] = ((words, np.zeros((len(words), 7)), acoustic), label, seg)
    elif kind == "label":
        data["train"][1] = ((words, visual, acoustic), "positive", seg)
    elif kind == "words":
        data["train"][1] = (([1, 2, 3], visual[:3], acoustic[:3]), label, seg)
    elif kind == "split":
        del data["test"]
    elif kind == "labels":
        data["train"][1] = ((words, visual, acoustic), np.array([1.0, 2.0]), seg)
    return data


@pytest.mark.parametrize("kind, message", [
    ("flat", r"\[train\]\[1\]: an example is \(\(words, visual, acoustic\), label, segment\), got a tuple of 5"),
    ("rows", r"\[train\]\[1\]: 'visual' has shape \(2, 5\), expected one row per word: \(3, 5\)"),
    ("width", r"'visual' has 7 features per word, but modality 'vision' of the blueprint expects 5"),
    ("label", r"\[train\]\[1\]: 'label' is not a number"),
    ("words", r"'words' holds a int, expected str"),
    ("split", r"missing split test"),
    ("labels", r"labels have \[1, 2\] values per sample"),
])
def test_malformed_mag_pickles_are_clear_data_errors(tmp_path, vocab, kind, message):
    path = _write(tmp_path / "bad.pkl", _edit(kind))
    with pytest.raises(DataError, match=message):
        load_data(_bp(MAG_MODS, {"source": "mag_pickle", "path": str(path), "vocab": str(vocab)}))


def test_mag_configuration_mistakes_are_clear_data_errors(tmp_path, vocab):
    path = _write(tmp_path / "mosi.pkl", _mag())
    with pytest.raises(DataError, match="set training.data.vocab"):
        load_data(_bp(MAG_MODS, {"source": "mag_pickle", "path": str(path)}))
    bad_vocab = tmp_path / "v.txt"
    bad_vocab.write_text("[PAD]\nthe\n")
    with pytest.raises(DataError, match=r"no \[UNK\], \[CLS\], \[SEP\] token"):
        load_data(_bp(MAG_MODS, {"source": "mag_pickle", "path": str(path), "vocab": str(bad_vocab)}))
    mods = {"audio": {"features": 4, "length": 4}, "face": {"features": 5, "length": 4}}
    with pytest.raises(DataError, match="no field for modality 'face'"):
        load_data(_bp(mods, {"source": "mag_pickle", "path": str(path)}, bert=False))
    small = {**MAG_MODS, "text": {"kind": "tokens", "length": 8, "vocab": 12}}
    with pytest.raises(DataError, match=r"word-piece ids reach 1[4-9].*vocab 12"):
        load_data(_bp(small, {"source": "mag_pickle", "path": str(path), "vocab": str(vocab)}, bert=False))


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_hostile_mag_pickles_are_refused(tmp_path, vocab, monkeypatch):
    data = _mag()
    (words, visual, acoustic), label, seg = data["train"][0]
    data["train"][0] = ((words, visual, acoustic), _Evil(), seg)
    bp = _bp(MAG_MODS, {"vocab": str(vocab)})
    with pytest.raises(DataError, match="builtins.print.*refusing"):
        load_data(bp, str(_write(tmp_path / "evil.pkl", data)))
    with pytest.raises(DataError, match="refusing"):
        inspect_file(_write(tmp_path / "evil2.pkl", data))
    # one example referenced 50,000 times: a 200 kB file that would become 100+ MB of tensors
    monkeypatch.setenv("COMPOSER_MAX_MEMORY", "100MB")
    one = _mag(1)["train"][0]
    bomb = _write(tmp_path / "bomb.pkl", {"train": [one] * 50_000, "dev": [one], "test": [one]})
    assert bomb.stat().st_size < 300_000
    mods = {**MAG_MODS, "audio": {"features": 4, "length": 64}}
    with pytest.raises(DataError, match="refusing to allocate"):
        load_data(_bp({k: {**v, "length": 64} for k, v in mods.items()}, {"vocab": str(vocab)}), str(bomb))


# -- CMU-MultimodalSDK computational sequences -----------------------------------------------
FOLDS = {"train": ["v1", "v2"], "valid": ["v3"], "test": ["v4"]}


def _write_csd(path, root, entries, metadata=None):
    """The SDK's writeCSD: <root>/data/<vid>/{features, intervals} and <root>/metadata/<key>."""
    with h5py.File(path, "w") as f:
        data = f.create_group(root).create_group("data")
        for vid, (features, intervals) in entries.items():
            g = data.create_group(vid)
            g.create_dataset("features", data=features)
            g.create_dataset("intervals", data=intervals)
        meta = f[root].create_group("metadata")
        for key, value in (metadata or {"root name": root}).items():
            meta.create_dataset(key, (1,), dtype=h5py.string_dtype())[0] = value
    return path


def _steps(duration, step, width, rng, nan=False):
    start = np.arange(0, duration, step)
    intervals = np.stack([start, start + step], axis=1)
    features = rng.standard_normal((len(start), width)).astype(np.float32)
    if nan:
        features[-6, 0] = np.nan  # inside the last rows a segment keeps
    return features, intervals


def _sdk_files(tmp_path, label_columns=1, seed=0):
    """Five videos (v5 in no fold): audio every 0.1 s (4 wide), vision every 0.25 s (5 wide),
    words every 0.5 s, and labels for two or three segments per video (one zero-length)."""
    rng = np.random.default_rng(seed)
    vids = ["v1", "v2", "v3", "v4", "v5"]
    audio = {v: _steps(4.0, 0.1, 4, rng, nan=v == "v1") for v in vids}
    vision = {v: _steps(4.0, 0.25, 5, rng) for v in vids}
    words = {v: (np.array([[w.encode()] for w in ["the", "movie", "was", "great", "not", "bad", "sp", "fun"]]), _steps(4.0, 0.5, 1, rng)[1]) for v in vids}
    labels = {}
    for v in vids:
        iv = np.array([[0.0, 1.2], [1.2, 3.9]] + ([[2.0, 2.0]] if v == "v2" else []))
        labels[v] = (rng.uniform(-3, 3, (len(iv), label_columns)).astype(np.float32), iv)
    paths = {
        "audio": _write_csd(tmp_path / "CMU_MOSEI_COVAREP.csd", "COVAREP", audio),
        "vision": _write_csd(tmp_path / "CMU_MOSEI_VisualFacet42.csd", "Facet", vision),
        "text": _write_csd(tmp_path / "CMU_MOSEI_TimestampedWords.csd", "words", words),
        "label": _write_csd(tmp_path / "CMU_MOSEI_Labels.csd", "All Labels", labels, {"root name": "All Labels", "dimension names": "['sentiment']"}),
    }
    split = tmp_path / "split.json"
    split.write_text(json.dumps(FOLDS))
    return {k: str(v) for k, v in paths.items()}, str(split), dict(audio=audio, vision=vision, labels=labels)


CSD_MODS = {"text": {"kind": "tokens", "length": 6, "vocab": 200, "time": "T_w"}, "audio": {"features": 4, "length": 10}, "vision": {"features": 5, "length": 6}}


def _sdk_reference(ref_interval, rows, seq_len):
    """The SDK's align (no collapse) for one segment, then get_tensors' left padding (direction=False)."""
    features, intervals = rows
    ref = np.asarray(ref_interval)
    hit = (intervals[:, 0] < ref[1] + EPSILON) & (intervals[:, 1] > ref[0] - EPSILON)
    clipped = np.minimum(intervals[hit, 1], ref[1]) - np.maximum(intervals[hit, 0], ref[0])
    kept = features[hit][np.abs(clipped) > EPSILON]
    return np.concatenate([np.zeros((seq_len, features.shape[1])), kept])[-seq_len:], len(kept)


@needs_h5py
def test_csd_segments_match_the_sdks_align_and_get_tensors(tmp_path, vocab):
    paths, split, raw = _sdk_files(tmp_path)
    out = load_data(_bp(CSD_MODS, {"source": "csd", "paths": paths, "split": split, "vocab": str(vocab)}))
    assert out.sizes() == {"train": 4, "valid": 2, "test": 2}
    assert out["train"].ids == ["v1[0]", "v1[1]", "v2[0]", "v2[1]"]
    assert any("2 segments outside the split" in n and "1 segments zero-length" in n for n in out.notes)
    assert any("cleaned 1 non-finite" in n and "train.audio: 1" in n for n in out.notes)
    worst = 0.0
    for split_name, vids in FOLDS.items():
        t = out[split_name].tensors
        for j, sample in enumerate(out[split_name].ids):
            vid, seg = sample[:2], int(sample[3])
            for m, d in (("audio", 10), ("vision", 6)):
                feats, n = _sdk_reference(raw["labels"][vid][1][seg], raw[m][vid], d)
                feats = np.nan_to_num(feats, nan=0.0)
                k = int(t[f"{m}_lengths"][j])
                assert k == min(n, d)
                # Composer pads on the right; the SDK on the left: the same rows, the other side
                worst = max(worst, float(np.abs(t[m][j, :k].numpy() - feats[d - k:]).max()))
                assert (t[m][j, k:] == 0).all()
            assert float(t["label"][j]) == pytest.approx(float(raw["labels"][vid][0][seg, 0]))
    assert worst == 0.0
    words = out["valid"].tensors["text"][0].tolist()  # v3[0] spans 0-1.2 s: the, movie, was
    assert words == [2, 5, 6, 7, 3, 0]


@needs_h5py
def test_csd_pools_the_entries_of_a_video_in_time_order_like_the_sdk(tmp_path):
    paths, split, raw = _sdk_files(tmp_path)
    pieces = {}
    for vid, (features, intervals) in raw["audio"].items():  # v[1] holds the second half, written first
        pieces[f"{vid}[1]"] = (features[20:], intervals[20:])
        pieces[f"{vid}[0]"] = (features[:20], intervals[:20])
    split_audio = str(_write_csd(tmp_path / "pieces.csd", "COVAREP", pieces))
    mods = {"audio": {"features": 4, "length": 30}}
    whole = load_data(_bp(mods, {"source": "csd", "paths": {"audio": paths["audio"], "label": paths["label"]}, "split": split}, bert=False))
    pooled = load_data(_bp(mods, {"source": "csd", "paths": {"audio": split_audio, "label": paths["label"]}, "split": split}, bert=False))
    for s in ("train", "valid", "test"):
        assert torch.equal(whole[s].tensors["audio"], pooled[s].tensors["audio"])
        assert torch.equal(whole[s].tensors["audio_lengths"], pooled[s].tensors["audio_lengths"])
    assert whole["train"].tensors["audio_lengths"].tolist() == [12, 27, 12, 27]


@needs_h5py
def test_a_vector_modality_is_the_mean_of_the_segments_rows(tmp_path):
    paths, split, raw = _sdk_files(tmp_path)
    bp = _bp({"face": {"kind": "vector", "features": 5}}, {"source": "csd", "paths": {"face": paths["vision"], "label": paths["label"]}, "split": split}, bert=False)
    t = load_data(bp)["valid"].tensors  # v3[0] spans 0-1.2 s: the vision rows starting at 0, 0.25, 0.5, 0.75, 1.0
    assert t["face"].shape == (2, 5)
    assert torch.allclose(t["face"][0], torch.from_numpy(raw["vision"]["v3"][0][:5].mean(0)))


def test_csd_splits_come_from_the_sdk_folds_json_or_the_sdk_fold_module(tmp_path):
    assert {k: len(v) for k, v in BUILTIN["cmu_mosi"].items()} == {"train": 52, "valid": 10, "test": 31}
    assert read_split("cmu_mosi")["03bSnISJMiM"] == "train" and read_split("cmu_mosi")["c7UH_rxdZv4"] == "test"
    module = tmp_path / "cmu_mosei_std_folds.py"
    module.write_text("standard_train_fold=['a', 'b']\nstandard_valid_fold=['c']\nstandard_test_fold=['d']\n")
    assert read_split(str(module)) == {"a": "train", "b": "train", "c": "valid", "d": "test"}
    marker = tmp_path / "ran"
    module.write_text(f"standard_train_fold=[__import__('os').system('touch {marker}')]\nstandard_valid_fold=[]\nstandard_test_fold=[]\n")
    with pytest.raises(DataError, match="not a literal list"):
        read_split(str(module))
    assert not marker.exists()
    both = tmp_path / "both.json"
    both.write_text(json.dumps({"train": ["a"], "dev": ["a"], "test": []}))
    with pytest.raises(DataError, match="'a' is in both the train and the valid fold"):
        read_split(str(both))
    with pytest.raises(DataError, match="training.data.split is not set"):
        read_split(None)


@needs_h5py
def test_csd_labels_columns_and_classification(tmp_path):
    paths, split, raw = _sdk_files(tmp_path, label_columns=7)
    mods = {"audio": {"features": 4, "length": 10}}
    data = {"source": "csd", "paths": {"audio": paths["audio"], "label": paths["label"]}, "split": split}
    with pytest.raises(DataError, match="has 7 values per sample, expected 1"):
        load_data(_bp(mods, data, bert=False))
    t = load_data(_bp(mods, {**data, "label_columns": [3]}, bert=False))["test"].tensors
    assert float(t["label"][1]) == pytest.approx(float(raw["labels"]["v4"][0][1, 3]))


def _break(tmp_path, kind):
    paths, split, _ = _sdk_files(tmp_path)
    audio = paths["audio"]
    with h5py.File(audio, "a") as f:
        g = f["COVAREP/data/v2"]
        if kind == "roots":
            f.create_group("other")
        elif kind == "intervals":
            del g["intervals"]
        elif kind == "rows":
            del g["intervals"]
            g.create_dataset("intervals", data=np.zeros((3, 2)))
        elif kind == "external":
            del g["features"]
            g["features"] = h5py.ExternalLink(str(tmp_path / "elsewhere.h5"), "/x")
        elif kind == "storage":
            del g["features"]
            (tmp_path / "raw.bin").write_bytes(bytes(40 * 4 * 4))
            g.create_dataset("features", shape=(40, 4), dtype="f4", external=[(str(tmp_path / "raw.bin"), 0, 40 * 4 * 4)])
        elif kind == "width":
            del g["features"]
            g.create_dataset("features", data=np.zeros((40, 3), np.float32))
        elif kind == "nan":
            g["intervals"][0, 0] = np.nan
        elif kind == "3d":
            del g["features"]
            g.create_dataset("features", data=np.zeros((40, 2, 2), np.float32))
    return paths, split


@needs_h5py
@pytest.mark.parametrize("kind, message", [
    ("roots", r"2 top-level groups \(COVAREP, other\); a computational sequence has one"),
    ("intervals", r"no 'COVAREP/data/v2/intervals' \(expected a \(rows, 2\) dataset of times\)"),
    ("rows", r"'COVAREP/data/v2/intervals' has shape \(3, 2\).*expected \(40, 2\)"),
    ("external", r"'COVAREP/data/v2/features' is a ExternalLink; a .csd file links nothing outside"),
    ("storage", r"keeps its values in other files"),
    ("width", r"'v2' has 3 features, but modality 'audio' of the blueprint expects 4"),
    ("nan", r"'COVAREP/data/v2/intervals' holds NaN or infinite times"),
    ("3d", r"'COVAREP/data/v2/features' has shape \(40, 2, 2\); expected \(rows, D\)"),
])
def test_malformed_csd_files_are_clear_data_errors(tmp_path, kind, message):
    paths, split = _break(tmp_path, kind)
    mods = {"audio": {"features": 4, "length": 10}}
    with pytest.raises(DataError, match=message):
        load_data(_bp(mods, {"source": "csd", "paths": {"audio": paths["audio"], "label": paths["label"]}, "split": split}, bert=False))


@needs_h5py
def test_csd_configuration_mistakes_are_clear_data_errors(tmp_path, vocab):
    paths, split, _ = _sdk_files(tmp_path)
    mods = {"audio": {"features": 4, "length": 10}}
    with pytest.raises(ComposerError, match=r"source 'csd' needs a .csd file for 'label' under `paths`"):
        _bp(mods, {"source": "csd", "paths": {"audio": paths["audio"]}, "split": split}, bert=False)  # refused by the check
    with pytest.raises(DataError, match="the file holds words; declare modality 'words' as kind: tokens"):
        load_data(_bp({"words": {"features": 1, "length": 4}}, {"source": "csd", "paths": {"words": paths["text"], "label": paths["label"]}, "split": split}, bert=False))
    with pytest.raises(DataError, match="no segment of the train fold"):
        load_data(_bp(mods, {"source": "csd", "paths": {"audio": paths["audio"], "label": paths["label"]}, "split": "cmu_mosi"}, bert=False))
    not_hdf5 = tmp_path / "fake.csd"
    not_hdf5.write_bytes(b"not an hdf5 file")
    with pytest.raises(DataError, match="not a readable HDF5 computational sequence"):
        load_data(_bp(mods, {"source": "csd", "paths": {"audio": str(not_hdf5), "label": paths["label"]}, "split": split}, bert=False))
    with pytest.raises(DataError, match="is one computational sequence"):
        load_data(_bp(mods, {}, bert=False), paths["audio"])


@needs_h5py
def test_data_inspect_detects_csd_and_mag_layouts_and_never_evaluates_metadata(tmp_path, capsys):
    marker = tmp_path / "ran"
    seq = _write_csd(tmp_path / "x.csd", "COVAREP", {"v1": _steps(1.0, 0.1, 3, np.random.default_rng(0), nan=True)},
                     {"root name": "COVAREP", "md5": f"__import__('os').system('touch {marker}')"})
    info = inspect_file(seq)
    part = info["splits"]["COVAREP"]
    assert info["layout"] == "csd" and part["samples"] == [1]
    assert part["keys"]["features"]["shape"] == "(1, 10, 3)" and part["keys"]["features"]["non_finite"] == 1
    assert part["keys"]["metadata: md5"]["note"].startswith("__import__") and not marker.exists()
    mag = inspect_file(_write(tmp_path / "mosi.pkl", _mag()))
    dev = mag["splits"]["dev"]
    assert mag["layout"] == "mag_pickle" and dev["samples"] == [5]
    assert dev["keys"]["visual"]["shape"] == "(5, 1..7, 5)" and dev["keys"]["words"]["shape"] == "(5, 1..7)"
    labels = [float(ex[1][0, 0]) for ex in _mag()["dev"]]
    assert (dev["keys"]["label"]["min"], dev["keys"]["label"]["max"]) == (min(labels), max(labels))
    assert main(["data", "inspect", str(seq)]) == 0 and main(["data", "inspect", str(tmp_path / "mosi.pkl")]) == 0
    printed = capsys.readouterr().out
    assert "COVAREP" in printed and "acoustic" in printed


# -- end to end ------------------------------------------------------------------------------
def test_a_tiny_blueprint_trains_one_epoch_on_a_mag_pickle(tmp_path, vocab):
    path = _write(tmp_path / "mosi.pkl", _mag(8))
    run = composer.train(_bp(MAG_MODS, {"source": "mag_pickle", "path": str(path), "vocab": str(vocab)}), out=tmp_path / "mag", progress=False)
    assert run.summary["data"]["sizes"] == {"train": 8, "valid": 8, "test": 8}
    assert np.isfinite(run.summary["best"]["test"]["mae"]) and (tmp_path / "mag" / "best.safetensors").exists()


@needs_h5py
def test_a_tiny_blueprint_trains_one_epoch_on_csd_files(tmp_path, vocab):
    paths, split, _ = _sdk_files(tmp_path)
    run = composer.train(_bp(CSD_MODS, {"source": "csd", "paths": paths, "split": split, "vocab": str(vocab)}), out=tmp_path / "csd", progress=False)
    assert run.summary["data"]["sizes"] == {"train": 4, "valid": 2, "test": 2}
    assert any("left out" in note for note in run.summary["data"]["notes"])
    assert np.isfinite(run.summary["best"]["test"]["mae"]) and (tmp_path / "csd" / "best.safetensors").exists()
