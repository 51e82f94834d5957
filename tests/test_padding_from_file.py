"""Padding comes from the file (issue #27): MMSA's unaligned pickles keep text's valid length only
in ``text_bert[:, 1]`` (the attention mask), with no ``text_lengths``; a padding-sensitive model
must give the same predictions whatever the padded text steps hold.

The pickle is built here in MMSA's exact unaligned layout (``thuiar/MMSA``'s ``data_loader.py``):
``text`` ``(N, 50, D)`` features left-aligned with padding after, ``text_bert`` ``(N, 3, 50)`` =
ids, attention mask, segment ids; ``audio_lengths`` / ``vision_lengths`` Python lists of ints;
``raw_text``, ``id`` object arrays; ``regression_labels``. Small widths keep it fast.
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

import composer
from composer.data import load_data, splits_from_arrays

T_TEXT, T_AUDIO, T_VISION = 50, 20, 25
D_TEXT, D_AUDIO, D_VISION = 32, 5, 20
SPLITS = {"train": 6, "valid": 4, "test": 5}


def mmsa_unaligned(noise: float, seed: int = 0) -> dict:
    """A pickle's content in MMSA's unaligned_50 layout; ``noise`` fills every padded step."""
    rng = np.random.default_rng(seed)
    pad = np.random.default_rng(seed + 100)
    data = {}
    for split, n in SPLITS.items():
        text_len = rng.integers(3, T_TEXT - 5, size=n)
        audio_len = rng.integers(2, T_AUDIO, size=n)
        vision_len = rng.integers(2, T_VISION, size=n)
        ids = rng.integers(1000, 2000, size=(n, T_TEXT))
        mask = (np.arange(T_TEXT)[None, :] < text_len[:, None]).astype(np.int64)
        ids[:, 0], ids[np.arange(n), text_len - 1] = 101, 102
        ids = ids * mask
        text = rng.normal(size=(n, T_TEXT, D_TEXT)).astype(np.float32)
        audio = rng.normal(size=(n, T_AUDIO, D_AUDIO)).astype(np.float32)
        vision = rng.normal(size=(n, T_VISION, D_VISION)).astype(np.float32)
        for x, lengths in ((text, text_len), (audio, audio_len), (vision, vision_len)):
            padded = np.arange(x.shape[1])[None, :] >= lengths[:, None]
            x[padded] = noise * pad.normal(size=(int(padded.sum()), x.shape[2]))
        data[split] = {
            "raw_text": np.array([f"sentence {i}" for i in range(n)], dtype=object),
            "audio": audio,
            "vision": vision,
            "id": np.array([f"vid{i}$_$ {i}" for i in range(n)], dtype=object),
            "text": text,
            "text_bert": np.stack([ids, mask, np.zeros_like(ids)], axis=1).astype(np.float64),
            "audio_lengths": [int(v) for v in audio_len],
            "vision_lengths": [int(v) for v in vision_len],
            "annotations": np.array(["Positive"] * n, dtype=object),
            "regression_labels": rng.uniform(-3, 3, size=n).astype(np.float32),
        }
    return data


def padding_sensitive_blueprint():
    """Text as a feature sequence through attention and mean pooling, audio and vision pooled
    by attention and max: every one of them reads padding unless the lengths are right."""
    return composer.load_blueprint({
        "blueprint": 1, "name": "padding_from_file",
        "modalities": {"text": {"features": D_TEXT, "length": T_TEXT}, "audio": {"features": D_AUDIO, "length": T_AUDIO},
                       "vision": {"features": D_VISION, "length": T_VISION}},
        "blocks": {
            "t_enc": {"type": "transformer", "in": "text", "heads": 2, "layers": 1},
            "t_pool": {"type": "pool", "in": "t_enc", "mode": "mean"},
            "a_pool": {"type": "pool", "in": "audio", "mode": "attention"},
            "v_pool": {"type": "pool", "in": "vision", "mode": "max"},
            "fusion": {"type": "concat", "in": ["t_pool", "a_pool", "v_pool"]},
            "head": {"type": "mlp", "in": "fusion", "hidden": [8], "out": 1},
        },
        "losses": [{"type": "l1", "pred": "head"}],
    })


def _write(path, content):
    path.write_bytes(pickle.dumps(content, protocol=4))
    return str(path)


def _predict(model, data) -> torch.Tensor:
    split = data["test"]
    with torch.no_grad():
        return model(split.batch(torch.arange(len(split))))["prediction"]


def test_text_lengths_come_from_the_text_bert_attention_mask(tmp_path):
    bp = padding_sensitive_blueprint()
    data = load_data(bp, _write(tmp_path / "unaligned_50.pkl", mmsa_unaligned(noise=0.0)))
    raw = mmsa_unaligned(noise=0.0)
    for split in SPLITS:
        t = data[split].tensors
        assert t["text_lengths"].tolist() == raw[split]["text_bert"][:, 1].sum(1).astype(int).tolist()
        assert t["audio_lengths"].tolist() == raw[split]["audio_lengths"]
    assert "padding: 'text': lengths from the attention mask of 'text_bert'" in data.notes


def test_an_mmsa_pickle_with_noise_in_its_padded_text_steps_gives_identical_predictions(tmp_path):
    bp = padding_sensitive_blueprint()
    torch.manual_seed(0)
    model = composer.compile_blueprint(bp).eval()
    clean = load_data(bp, _write(tmp_path / "clean.pkl", mmsa_unaligned(noise=0.0)))
    noisy = load_data(bp, _write(tmp_path / "noisy.pkl", mmsa_unaligned(noise=5.0)))
    assert not torch.equal(clean["test"].tensors["text"], noisy["test"].tensors["text"])
    torch.testing.assert_close(_predict(model, noisy), _predict(model, clean), rtol=0, atol=1e-5)


def test_a_sequence_without_length_information_is_read_whole_with_one_note(tmp_path):
    content = mmsa_unaligned(noise=0.0)
    for split in content.values():
        del split["vision_lengths"]
    data = load_data(padding_sensitive_blueprint(), _write(tmp_path / "x.pkl", content))
    notes = [n for n in data.notes if "'vision'" in n]
    assert notes == ["padding: 'vision': the file gives no lengths for it (no 'vision_lengths', 'vision_bert' or 'vision_mask'); all 25 steps read as valid"]
    assert "vision_lengths" not in data["train"].tensors


def test_aligned_modalities_without_lengths_take_the_text_lengths(tmp_path):
    content = mmsa_unaligned(noise=0.0)
    for split in content.values():
        for m in ("audio", "vision"):
            split[m] = split[m][:, :1].repeat(T_TEXT, axis=1)
            del split[f"{m}_lengths"]
    bp = composer.load_blueprint({
        "blueprint": 1, "name": "aligned",
        "modalities": {m: {"features": d, "length": T_TEXT, "time": "T"} for m, d in (("text", D_TEXT), ("audio", D_AUDIO), ("vision", D_VISION))},
        "blocks": {"fusion": {"type": "concat", "in": ["text", "audio", "vision"]}, "pool": {"type": "pool", "in": "fusion", "mode": "mean"},
                   "head": {"type": "mlp", "in": "pool", "out": 1}},
        "losses": [{"type": "l1", "pred": "head"}],
    })
    data = load_data(bp, _write(tmp_path / "aligned_50.pkl", content))
    t = data["valid"].tensors
    assert torch.equal(t["audio_lengths"], t["text_lengths"]) and torch.equal(t["vision_lengths"], t["text_lengths"])
    assert "padding: 'audio': the lengths of 'text' (from the attention mask of 'text_bert'), which it is aligned with on time axis 'T'" in data.notes


def mmsa_aligned(seed: int = 0) -> dict:
    """A pickle's content in MMSA's aligned_50 layout: audio and vision at the words' 50 steps, zero
    after each sample's words, with no ``audio_lengths`` / ``vision_lengths``: their valid steps are
    those of ``text_bert[:, 1]`` (MMSA reads them so: ``SELF_MM.forward`` with ``aligned``,
    ``data_loader.py`` under ``need_data_aligned``)."""
    content = mmsa_unaligned(noise=0.0, seed=seed)
    for split in content.values():
        words = split["text_bert"][:, 1, :, None]
        for m in ("audio", "vision"):
            split[m] = (np.resize(split[m], (len(words), T_TEXT, split[m].shape[2])) * words).astype(np.float32)
            del split[f"{m}_lengths"]
    return content


def aligned_with_tokens(modalities=("audio", "vision")):
    """MAG-BERT's reading of an aligned file: BERT tokens and audio and vision on the words' time axis."""
    mods = {"text": {"kind": "tokens", "length": T_TEXT, "vocab": 2000, "time": "T"},
            **{m: {"features": d, "length": T_TEXT, "time": "T"} for m, d in (("audio", D_AUDIO), ("vision", D_VISION)) if m in modalities},
            **{m: {"features": d, "length": n} for m, d, n in (("audio", D_AUDIO, T_TEXT), ("vision", D_VISION, T_TEXT)) if m not in modalities}}
    return composer.load_blueprint({
        "blueprint": 1, "name": "aligned_tokens", "modalities": mods,
        "blocks": {"a_pool": {"type": "pool", "in": "audio", "mode": "mean"}, "v_pool": {"type": "pool", "in": "vision", "mode": "max"},
                   "fusion": {"type": "concat", "in": ["a_pool", "v_pool"]}, "head": {"type": "mlp", "in": "fusion", "out": 1}},
        "losses": [{"type": "l1", "pred": "head"}], "training": {"batch_size": 4},
    })


def test_an_mmsa_aligned_file_gives_audio_and_vision_the_words_lengths_and_says_so(tmp_path, capsys):
    """MMSA's aligned files keep the valid steps of all three modalities in ``text_bert``'s mask; the
    note says which lengths are used and why, not that some are missing; training prints it and the
    run's data record (``data.json``) keeps it."""
    from composer.train.runlog import DATA_RECORD

    path = _write(tmp_path / "aligned_50.pkl", mmsa_aligned())
    data = load_data(aligned_with_tokens(), path)
    raw = mmsa_aligned()
    for split in SPLITS:
        words = torch.from_numpy(raw[split]["text_bert"][:, 1].sum(1).astype(np.int64))
        assert torch.equal(data[split].tensors["audio_lengths"], words) and torch.equal(data[split].tensors["vision_lengths"], words)
    notes = [n for n in data.notes if n.startswith("padding:")]
    assert notes == [f"padding: '{m}': the lengths of 'text' (from the attention mask of 'text_bert'), which it is aligned with on time axis 'T'"
                     for m in ("audio", "vision")]
    capsys.readouterr()
    composer.train(aligned_with_tokens(), path, out=tmp_path / "run", epochs=1, progress=True)
    printed = " ".join(capsys.readouterr().out.split())
    assert all(note in printed for note in notes), printed[:2000]
    assert [n for n in json.loads((tmp_path / "run" / DATA_RECORD).read_text())["notes"] if n.startswith("padding:")] == notes
    # a modality on its own time axis is not given the words' lengths: it is read whole, and its note says why
    unaligned = load_data(aligned_with_tokens(modalities=("audio",)), path)
    assert "vision_lengths" not in unaligned["train"].tensors and [n for n in unaligned.notes if "'vision'" in n] == [
        f"padding: 'vision': the file gives no lengths for it (no 'vision_lengths', 'vision_bert' or 'vision_mask'); all {T_TEXT} steps read as valid"]


def test_aligned_modalities_of_a_file_without_any_lengths_are_read_whole_with_a_note_each(tmp_path):
    content = mmsa_aligned()
    for split in content.values():
        del split["text_bert"]
    bp = composer.load_blueprint({
        "blueprint": 1, "name": "aligned",
        "modalities": {m: {"features": d, "length": T_TEXT, "time": "T"} for m, d in (("text", D_TEXT), ("audio", D_AUDIO))},
        "blocks": {"fusion": {"type": "concat", "in": ["text", "audio"]}, "pool": {"type": "pool", "in": "fusion", "mode": "mean"},
                   "head": {"type": "mlp", "in": "pool", "out": 1}},
        "losses": [{"type": "l1", "pred": "head"}],
    })
    data = load_data(bp, _write(tmp_path / "x.pkl", content))
    assert "audio_lengths" not in data["train"].tensors and [n for n in data.notes if n.startswith("padding:")] == [
        f"padding: '{m}': the file gives no lengths for it (no '{m}_lengths', '{m}_bert' or '{m}_mask', and none for the modalities "
        f"aligned with it on time axis 'T'); all {T_TEXT} steps read as valid" for m in ("text", "audio")]


def test_a_text_bert_mask_with_holes_is_a_data_error(tmp_path):
    content = mmsa_unaligned(noise=0.0)
    content["valid"]["text_bert"][2, 1, 1] = 0
    with pytest.raises(composer.errors.DataError, match=r"the mask in 'text_bert' of sample 2 is not right padding"):
        load_data(padding_sensitive_blueprint(), _write(tmp_path / "x.pkl", content))


def test_arrays_without_lengths_get_the_same_note():
    content = mmsa_unaligned(noise=0.0)
    arrays = {s: {"text": d["text"], "audio": d["audio"], "audio_lengths": np.array(d["audio_lengths"]), "vision": d["vision"],
                  "vision_lengths": np.array(d["vision_lengths"]), "label": d["regression_labels"]} for s, d in content.items()}
    data = splits_from_arrays(padding_sensitive_blueprint(), arrays)
    assert data.notes == ["padding: 'text': no 'text_lengths' or 'text_mask' given; all steps read as valid"]
