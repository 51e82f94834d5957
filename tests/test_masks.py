"""The mask model (docs/masks.md): right padding only, checked where data enters; vocabularies
checked by validate; model and training-only parameters reported apart."""

import numpy as np
import pytest
import torch

import composer
from composer.cli import main
from composer.data import load_data
from composer.errors import BlueprintError, DataError

BP = {
    "blueprint": 1, "name": "m",
    "modalities": {"text": {"kind": "tokens", "length": 6, "vocab": 200}, "audio": {"features": 3, "length": 5}},
    "blocks": {
        "bert": {"type": "bert", "in": "text", "init": "random", "hidden_size": 8, "num_layers": 1, "num_heads": 2,
                 "intermediate_size": 16, "vocab_size": 200},
        "audio_enc": {"type": "gru", "in": "audio", "hidden": 4, "output": "last"},
        "fusion": {"type": "concat", "in": ["bert.cls", "audio_enc"]},
        "head": {"type": "mlp", "in": "fusion", "out": 1},
    },
    "losses": [{"type": "l1", "pred": "head"}],
}


def split(n=4, mask=None, lengths=None):
    rng = np.random.default_rng(0)
    out = {"text": rng.integers(1, 200, (n, 6)), "audio": rng.normal(size=(n, 5, 3)).astype("float32"),
           "label": rng.uniform(-1, 1, n).astype("float32")}
    out["text_mask"] = np.ones((n, 6), bool) if mask is None else mask
    if lengths is not None:
        out["audio_lengths"] = lengths
    return out


def test_a_mask_that_is_not_right_padding_is_refused_where_data_enters():
    bp = composer.load_blueprint(BP)
    holes = np.ones((4, 6), bool)
    holes[2, 1] = False  # valid, pad, valid...: not a prefix
    with pytest.raises(DataError, match="sample 2 is not right padding"):
        load_data(bp, {"train": split(mask=holes), "valid": split(), "test": split()})


def test_lengths_beyond_the_padded_length_are_refused():
    bp = composer.load_blueprint(BP)
    with pytest.raises(DataError, match="audio_lengths' run 1..9, expected 0..5"):
        load_data(bp, {"train": split(lengths=np.array([1, 2, 9, 3])), "valid": split(), "test": split()})


def test_validate_compares_a_tokens_vocabulary_with_its_encoder(tmp_path, capsys):
    data = {**BP, "modalities": {**BP["modalities"], "text": {"kind": "tokens", "length": 6, "vocab": 30522}}}
    with pytest.raises(BlueprintError, match="modalities.text.vocab: vocab 30522 is larger than the 200 token ids block 'bert' embeds"):
        composer.load_blueprint(data)
    import yaml

    path = tmp_path / "v.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["validate", str(path)]) == 1
    assert f"{path}:" in capsys.readouterr().err  # with file:line


def test_build_shows_model_and_training_only_parameters_apart(capsys):
    assert main(["build", "blueprints/emt_dlfr.yaml"]) == 0
    out = capsys.readouterr().out
    assert "total parameters: 110,243,778  (the model at inference" in out
    assert "training-only parameters (loss networks and training-only blocks, not part of the model at inference): 1,583,017" in out
    model = composer.compile_blueprint(composer.load_blueprint("blueprints/emt_dlfr.yaml"))
    sizes = model.parameter_summary()
    assert sizes["model"] == 110_243_778 and sizes["training_only"] == 1_583_017
    assert sizes["model"] + sizes["training_only"] == sum(p.numel() for p in model.parameters())
