"""No host syncs in a training step: Composer's code reads nothing back from the device in the
forward, loss, backward and optimiser step of any paper blueprint (CPU test: the reads are
counted; CUDA test: torch's sync debug mode raises on any).

Two reads are known and kept: HCT-MG's gated, unfrozen modality gate reads which modality is
primary (one number per step: the branch that runs depends on it, the roles' inputs having
their own time axes; a fixed or frozen gate reads nothing), and the text encoder checks token
ids against its vocabulary when the ids are on the host (on a device the check was made once,
when the data was loaded), and Self-MM's ``ulgm`` checks sample indices against its state's rows
when they are on the host (free there; it skips the check on a device)."""

import pytest
import torch

import composer
from composer.data import load_data
from composer.testing import HostReads
from composer.train.views import make_views

from shipped import PRESETS as PAPERS, ROOT
SMALL_BERT = ("hidden_size=32", "num_layers=2", "num_heads=2", "intermediate_size=37")
HOST_SIDE = ("text.py", "ulgm.py")  # the vocabulary check of ids, the index check of ULGM: both on the host only


def _tiny(path, device="cpu"):
    bp = composer.load_blueprint(path)
    sets = [f"modalities.{m}.length={min(6, v.length)}" for m, v in bp.modalities.items() if v.kind in ("sequence", "tokens")]
    sets += [f"blocks.{b}.init=random" for b, c in bp.blocks.items() if c.type == "bert"]
    small = [f"blocks.{b}.{s}" for b, c in bp.blocks.items() if c.type == "bert" for s in SMALL_BERT]
    try:  # BERT-base costs seconds a step; a blueprint whose other widths follow BERT's keeps it
        bp = composer.load_blueprint(path, sets + small + ["training.data.samples.train=8"])
    except composer.BlueprintError:
        bp = composer.load_blueprint(path, sets + ["training.data.samples.train=8"])
    model = composer.compile_blueprint(bp).to(device).train()
    batch = next(load_data(bp)["train"].batches(4, device=device))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        batches = make_views(batch, bp, torch.Generator().manual_seed(0))
        outputs = {view: model(b) for view, b in batches.items()}
        loss, _ = model.compute_loss(outputs, batches)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return model, step


def _gates(model):
    from composer.blocks.gating import ModalityGate

    return [m for m in model.modules() if isinstance(m, ModalityGate) and m.gated and not m.frozen]


@pytest.mark.parametrize("path", PAPERS, ids=lambda p: p.stem)
def test_a_training_step_reads_nothing_back_from_the_device(path):
    model, step = _tiny(path)
    step()  # first step: lazy initialisation is allowed to look
    with HostReads() as reads:
        step()
    mine = {k: v for k, v in reads.where.items() if not k.split(" at ")[1].startswith(HOST_SIDE)}
    gates = _gates(model)
    assert sum(v for k, v in mine.items() if "gating.py" not in k) == 0, mine
    assert sum(v for k, v in mine.items() if "gating.py" in k) == len(gates), mine


def test_a_frozen_gate_reads_nothing():
    model, step = _tiny(ROOT / "blueprints" / "hct_mg.yaml")
    step()
    for gate in _gates(model):
        gate.freeze()
    with HostReads() as reads:
        step()
    assert not [k for k in reads.where if "gating.py" in k], reads.where


def test_packing_uses_the_host_lengths_and_skips_full_batches():
    bp = composer.load_blueprint(ROOT / "blueprints" / "late_fusion.yaml", ["modalities.text.length=5", "modalities.audio.length=5", "modalities.vision.length=5"])
    model = composer.compile_blueprint(bp).eval()
    split = load_data(bp)["train"]
    batch = next(split.batches(4))
    assert batch["host_lengths"]["audio"] == batch["audio_lengths"].tolist()
    full = dict(batch, host_lengths={m: [5] * 4 for m in ("text", "audio", "vision")},
                **{f"{m}_lengths": torch.full((4,), 5) for m in ("text", "audio", "vision")})
    without = {k: v for k, v in full.items() if k != "host_lengths" and not k.endswith("_lengths")}
    with torch.no_grad():
        assert torch.allclose(model(full)["prediction"], model(without)["prediction"], atol=1e-6)  # unpacked = packed when nothing is padded
        plain = {k: v for k, v in batch.items() if k != "host_lengths"}
        assert torch.allclose(model(batch)["prediction"], model(plain)["prediction"], atol=1e-6)


@pytest.mark.gpu
@pytest.mark.parametrize("path", PAPERS, ids=lambda p: p.stem)
def test_a_cuda_training_step_runs_under_sync_debug_mode_error(path):
    model, step = _tiny(path, "cuda")
    step()
    for gate in _gates(model):
        gate.freeze()  # the gated primary is the one documented read
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
