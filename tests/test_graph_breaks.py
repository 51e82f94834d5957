"""torch.compile: no graph breaks in Composer's own code for any paper blueprint (CPU,
``torch._dynamo.explain``, small shapes), and ``training.compile`` trains like eager.

The one break that stays is HCT-MG's gated, unfrozen modality gate: which branch runs
depends on the primary the gate reads back (the roles' inputs have their own time axes); a
fixed or frozen gate compiles whole. Dynamo's RNN support (``allow_rnn``) is switched on here so
that torch's own ``nn.LSTM``/``nn.GRU`` (which Dynamo otherwise leaves to eager code) do not hide
breaks in the code around them; recurrent blocks then run without packing, with the same results."""

import pytest
import torch

import composer
from composer.data import load_data

from shipped import ROOT

PAPERS = sorted(ROOT.glob("blueprints/*.yaml"))
TINY_BERT = {"init": "random", "hidden_size": 16, "num_layers": 2, "num_heads": 2, "intermediate_size": 32}


def _tiny(path):
    bp = composer.load_blueprint(path)
    sets = [f"modalities.{m}.length={min(6, v.length)}" for m, v in bp.modalities.items() if v.kind in ("sequence", "tokens")]
    sets += [f"blocks.{b}.{k}={v}" for b, c in bp.blocks.items() if c.type == "bert" for k, v in TINY_BERT.items()]
    bp = composer.load_blueprint(path, sets + ["training.data.samples.train=8"])
    return composer.compile_blueprint(bp).eval(), next(load_data(bp)["train"].batches(4))


def _breaks(model, batch) -> list[str]:
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model)(batch)
    places = []
    for reason in explained.break_reasons:
        frame = reason.user_stack[-1] if reason.user_stack else None
        places.append(f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}" if frame else reason.reason[:80])
    return places if explained.graph_break_count else []


@pytest.fixture(autouse=True)
def _rnn_tracing():
    saved = torch._dynamo.config.allow_rnn
    torch._dynamo.config.allow_rnn = True
    yield
    torch._dynamo.config.allow_rnn = saved
    torch._dynamo.reset()


@pytest.mark.parametrize("path", PAPERS, ids=lambda p: p.stem)
def test_a_paper_blueprint_compiles_without_graph_breaks_in_composer_code(path):
    from composer.blocks.gating import ModalityGate

    model, batch = _tiny(path)
    gates = [m for m in model.modules() if isinstance(m, ModalityGate) and m.gated]
    places = _breaks(model, batch)
    assert all(p.startswith("gating.py") for p in places) and (not places or gates), places
    for gate in gates:
        gate.freeze()
    assert _breaks(model, batch) == []


def test_compiled_recurrent_blocks_equal_packed_ones():
    model, batch = _tiny(ROOT / "blueprints" / "msaf.yaml")
    with torch.no_grad():  # (Dynamo's traced RNNs have no backward yet in torch 2.13)
        eager = model(batch)["prediction"]
        torch._dynamo.reset()
        compiled = torch.compile(model, backend="aot_eager")
        assert torch.allclose(compiled(batch)["prediction"], eager, atol=1e-5)


def test_training_compile_trains_like_eager(tmp_path):
    torch._dynamo.config.allow_rnn = False  # as training.compile runs: torch's RNN modules stay eager
    data = {"blueprint": 1, "name": "c", "modalities": {"text": {"features": 4, "length": 5}, "audio": {"features": 3, "length": 6}},
            "blocks": {"t": {"type": "gru", "in": "text", "hidden": 4, "output": "last"}, "a": {"type": "lstm", "in": "audio", "hidden": 4, "output": "last"},
                       "fusion": {"type": "concat", "in": ["t", "a"]}, "head": {"type": "mlp", "in": "fusion", "out": 1}},
            "losses": [{"type": "l1", "pred": "head"}],
            "training": {"epochs": 1, "batch_size": 8, "data": {"samples": {"train": 16, "valid": 8, "test": 8}}}}
    eager = composer.train(data, out=tmp_path / "eager", progress=False).summary["best"]["valid"]
    data["training"].update(compile="default", compile_backend="aot_eager")
    compiled = composer.train(data, out=tmp_path / "compiled", progress=False).summary["best"]["valid"]
    assert compiled["mae"] == pytest.approx(eager["mae"], abs=1e-5)
