"""The trainer: exact resume, determinism, views, parameter groups, hooks, early stopping, evaluate, CLI."""

import json
import pickle

import numpy as np
import pytest
import torch
from torch import nn

import composer
from composer.cli import main
from composer.errors import ComposerError
from composer.train.checkpoint import load_checkpoint
from composer.train.optim import build_optimizer
from composer.train.trainer import Trainer
from composer.train.views import make_views, temporal_mask

MODS = {"text": {"features": 6, "length": 8}, "audio": {"features": 3, "length": 8}}



def _bp(losses=None, **training):
    training = {"batch_size": 16, "epochs": 3, "data": {"samples": {"train": 48, "valid": 16, "test": 16}}, **training}
    return composer.load_blueprint(
        {
            "blueprint": 1,
            "name": "tiny",
            "modalities": MODS,
            "blocks": {
                "text_enc": {"type": "gru", "in": "text", "hidden": 8, "output": "last"},
                "audio_enc": {"type": "gru", "in": "audio", "hidden": 4, "output": "last"},
                "fusion": {"type": "concat", "in": ["text_enc", "audio_enc"]},
                "head": {"type": "mlp", "in": "fusion", "hidden": [8], "out": 1, "dropout": 0.2},
            },
            "losses": losses or [{"type": "l1", "pred": "head"}],
            "training": training,
        }
    )


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_resume_after_two_epochs_equals_three_straight_epochs_and_drops_interrupted_rows(tmp_path):
    bp = _bp()
    composer.train(bp, out=tmp_path / "straight", progress=False)
    composer.train(bp, out=tmp_path / "split", epochs=2, progress=False)
    assert load_checkpoint(tmp_path / "split" / "last.ckpt")["epoch"] == 2
    with open(tmp_path / "split" / "metrics.jsonl", "a") as f:  # an epoch 3 interrupted while logging
        f.write('{"epoch": 3, "split": "train", "loss": 0.5}\n{"epoch": 3, "spl')
    composer.train(bp, out=tmp_path / "split", resume=True, progress=False)
    drop = lambda rows: [{k: v for k, v in r.items() if k != "time"} for r in rows]  # noqa: E731
    assert drop(_rows(tmp_path / "straight")) == drop(_rows(tmp_path / "split"))
    assert len(_rows(tmp_path / "split")) == 9  # 3 epochs x train/valid/test
    csv_lines = (tmp_path / "split" / "metrics.csv").read_text().splitlines()
    assert len(csv_lines) == 10 and csv_lines[0].startswith("epoch,split,loss")


def test_repeated_run_gives_the_same_metrics_on_cpu(tmp_path):
    bp = _bp(epochs=1)
    a = composer.train(bp, out=tmp_path / "a", progress=False).summary["best"]
    b = composer.train(bp, out=tmp_path / "b", progress=False).summary["best"]
    assert a == b


def test_run_folder_holds_every_output(tmp_path):
    result = composer.train(_bp(epochs=1), out=tmp_path / "run", progress=False)
    for name in ("metrics.jsonl", "metrics.csv", "block_logs.jsonl", "last.ckpt", "best.safetensors", "summary.json", "blueprint.yaml"):
        assert (tmp_path / "run" / name).exists(), name
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["best_epoch"] == 1 and "acc7" in summary["best"]["test"]
    assert isinstance(result.model, composer.ComposedModel)


def test_temporal_mask_zeroes_features_and_keeps_special_tokens():
    bp = composer.load_blueprint(
        {"blueprint": 1, "name": "m", "modalities": {"text": {"kind": "tokens", "length": 6, "vocab": 300}, "audio": {"features": 2, "length": 5}},
         "blocks": {"a": {"type": "gru", "in": "audio", "hidden": 3, "output": "last"}, "head": {"type": "mlp", "in": "a", "out": 1}}}
    )
    ids = torch.tensor([[101, 200, 201, 202, 102, 0], [101, 203, 102, 0, 0, 0]])
    batch = {"text": ids, "text_mask": ids != 0, "audio": torch.ones(2, 5, 2), "audio_lengths": torch.tensor([5, 3])}
    out = temporal_mask(batch, bp, 1.0, torch.Generator().manual_seed(0))
    assert out["text"].tolist() == [[101, 100, 100, 100, 102, 0], [101, 100, 102, 0, 0, 0]]
    assert out["view_masks"]["text"].tolist() == [[False, True, True, True, False, False], [False, True, False, False, False, False]]
    assert out["view_masks"]["audio"].tolist() == [[True] * 5, [True, True, True, False, False]]
    assert (out["audio"][0] == 0).all() and (out["audio"][1, 3:] == 1).all()
    assert torch.equal(batch["audio"], torch.ones(2, 5, 2))  # the main batch is untouched
    half = temporal_mask(batch, bp, 0.5, torch.Generator().manual_seed(0))["view_masks"]["audio"]
    assert 0 < half.sum() < 8


def test_views_train_with_a_loss_on_the_masked_view(tmp_path):
    bp = _bp(epochs=1, views={"incomplete": {"type": "temporal_mask", "rate": 0.3}},
             losses=[{"type": "l1", "pred": "head"}, {"type": "l1", "pred": "incomplete:head", "weight": 0.5}])
    batch = composer.compile_blueprint(bp).example_inputs(4)
    views = make_views(batch, bp, torch.Generator().manual_seed(0))
    assert set(views) == {"main", "incomplete"} and set(views["incomplete"]["view_masks"]) == {"text", "audio"}
    result = composer.train(bp, out=tmp_path / "v", progress=False)
    train_row = _rows(tmp_path / "v")[0]
    assert "loss/l1_1" in train_row and np.isfinite(result.summary["best"]["valid"]["mae"])


def test_param_groups_give_blocks_their_own_learning_rate():
    bp = _bp(lr=1e-3, param_groups=[{"blocks": ["text_enc"], "lr": 1e-5}])
    model = composer.compile_blueprint(bp)
    opt = build_optimizer(model, bp.training)
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs == {"text_enc": 1e-5, "default": 1e-3}
    assert sum(p.numel() for p in opt.param_groups[0]["params"]) == model.parameter_counts()["text_enc"]
    with pytest.raises(ComposerError, match="did you mean 'text_enc'"):
        build_optimizer(model, _bp(param_groups=[{"blocks": ["text_encc"]}]).training)


def test_gradient_accumulation_counts_optimizer_steps(tmp_path):
    composer.train(_bp(epochs=1, grad_accum=2, grad_clip=1.0), out=tmp_path / "acc", progress=False)
    assert load_checkpoint(tmp_path / "acc" / "last.ckpt")["global_step"] == 2  # 3 batches -> 2 steps


def test_early_stopping_on_a_chosen_metric(tmp_path):
    bp = _bp(epochs=6, lr=1e-12, early_stop=1, monitor={"metric": "acc7"})
    summary = composer.train(bp, out=tmp_path / "es", progress=False).summary
    assert summary["epochs_run"] == 2 and summary["best_epoch"] == 1
    assert summary["monitor"]["direction"] == "maximize"


def test_unknown_monitor_metric_is_a_clear_error(tmp_path):
    with pytest.raises(ComposerError, match="did you mean 'acc2_nonzero'"):
        Trainer(_bp(monitor={"metric": "acc2_nonzro"}), out=tmp_path, progress=False)


def test_block_epoch_hooks_are_logged(tmp_path):
    class Gate(nn.Module):
        def composer_epoch_end(self, epoch):
            return {"weights": [0.2, 0.8], "frozen": epoch >= 2}

    trainer = Trainer(_bp(epochs=1), out=tmp_path, progress=False)
    model = composer.compile_blueprint(trainer.bp)
    model.fusion.add_module("gate", Gate())
    assert trainer._run_hooks(model, 2) == [{"epoch": 2, "block": "fusion.gate", "weights": [0.2, 0.8], "frozen": True}]


def test_evaluate_sweep_reports_auilc(tmp_path):
    composer.train(_bp(epochs=1), out=tmp_path / "r", progress=False)
    result = composer.evaluate(tmp_path / "r", missing_rates="0:1:0.5", progress=False)
    assert list(result.sweep) == [0.0, 0.5, 1.0]
    assert result.sweep[0.0]["mae"] == pytest.approx(result.splits["test"]["mae"])
    m = [result.sweep[r]["mae"] for r in (0.0, 0.5, 1.0)]
    assert result.auilc["mae"] == pytest.approx(0.25 * (m[0] + m[1]) + 0.25 * (m[1] + m[2]))
    assert result.written.name.startswith("evaluation-synthetic-") and result.written.name.endswith("-sweep-test.json")
    saved = json.loads(result.written.read_text())
    assert saved["auilc"]["mae"] == pytest.approx(result.auilc["mae"])
    from_ckpt = composer.evaluate(tmp_path / "r" / "last.ckpt", progress=False, write=False)
    assert set(from_ckpt.splits) == {"valid", "test"}


def test_training_on_a_pickle_with_non_finite_audio(tmp_path):
    rng = np.random.default_rng(0)
    data = {}
    for split in ("train", "valid", "test"):
        audio = rng.standard_normal((8, 8, 3)).astype(np.float32)
        audio[0, 1, 2], audio[3, 0, 0] = np.nan, -np.inf
        data[split] = {"text": rng.standard_normal((8, 8, 6)).astype(np.float32), "audio": audio,
                       "audio_lengths": np.full(8, 6), "regression_labels": rng.uniform(-3, 3, 8).astype(np.float32)}
    path = tmp_path / "feat.pkl"
    path.write_bytes(pickle.dumps(data))
    summary = composer.train(_bp(epochs=1), data=str(path), out=tmp_path / "p", progress=False).summary
    assert any("cleaned 6 non-finite" in n for n in summary["data"]["notes"])
    assert np.isfinite(summary["best"]["test"]["mae"])


def test_cli_train_then_evaluate(tmp_path, capsys):
    bp_path = tmp_path / "tiny.yaml"
    bp_path.write_text(composer.dump_blueprint(_bp()))
    out = tmp_path / "cli"
    assert main(["train", str(bp_path), "--out", str(out), "--epochs", "1", "--set", "training.batch_size=24", "--device", "cpu", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "acc7" in printed and "corr" in printed
    assert json.loads((out / "summary.json").read_text())["seed"] == 3
    assert main(["evaluate", str(out), "--missing-rates", "0:1:0.5"]) == 0
    assert "AUILC" in capsys.readouterr().out
    assert main(["train", str(bp_path), "--set", "training.lr=-1"]) == 1


@pytest.mark.parametrize("kind,loss,metric", [("classification", "ce", "acc_1"), ("multilabel", "bce", "f1_2")])
def test_classification_and_multilabel_tasks_train_and_report_per_class_metrics(tmp_path, kind, loss, metric):
    data = _bp(epochs=1).to_data()
    data["task"] = {"kind": kind, "outputs": 3}
    data["blocks"]["head"]["out"] = 3
    data["losses"] = [{"type": loss, "pred": "head"}]
    data["training"]["monitor"] = {"metric": "f1_weighted"}
    summary = composer.train(data, out=tmp_path / kind, progress=False).summary
    assert metric in summary["best"]["test"] and 0 <= summary["best"]["test"]["acc"] <= 1


def test_parse_rates_includes_the_stop_and_rejects_bad_ranges():
    from composer.train.evaluation import parse_rates

    assert parse_rates("0:1:0.25") == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert parse_rates("0.5,0.1") == [0.1, 0.5]
    for bad in ("1:0:0.1", "0:1:0", "0:2:1", "a:b"):
        with pytest.raises(ComposerError):
            parse_rates(bad)


def test_on_epoch_end_callback_sees_each_epoch_and_can_stop_training(tmp_path):
    seen = []

    class Prune(Exception):
        pass

    def callback(epoch, rows):
        seen.append((epoch, sorted(rows), rows["valid"]["mae"]))
        if epoch == 2:
            raise Prune

    with pytest.raises(Prune):
        composer.train(_bp(), out=tmp_path / "cb", progress=False, on_epoch_end=callback)
    assert [s[:2] for s in seen] == [(1, ["test", "train", "valid"]), (2, ["test", "train", "valid"])]
    assert load_checkpoint(tmp_path / "cb" / "last.ckpt")["epoch"] == 2


def test_schedulers_follow_their_definitions():
    from composer.train.optim import build_scheduler

    def lrs(**sched):
        bp = _bp(lr=1.0, epochs=2, scheduler=sched)
        opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
        s = build_scheduler(opt, bp.training, steps_per_epoch=4, direction="minimize")
        out = []
        for _ in range(8):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            s.step()
        return out

    assert lrs(type="linear_warmup", warmup_steps=4)[:5] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])
    cosine = lrs(type="cosine")
    assert cosine[0] == 1.0 and cosine[4] == pytest.approx(0.5) and cosine[-1] < 0.05
    assert lrs(type="step", step_size=3, gamma=0.5)[:4] == pytest.approx([1.0, 1.0, 1.0, 0.5])  # stepped per epoch


def test_device_and_precision_selection():
    from composer.train.optim import Precision, select_device

    if not torch.cuda.is_available():
        assert select_device().type == "cpu"
        with pytest.raises(ComposerError, match="CUDA is not available"):
            select_device("cuda")
        with pytest.raises(ComposerError, match="fp16 needs a CUDA device"):
            Precision("fp16", torch.device("cpu"))
    assert Precision("auto", torch.device("cpu")).name == "fp32"


def test_bf16_autocast_trains_on_cpu(tmp_path):
    summary = composer.train(_bp(epochs=1, precision="bf16"), out=tmp_path / "bf", progress=False).summary
    assert summary["precision"] == "bf16" and np.isfinite(summary["best"]["test"]["mae"])
