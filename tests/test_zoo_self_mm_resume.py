"""Issue #25, done when: "a Self-MM run killed mid-epoch resumes to identical generated labels".

The shipped ``blueprints/zoo/self_mm.yaml`` at MOSI's settings (``dataset=mosi``) and the zoo tests'
tiny sizes (``tests/test_mmsa_self_mm.py``: a two-layer 32-wide BERT, 3- and 4-wide audio and
vision), its recipe otherwise as shipped (dropout 0.1 in two heads, Adam over five groups, an
optimiser step every 4 batches on their summed losses), on the synthetic set: ``composer train`` in
a subprocess is killed with SIGKILL inside epoch 2 (right after epoch 1's checkpoint), resumed with
``--resume``, and compared with an uninterrupted run: the ULGM label memory (the generated labels of
every modality, the stored representations, the epoch), every weight and the optimiser's moments
equal to the bit. Negative control: the state the kill left (epoch 1's) differs from the end's in
every generated label and the weights, so the comparison reads what the epochs after the kill wrote.
"""

from __future__ import annotations

import torch

import composer
from composer.train.checkpoint import load_checkpoint
from test_mmsa_self_mm import BLUEPRINT, TINY
from tests.killed_runs import checkpoint_state, kill_inside_an_epoch_then_resume

EPOCHS, SAMPLES = 3, 48
SMALL = ["dataset=mosi", *TINY, f"training.data.samples={{train: {SAMPLES}, valid: 4, test: 4}}", f"blocks.ulgm.samples={SAMPLES}",
         "training.batch_size=4", "training.early_stop=null"]
LABELS = [f"ulgm.labels_{m}" for m in ("fusion", "text", "audio", "vision")]


def test_a_self_mm_run_killed_mid_epoch_resumes_to_identical_generated_labels_and_weights(tmp_path):
    killed = kill_inside_an_epoch_then_resume(BLUEPRINT, tmp_path / "killed", SMALL, EPOCHS)
    composer.train(BLUEPRINT, out=tmp_path / "whole", overrides=[*SMALL, f"training.epochs={EPOCHS}"], progress=False)
    whole, again = checkpoint_state(tmp_path / "whole"), checkpoint_state(tmp_path / "killed")
    assert int(whole["ulgm.epoch"]) == EPOCHS + 1 and set(LABELS) <= whole.keys()
    assert whole.keys() == again.keys() and [k for k in whole if not torch.equal(whole[k], again[k])] == []
    moments = [load_checkpoint(tmp_path / r / "last.ckpt")["optimizer"]["state"] for r in ("whole", "killed")]
    assert moments[0].keys() == moments[1].keys() and all(
        torch.equal(a, moments[1][i][k]) for i, s in moments[0].items() for k, a in s.items())
    # negative control: the state the kill left (epoch 1's) differs from the end's: the epochs after the kill
    # moved every generated label and the weights of every branch, so equality above is the resume's doing
    left = killed["model"]
    assert all(not torch.equal(left[k], whole[k]) for k in LABELS[1:]) and not torch.equal(whole[LABELS[1]], whole[LABELS[0]])
    changed = [k for k, v in left.items() if v.is_floating_point() and not torch.equal(v, whole[k])]
    assert any(k.startswith("text_bert.") for k in changed) and any(k.startswith("head_audio.") for k in changed)
