"""``composer import-weights``: a state dict saved by MMSA 2.2.1 becomes a Composer weights file.

The file is what MMSA's trainers write (``torch.save(AMIO.state_dict())``: names under
``Model.``); it goes through the zoo's name maps (composer/zoo_import/), the very maps
tests/test_mmsa_zoo.py proves, and ``composer.load_model`` of the result predicts as MMSA's
module does (1e-5). Anything that does not match exactly is refused, naming it, and the file is
unpickled with ``weights_only``: an object other than a tensor never runs code.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import composer
from composer.cli import main
from composer.errors import DataError
from composer.testing import padded_batch
from composer.zoo_import import import_mmsa_weights

import mmsa_oracle
from test_mmsa_zoo import (
    LENGTHS, MMSA_OPTIONS, NORMALIZED, ONE_TIME_AXIS, WIDTHS, ZOO, ALIGNED, mmsa_inputs, mmsa_module, zero_padding,
)


@pytest.fixture(scope="module")
def mmsa():
    return mmsa_oracle.models()


class AMIO(nn.Module):
    """MMSA's AMIO wrapper as its trainers save it: the model under ``Model`` (the avg_pool
    aligner holds no tensors)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.Model = model


def test_size_settings(name: str) -> list[str]:
    """The blueprint at the test's small feature widths and lengths, read as MMSA reads its data."""
    sizes = [f"modalities.{m}.features={w}" for m, w in WIDTHS.items()]
    lengths = {m: ALIGNED for m in WIDTHS} if name in ONE_TIME_AXIS else LENGTHS
    sizes += [f"modalities.{m}.length={n}" for m, n in lengths.items()]
    sizes += [f"blocks.norm.steps={ALIGNED}"] if name == "ef_lstm" else []
    return [*sizes, *MMSA_OPTIONS[name]]


test_size_settings.__test__ = False  # a helper, not a test


def saved_by_mmsa(mmsa, name: str, tmp_path, dataset: str = "mosi") -> tuple[nn.Module, object]:
    """MMSA's module for ``name`` and the path of its state dict, saved as MMSA's trainers do."""
    theirs = mmsa_module(mmsa, name, dataset)
    path = tmp_path / f"{name}-{dataset}.pth"
    torch.save(AMIO(theirs).state_dict(), path)
    return theirs, path


@pytest.mark.parametrize("name", ["tfn", "lmf", "lf_dnn", "ef_lstm", "mfn"])
def test_weights_saved_by_mmsa_load_and_predict_equally(mmsa, name, tmp_path):
    theirs, path = saved_by_mmsa(mmsa, name, tmp_path)
    out = import_mmsa_weights(path, ZOO / f"{name}.yaml", tmp_path / "w.safetensors", dataset="mosi", overrides=test_size_settings(name))
    ours = composer.load_model(out)
    ours.eval(), theirs.eval()
    batch = zero_padding(padded_batch(ours, 4))
    with torch.no_grad():
        prediction = ours(batch)["prediction"]
        reference = theirs(*mmsa_inputs(batch, NORMALIZED[name], theirs.aligner))["M"]
    torch.testing.assert_close(prediction, reference, atol=1e-5, rtol=0)


def test_the_command_writes_a_file_load_model_reads(mmsa, tmp_path, capsys):
    theirs, path = saved_by_mmsa(mmsa, "mfn", tmp_path, "mosei")
    out = tmp_path / "mfn.safetensors"
    sets = [arg for s in test_size_settings("mfn") for arg in ("--set", s)]
    code = main(["import-weights", str(path), "--blueprint", str(ZOO / "mfn.yaml"), "--dataset", "mosei", "-o", str(out), *sets])
    assert code in (0, None), capsys.readouterr().err
    assert f"wrote {out}" in capsys.readouterr().out
    assert composer.load_model(out).state_dict()["memory.lstm.text.weight_ih"].shape == theirs.lstm_l.weight_ih.shape


def _refusal(path, name: str, tmp_path, dataset: str = "mosi") -> str:
    with pytest.raises(DataError) as error:
        import_mmsa_weights(path, ZOO / f"{name}.yaml", tmp_path / "w.safetensors", dataset=dataset, overrides=test_size_settings(name))
    assert not (tmp_path / "w.safetensors").exists()
    return str(error.value)


def test_a_missing_extra_or_misshaped_tensor_is_refused_naming_it(mmsa, tmp_path):
    theirs, _ = saved_by_mmsa(mmsa, "mfn", tmp_path)
    state = AMIO(theirs).state_dict()
    cases = {
        "missing": {k: v for k, v in state.items() if k != "Model.gamma1_fc2.bias"},
        "extra": {**state, "Model.att3_fc1.weight": torch.zeros(2, 2)},
        "shape": {**state, "Model.out_fc1.weight": torch.zeros(3, 3)},
    }
    for case, broken in cases.items():
        path = tmp_path / f"{case}.pth"
        torch.save(broken, path)
        message = _refusal(path, "mfn", tmp_path)
        assert {"missing": "gamma1_fc2.bias", "extra": "att3_fc1.weight", "shape": "out_fc1.weight has shape (3, 3)"}[case] in message
        assert "blueprint 'mfn'" in message


def test_weights_of_another_dataset_are_refused(mmsa, tmp_path):
    _, path = saved_by_mmsa(mmsa, "mfn", tmp_path, "mosei")
    assert "has shape" in _refusal(path, "mfn", tmp_path, dataset="mosi")


def test_a_frozen_constant_other_than_the_blueprints_is_refused(mmsa, tmp_path):
    theirs, _ = saved_by_mmsa(mmsa, "tfn", tmp_path)
    state = {**AMIO(theirs).state_dict(), "Model.output_shift": torch.tensor([0.0])}
    torch.save(state, tmp_path / "shift.pth")
    assert "output_shift is [0.0], the blueprint's value is -3.0" in _refusal(tmp_path / "shift.pth", "tfn", tmp_path)


def test_graph_mfn_files_are_refused_since_mmsa_never_saves_its_graph_vertices(mmsa, tmp_path):
    _, path = saved_by_mmsa(mmsa, "graph_mfn", tmp_path)
    message = _refusal(path, "graph_mfn", tmp_path)
    assert "graph_mfn.networks.(0, 1).0.weight" in message and "never saved" in message


class _Opens:
    """An object whose unpickling would create a file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_with_other_objects_is_refused_without_running_code(mmsa, tmp_path):
    theirs, _ = saved_by_mmsa(mmsa, "mfn", tmp_path)
    marker = tmp_path / "ran"
    torch.save({**AMIO(theirs).state_dict(), "Model.trap": _Opens(marker)}, tmp_path / "trap.pth")
    assert "not a tensors-only state dict" in _refusal(tmp_path / "trap.pth", "mfn", tmp_path)
    assert not marker.exists()
    torch.save({**AMIO(theirs).state_dict(), "Model.epoch": 3}, tmp_path / "int.pth")  # allowed by weights_only, still no tensor
    assert "'Model.epoch' is a int, expected a tensor" in _refusal(tmp_path / "int.pth", "mfn", tmp_path)
