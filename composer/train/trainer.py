"""The trainer: a blueprint, its data, a run folder -> a trained model and metric files.

One epoch: shuffle the train split (a generator seeded by ``seed`` and the epoch, so a
resumed run draws the same order), build the views of each batch, run the model on every
view, ``model.compute_loss(outputs, batches, epoch=epoch)`` (the terms whose ``from_epoch``
has come), backward (scaled by ``1 / grad_accum``),
and every ``grad_accum`` batches clip and step (an epoch's incomplete last group: as
``grad_accum_tail`` says). Then every submodule's
``composer_epoch_end(epoch)`` hook runs, the ``valid`` and ``test`` splits are evaluated,
the rows go to the run log, the best model (by the monitored validation metric) is saved
as ``best.safetensors`` and the full state as ``last.ckpt``.
"""

from __future__ import annotations

import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

import torch
from rich.text import Text
from torch import nn

from composer.blueprint.load import dump_blueprint, load_blueprint
from composer.blueprint.weights import load_model
from composer.data import DataSplits, TensorSplit, load_data
from composer.errors import ComposerError, DataError, disk_write
from composer.graph.model import ComposedModel, compile_blueprint
from composer.metrics import compute_metrics, metric_direction
from composer.train.checkpoint import (LoopState, capture_rng, carried_grads, check_checkpoint_fields, check_resume_state, load_checkpoint,
                                       publish, restore_carried_grads, restore_rng, save_checkpoint, seed_everything)
from composer.train.distributed import World, join_world, local_share, sigterm_as_error, to_device
from composer.train.optim import (STEP_SCHEDULERS, Precision, build_optimizer, build_scheduler, build_stage_optimizers, reinitialise, reset_optimizer,
                                  select_device, stage_terms)
from composer.train.lock import RunLock
from composer.train.runlog import DATA_RECORD, RunLog, data_record, make_console, write_json
from composer.train.views import make_views

__all__ = ["Trainer", "TrainResult", "train", "evaluate_split", "as_blueprint", "remove_run_files", "run_files", "EPOCH_HOOK"]

EPOCH_HOOK = "composer_epoch_end"
#: The files of a run folder; a new run refuses to start over them without ``overwrite``.
RUN_FILES = ("metrics.jsonl", "metrics.csv", "block_logs.jsonl", "last.ckpt", "best.safetensors", "summary.json", "blueprint.yaml",
             DATA_RECORD, "evaluation.json", "run.json")
#: Folders a run writes (TensorBoard's event files); --overwrite removes them with the files.
RUN_FOLDERS = ("tensorboard",)
#: Files ``composer evaluate`` writes into a run folder (``evaluation-<data>-<sha8>-<protocol>[-N].json``).
EVALUATION_GLOB = "evaluation-*.json"
DIVERGENCE_FACTOR = 100.0


def run_files(run_dir: Path) -> list[str]:
    """The names of the run files present in ``run_dir`` (:data:`RUN_FILES` and evaluations)."""
    present = [name for name in RUN_FILES if (run_dir / name).exists()]
    present += [name for name in RUN_FOLDERS if (run_dir / name).is_dir()]
    return present + sorted(p.name for p in run_dir.glob(EVALUATION_GLOB))


def remove_run_files(run_dir: Path) -> list[str]:
    """Delete a run's files from ``run_dir`` (nothing else there); returns their names."""
    import shutil

    names = run_files(run_dir)
    for name in names:
        if name in RUN_FOLDERS:
            shutil.rmtree(run_dir / name)
        else:
            (run_dir / name).unlink()
    return names


def _describe_data(fp: dict) -> str:
    sizes = ", ".join(f"{k} {v}" for k, v in fp.get("sizes", {}).items())
    return f"{fp.get('source') or 'data'} ({sizes}; sha256 {str(fp.get('sha256', '?'))[:12]})"


def as_blueprint(blueprint: Any, overrides=()):
    """A validated blueprint from a path, YAML text, dict or blueprint (overrides applied)."""
    if hasattr(blueprint, "training") and hasattr(blueprint, "modalities"):
        if not overrides:
            return blueprint
        blueprint = blueprint.source_data()
    return load_blueprint(blueprint, overrides=list(overrides))


def compiled(model: ComposedModel, cfg):
    """The module that runs the forward passes: ``model`` itself, or under ``training.compile``
    ``torch.compile(model)``; weights stay ``model``'s. Dynamo leaves ``nn.LSTM``/``nn.GRU`` to
    eager PyTorch (its RNN tracing, ``allow_rnn``, cannot yet differentiate them in torch 2.13),
    so a recurrent block is a break around torch's module; Composer's own code has none
    (tests/test_graph_breaks.py)."""
    if cfg.compile == "none":
        return model
    return torch.compile(model, mode=cfg.compile, backend=cfg.compile_backend)


def _view_generator(seed: int, epoch: int, salt: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch * 7_919 + salt) % (2**63 - 1))


def batch_order(seed: int, epoch: int) -> torch.Generator:
    """The generator that shuffles the train split in ``epoch`` (from 1) of a run seeded ``seed``:
    a loop written by hand that draws its batches with it sees them in the trainer's order."""
    return _view_generator(seed, epoch, 1)


class _Step(nn.Module):
    """One forward of a training step: every view through the model, then the loss (or an update
    stage's ``terms``). Under several processes DDP wraps this module, so the views' passes and
    the losses (their parameters too) are one forward for it."""

    def __init__(self, model: ComposedModel, runner: nn.Module):
        super().__init__()
        self.model, self.runner = model, runner

    def forward(self, batches: dict[str, dict], terms: set[str] | None = None, epoch: int | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        outputs = {v: self.runner(b) for v, b in batches.items()}
        return self.model.compute_loss(outputs, batches, terms=terms, epoch=epoch)


def steps_after(i: int, n_batches: int, cfg) -> bool:
    """Whether the optimiser steps after batch ``i`` (from 0) of an epoch's ``n_batches``: at the
    end of every group of ``grad_accum`` batches, and after the last one when the epoch ends on an
    incomplete group only with ``grad_accum_tail: step`` (``drop``, ``carry``: no step there)."""
    return (i + 1) % cfg.grad_accum == 0 or (i + 1 == n_batches and cfg.grad_accum_tail == "step")


def _global_batches(split: TensorSplit, batch_size: int, device: torch.device, world: World, **order) -> Iterator[dict]:
    """The split's global batches: on ``device``, or on the CPU under several processes (each
    takes its share after the views are drawn, see :func:`_share`)."""
    return split.batches(batch_size, device=device if not world.active else "cpu", **order)


def _share(batches: dict[str, dict], world: World, device: torch.device) -> tuple[dict[str, dict], int, int]:
    """This process's part of the views of a global batch, the samples it counts for and the
    global batch size (one process: the views as they are)."""
    n = int(batches["main"]["label"].shape[0])
    if not world.active:
        return batches, n, n
    part, count = world.share(n)
    return {v: to_device(local_share(b, part, n), device) for v, b in batches.items()}, count, n


@torch.no_grad()
def evaluate_split(
    model: ComposedModel,
    split: TensorSplit,
    batch_size: int,
    device: torch.device,
    precision: Precision | None = None,
    *,
    seed: int = 0,
    transform=None,
    view: str | None = None,
    runner=None,
    world: World | None = None,
    epoch: int | None = None,
) -> dict[str, float]:
    """Loss, its terms (``loss/<name>``) and the task metrics of ``model`` on one split (eval
    mode, no gradients): of the prediction, and as ``<output>/<metric>`` of every other output
    of the prediction's shape (:attr:`Plan.scored_outputs`).

    ``transform(batch, generator) -> batch`` alters the inputs first (e.g. masking for a
    missing-rate sweep). Views for the loss are drawn from a generator seeded by ``seed`` so
    the value is reproducible; the metrics score the predictions of ``view`` (default:
    ``training.monitor.view``, the batch as given unless a blueprint says otherwise).

    ``world``: under several processes each scores its share of every batch (masks drawn for
    the whole batch); process 0 computes the row over the whole split and sends it to all.
    ``epoch``: the loss sums the terms active in this training epoch (``losses[].from_epoch``;
    None: every term).
    """
    model.eval()
    bp = model.blueprint
    world = world or World()
    view = view or bp.training.monitor.view
    gen = _view_generator(seed, 0, 17)
    scored = model.plan.scored_outputs
    preds: dict[str, list[torch.Tensor]] = {o: [] for o in scored}
    labels, index, n = [], [], 0
    sums: dict[str, float] = {}
    for batch in _global_batches(split, batch_size, device, world):
        if transform is not None:
            batch = transform(batch, gen)
        batches, size, _ = _share(make_views(batch, bp, gen), world, device)
        if size == 0:  # a process with no sample of this batch
            continue
        with precision.autocast() if precision is not None else nullcontext():
            outputs = {v: (runner if runner is not None else model)(b, training_branches=True) for v, b in batches.items()}
            total, parts = model.compute_loss(outputs, batches, epoch=epoch)
        for name, value in (("loss", total), *((f"loss/{k}", v) for k, v in parts.items())):
            sums[name] = sums.get(name, 0.0) + float(value) * size
        n += size
        for o in scored:
            preds[o].append(outputs[view][o].float().cpu())
        labels.append(batches["main"]["label"].cpu())
        index.append(batches["main"].get("index"))
    shards = world.gather((sums, n, preds, labels, index))
    return world.broadcast(_split_row(bp, scored, shards) if world.main else None)


def _split_row(bp, scored: list[str], shards: list[tuple]) -> dict[str, float]:
    """The row of :func:`evaluate_split` from every process's ``(loss sums, samples, predictions,
    labels, indices)``: loss means over all samples, metrics over the predictions in split order."""
    sums: dict[str, float] = {}
    n = sum(shard[1] for shard in shards)
    for shard in shards:
        for k, v in shard[0].items():
            sums[k] = sums.get(k, 0.0) + v
    order = torch.argsort(torch.cat([i for shard in shards for i in shard[4]])) if len(shards) > 1 else None
    pick = (lambda t: t) if order is None else (lambda t: t[order])  # noqa: E731
    label = pick(torch.cat([y for shard in shards for y in shard[3]])).numpy()
    row = {k: v / max(1, n) for k, v in sums.items()}
    for o in scored:  # the prediction's metrics as they are, another output's as <output>/<metric>
        prefix = "" if o == "prediction" else f"{o}/"
        pred = pick(torch.cat([p for shard in shards for p in shard[2][o]])).numpy()
        row.update((prefix + k, v) for k, v in compute_metrics(bp.task, pred, label).items())
    return row


@dataclass
class TrainResult:
    """What :func:`train` returns: the run folder, the summary (as in ``summary.json``), the model."""

    run_dir: Path
    summary: dict[str, Any]
    model: ComposedModel = field(repr=False)

    def __getitem__(self, key: str) -> Any:
        return self.summary[key]


class Trainer:
    """Trains a blueprint on its data into ``run_dir``. See :func:`train` for the arguments."""

    def __init__(
        self,
        blueprint,
        data: Any = None,
        out: str | Path | None = None,
        *,
        device: str | None = None,
        progress: bool = True,
        console=None,
        on_epoch_end=None,
        overwrite: bool = False,
    ):
        self.bp = blueprint
        self.overwrite = overwrite
        self.cfg = blueprint.training
        self.run_dir = Path(out) if out is not None else Path("runs") / blueprint.name
        self.world, self.device = join_world(select_device(device))  # one process unless under torchrun
        self.precision = Precision(self.cfg.precision, self.device)
        if self.cfg.grad_clip_at == "backward" and (self.world.active or self.precision.scaler is not None):
            self.world.close()  # every process refuses alike
            raise ComposerError(
                "training.grad_clip_at: backward clips the running gradient sum after every backward pass, but "
                + (f"under {self.world.size} processes the gradients are averaged across processes only at the step (no_sync "
                   "accumulation), so each process would clip its own partial sum and the run would differ from one process; "
                   "train in one process or use grad_clip_at: step" if self.world.active else
                   "precision auto chose fp16 on this GPU, whose GradScaler unscales gradients once per step; "
                   "set training.precision bf16 or fp32, or use grad_clip_at: step"))
        if self.device.type == "cpu" and self.cfg.cpu_threads is not None:
            torch.set_num_threads(self.cfg.cpu_threads)
        self.progress = progress and self.world.main
        self.on_epoch_end = on_epoch_end
        self.console = console or make_console()
        self.monitor = self.cfg.monitor.metric  # a metric the run logs: checked with the blueprint (composer.blueprint.check)
        d = self.cfg.monitor.direction
        self.direction = metric_direction(self.monitor) if d == "auto" else d
        self.data: DataSplits = load_data(blueprint, data)
        missing = [s for s in ("train", "valid") if s not in self.data]
        if missing:
            raise DataError(f"{self.data.source or 'the data'} has no {' or '.join(missing)} split; training needs both")

    # -- helpers ------------------------------------------------------------------
    @cached_property
    def data_record(self) -> dict[str, Any]:
        """What ``data.json`` and the summary record about the data (:func:`~composer.train.runlog.data_record`)."""
        return data_record(self.data, self.bp)

    def _better(self, value: float, best: float | None) -> bool:
        if best is None or not math.isfinite(best):
            return math.isfinite(value)
        return value < best if self.direction == "minimize" else value > best

    def _log(self, text: str, style: str | None = None) -> None:
        if self.progress:
            self.console.print(Text(text, style=style or ""))

    def _state(self, model, optimizer, scheduler, loop: LoopState, stage_opts=None) -> dict:
        """Everything ``last.ckpt`` holds: the loop state's fields, then the objects' states."""
        return {
            **loop.to_checkpoint(),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "stages": {name: opt.state_dict() for name, opt in (stage_opts or {}).items()},
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "scaler": self.precision.scaler.state_dict() if self.precision.scaler is not None else None,
            "rng": capture_rng(),
            "blueprint": dump_blueprint(self.bp),
            "data": self.data.fingerprint(),
            "world_size": self.world.size,
            "rank_rng": self.world.gather(capture_rng()) if self.world.active else None,
            "carried_grads": carried_grads(model) if self.cfg.grad_accum_tail == "carry" else None,
        }

    def _check_same_world(self, state: dict) -> None:
        saved = state.get("world_size", 1)
        if saved != self.world.size:
            raise ComposerError(
                f"{self.run_dir / 'last.ckpt'} was trained in {saved} process(es), this run has {self.world.size}: resume under "
                f"{saved} (torchrun --nproc-per-node / composer train --nproc), or train into a new --out folder"
            )

    def _check_resumable(self, state: dict) -> None:
        check_checkpoint_fields(state, self.run_dir / "last.ckpt")
        saved = load_blueprint(state["blueprint"], source=f"{self.run_dir / 'last.ckpt'}#blueprint").to_data()
        now = self.bp.to_data()
        for data in (saved, now):
            data["training"].pop("epochs", None)
        if saved != now:
            raise ComposerError(
                f"{self.run_dir / 'last.ckpt'} was written by a different blueprint; resume with the same settings "
                "(only --epochs may change) or train into a new --out folder"
            )

    def _prepare_run_dir(self, resuming: bool, resume_asked: bool = False) -> None:
        """Clean temporary files an interrupted run left; refuse to write over a run's files unless
        ``overwrite`` (then they are deleted). Called with the folder's lock held."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for tmp in self.run_dir.glob(".*.tmp"):
            if any(tmp.name.startswith(f".{name}") for name in RUN_FILES):
                tmp.unlink()
                self._log(f"removed {tmp.name}, a temporary file left by an interrupted run")
        if resuming:
            return
        existing = run_files(self.run_dir)
        if existing and not self.overwrite:
            if "last.ckpt" in existing:
                raise ComposerError(
                    f"{self.run_dir} already holds a run ({', '.join(existing)}); continue it with --resume, "
                    "replace it with --overwrite, or train into another --out folder"
                )
            asked = " (--resume was given, but there is no last.ckpt to resume from)" if resume_asked else ""
            raise ComposerError(
                f"{self.run_dir} holds the files of a run that ended before its first checkpoint ({', '.join(existing)}){asked}; "
                "there is nothing to resume: replace them with --overwrite, or train into another --out folder"
            )
        remove_run_files(self.run_dir)

    def _note(self, text: str) -> None:
        """A line the user should see even without progress output (stderr then)."""
        if self.progress:
            self.console.print(Text(text, style="yellow"))
        else:
            print(text, file=sys.stderr)

    def _check_same_data(self, state: dict) -> None:
        saved = state.get("data")
        now = self.data.fingerprint()
        if not isinstance(saved, dict):
            raise DataError(
                f"{self.run_dir / 'last.ckpt'} holds no record of the data it was trained on ('data' is {saved!r}), so Composer "
                "cannot tell whether this run's data is the same; start the run again with --overwrite, or train into a new --out folder"
            )
        if saved != now:
            raise ComposerError(
                f"{self.run_dir / 'last.ckpt'} was trained on other data ({_describe_data(saved)}); this run has "
                f"{_describe_data(now)}. Resume with the same --data, or train into a new --out folder"
            )

    def _save_best(self, model: ComposedModel, extra: dict[str, str]) -> None:
        """``best.safetensors`` via ``ComposedModel.save``, atomically (temporary file + rename)."""
        tmp, path = self.run_dir / ".best.safetensors.tmp", self.run_dir / "best.safetensors"
        with disk_write(path, f"the previous {path.name}" if path.exists() else "no best model yet"):
            model.save(tmp, extra=extra)
            publish(tmp, path)

    def _run_hooks(self, model: nn.Module, epoch: int) -> list[dict]:
        rows = []
        for name, module in model.named_modules():
            hook = getattr(module, EPOCH_HOOK, None)
            if callable(hook):
                result = hook(epoch)
                if result is not None:
                    rows.append({"epoch": epoch, "block": name, **result})
        return rows

    # -- the loop -----------------------------------------------------------------
    def fit(self, resume: bool = False) -> TrainResult:
        """Train into the run folder, holding its lock (:class:`~composer.train.lock.RunLock`) throughout:
        another process that trains, resumes, overwrites or evaluates into it is refused meanwhile."""
        mode = " --resume" if resume else (" --overwrite" if self.overwrite else "")
        lock = RunLock(self.run_dir, f"composer train{mode} ({self.bp.name})", log=self._note) if self.world.main else nullcontext()
        checkpoint = str(self.run_dir / "last.ckpt")
        try:
            with lock, sigterm_as_error(self.world, checkpoint), RunLog.tracked():  # only process 0 touches the run folder
                return self._fit(resume)
        except RuntimeError as exc:  # DistError, or gloo's plain RuntimeError for a lost peer
            lost = self.world.lost(exc, checkpoint)
            if lost is None:
                raise
            raise lost from None

    def _open_run(self, resume: bool) -> dict | None:
        """Prepare the run folder (process 0): the checked state of ``last.ckpt`` when resuming, else None."""
        ckpt_path = self.run_dir / "last.ckpt"
        resuming = resume and ckpt_path.exists()
        self._prepare_run_dir(resuming, resume_asked=resume)
        if not resuming:
            if resume:
                self._log(f"no checkpoint in {self.run_dir}; starting a new run", style="yellow")
            return None
        state = load_checkpoint(ckpt_path)
        self._check_resumable(state)
        self._check_same_data(state)
        self._check_same_world(state)
        LoopState.from_checkpoint(state, ckpt_path)
        return state

    def _fit(self, resume: bool) -> TrainResult:
        cfg, bp = self.cfg, self.bp
        world = self.world
        ckpt_path = self.run_dir / "last.ckpt"
        state = world.on_main(lambda: self._open_run(resume))  # process 0's checked state, sent to all

        if self.device.type == "cpu":  # the traced step's peak against COMPOSER_MAX_MEMORY, before memory is spent
            from composer.train.memory import check_memory_before_training

            check_memory_before_training(bp, log=self._log if world.main else None)
        seed_everything(cfg.seed)
        model = compile_blueprint(bp)
        reinitialise(model, cfg)
        model = model.to(self.device)
        if world.rank > 0:  # the same weights everywhere; each process its own dropout draws
            seed_everything(cfg.seed + 7_919 * world.rank)
        runner = compiled(model, cfg)
        stepper = _Step(model, runner)
        if world.active:  # some parameters sit out some steps (stages, training-only branches): find them
            from torch.nn.parallel import DistributedDataParallel

            stepper = DistributedDataParallel(stepper, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                                              find_unused_parameters=True)
        optimizer = build_optimizer(model, cfg)
        stage_opts = build_stage_optimizers(model, cfg)
        train_split = self.data["train"]
        batches_per_epoch = math.ceil(len(train_split) / cfg.batch_size)
        steps_per_epoch = (math.ceil if cfg.grad_accum_tail == "step" else math.floor)(batches_per_epoch / cfg.grad_accum)
        if steps_per_epoch == 0 and world.main:  # as MMSA's trainers on such a split: the weights never move
            self._note(f"warning: training.grad_accum_tail: {cfg.grad_accum_tail}: the train split has {batches_per_epoch} batches an "
                       f"epoch, fewer than grad_accum {cfg.grad_accum}, so the optimiser never steps; lower grad_accum or use "
                       f"grad_accum_tail: step")
        scheduler = build_scheduler(optimizer, cfg, steps_per_epoch, self.direction)
        if state is None:
            loop = LoopState()
        else:
            loop = LoopState.from_checkpoint(state, ckpt_path)
            check_resume_state(state, ckpt_path, model=model, optimizer=optimizer, scheduler=scheduler, scaler=self.precision.scaler, stages=stage_opts)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            for name, opt in stage_opts.items():
                opt.load_state_dict(state["stages"][name])
            if scheduler is not None and state["scheduler"] is not None:
                scheduler.load_state_dict(state["scheduler"])
            if self.precision.scaler is not None and state["scaler"] is not None:
                self.precision.scaler.load_state_dict(state["scaler"])
            restore_carried_grads(model, state.get("carried_grads"), ckpt_path)
            restore_rng(state["rng"] if world.rank == 0 or not state.get("rank_rng") else state["rank_rng"][world.rank])
            self._log(f"resuming {self.run_dir} after epoch {loop.epoch}")
        log = None
        if world.main:
            log = RunLog(self.run_dir, resume_epoch=loop.epoch if state is not None else None, blueprint=bp, data=self.data_record)
            (self.run_dir / "blueprint.yaml").write_text(dump_blueprint(bp), encoding="utf-8")
            write_json(self.run_dir / DATA_RECORD, self.data_record)
        for note in self.data.notes:
            self._log(note)
        counts = model.parameter_summary()
        n_params = counts["model"]
        extra = f" (+ {counts['training_only']:,} training-only)" if counts["training_only"] else ""
        processes = f" x {world.size} processes" if world.active else ""
        self._log(f"{bp.name}: {n_params:,} parameters{extra} on {self.device}{processes} ({self.precision.name}), run folder {self.run_dir}")

        started = time.perf_counter()
        progress = self._progress()
        with progress:
            for epoch in range(loop.epoch + 1, cfg.epochs + 1):
                if loop.stopped:
                    break
                if cfg.reset_optimizer == "epoch" and epoch > 1:
                    optimizer = reset_optimizer(optimizer, model, cfg, scheduler)
                train_row, loop.global_step = self._train_epoch(model, stepper, optimizer, scheduler, train_split, epoch, loop.global_step, progress, stage_opts)
                block_rows = self._run_hooks(model, epoch)
                if cfg.grad_accum_tail == "carry":  # a hook may have frozen a parameter (a gate): its carried gradient is void
                    for p in model.parameters():
                        if not p.requires_grad:
                            p.grad = None
                rows = [train_row]
                valid = evaluate_split(model, self.data["valid"], cfg.batch_size, self.device, self.precision, seed=cfg.seed, runner=runner, world=world,
                                       epoch=epoch)
                rows.append({"epoch": epoch, "split": "valid", **valid})
                if "test" in self.data:
                    test = evaluate_split(model, self.data["test"], cfg.batch_size, self.device, self.precision, seed=cfg.seed, runner=runner, world=world,
                                          epoch=epoch)
                    rows.append({"epoch": epoch, "split": "test", **test})
                if log is not None:
                    self._warn_if_diverging(log, train_row)
                    log.add_block_rows(block_rows)
                    log.add_metrics(rows)
                value = valid[self.monitor]
                if scheduler is not None and cfg.scheduler.type == "plateau":
                    scheduler.step(value)
                elif scheduler is not None and cfg.scheduler.type not in STEP_SCHEDULERS:
                    scheduler.step()
                improved = self._better(value, loop.best)
                loop.epoch = epoch
                if improved:
                    loop.best, loop.best_epoch, loop.bad_epochs = float(value), epoch, 0
                else:
                    loop.bad_epochs += 1
                if world.main and (improved or (cfg.monitor.keep == "last" and math.isfinite(value))):
                    self._save_best(model, {"composer.epoch": str(epoch), f"composer.valid.{self.monitor}": repr(value)})
                if cfg.early_stop is not None and loop.bad_epochs >= cfg.early_stop:
                    loop.stopped = True
                ckpt_state = self._state(model, optimizer, scheduler, loop, stage_opts)  # every process: their RNG states
                if world.main:
                    save_checkpoint(ckpt_path, ckpt_state)
                self._log(self._epoch_line(epoch, train_row, valid, improved))
                if loop.stopped:
                    self._log(f"early stop: no better valid {self.monitor} for {cfg.early_stop} epochs")
                if self.on_epoch_end is not None:
                    self.on_epoch_end(epoch, {r["split"]: r for r in rows})
        summary = None
        if world.main:
            summary = self._summary(log, loop.best, loop.best_epoch, counts, time.perf_counter() - started)
            write_json(self.run_dir / "summary.json", summary)
        summary = world.broadcast(summary)
        if loop.best_epoch is None or (world.main and not (self.run_dir / "best.safetensors").exists()):
            raise ComposerError(
                f"no epoch gave a finite valid {self.monitor}, so this run produced no best model "
                f"(see {self.run_dir / 'metrics.csv'}); check the validation labels, training.lr and the loss"
            )
        if self.progress:
            self._print_summary(summary)
        if not world.main:  # the run folder may sit on another node: the model as trained
            return TrainResult(self.run_dir, summary, model)
        best_model = load_model(self.run_dir / "best.safetensors", map_location=self.device)
        return TrainResult(self.run_dir, summary, best_model)

    def _progress(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        return Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
            disable=not self.progress,
        )

    def _weighted(self, total: torch.Tensor, count: int, n: int) -> torch.Tensor:
        """What backward takes from this process's loss over ``count`` of the batch's ``n`` samples:
        under several processes ``total * W * count / n``, so the gradient DDP averages over the
        ``W`` processes is the whole batch's (one process: ``total`` as it is)."""
        return total if not self.world.active else total * (self.world.size * count / n)

    def _clip(self, model) -> None:
        """``training.grad_clip_value`` (element-wise), then ``grad_clip`` (norm), on the model's
        gradients as they stand: before each step (``grad_clip_at: step``) or after every
        backward pass (``backward``)."""
        if self.cfg.grad_clip_value is not None:
            nn.utils.clip_grad_value_(model.parameters(), self.cfg.grad_clip_value)
        if self.cfg.grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), self.cfg.grad_clip)

    def _sync(self, stepper, stepping: bool):
        """DDP averages gradients in the backward before an optimiser step, not in those between
        (``grad_accum``); one process: nothing to do."""
        return stepper.no_sync() if self.world.active and not stepping else nullcontext()

    def _stage_step(self, model, stepper, stage, opt, batches: dict, count: int, n: int, sums: dict[str, float], epoch: int) -> None:
        """One update of a ``training.stages`` entry: its objective's terms, backward, clip over
        the model's parameters (as MMSA's MMIM trainer clips), its optimiser's step; none in an
        epoch before every one of its terms' ``from_epoch``."""
        terms = stage_terms(self.bp, stage) & {ln.name for ln in model.plan.losses if ln.config.from_epoch <= epoch}
        if not terms:
            return
        model.zero_grad(set_to_none=True)
        with self.precision.autocast():
            total, _ = stepper(batches, terms)
            total = total * stage.weight
        (value,) = self.world.mean([float(total.detach())], count, n)
        if not math.isfinite(value):
            raise ComposerError(f"stage '{stage.name}': the loss is {value}; lower the stage's lr or set its grad_clip")
        self._weighted(total, count, n).backward()
        clip = stage.grad_clip if stage.grad_clip is not None else self.cfg.grad_clip
        if clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        model.zero_grad(set_to_none=True)
        key = f"stage/{stage.name}/loss"
        sums[key] = sums.get(key, 0.0) + value * n
        sums[f"{key}#n"] = sums.get(f"{key}#n", 0.0) + n

    def _epoch_stages(self, model, stepper, stage_opts, split: TensorSplit, epoch: int, sums: dict[str, float]) -> None:
        """The ``every: epoch`` stages: each a pass over its fraction of the epoch's batches, in order."""
        cfg = self.cfg
        for k, stage in enumerate(cfg.stages):
            if stage.every != "epoch":
                continue
            order_gen, view_gen = _view_generator(cfg.seed, epoch, 100 + 2 * k), _view_generator(cfg.seed, epoch, 101 + 2 * k)
            limit = math.ceil(stage.fraction * math.ceil(len(split) / cfg.batch_size))
            for i, batch in enumerate(_global_batches(split, cfg.batch_size, self.device, self.world, shuffle=True, generator=order_gen)):
                if i >= limit:
                    break
                batches, count, n = _share(make_views(batch, self.bp, view_gen), self.world, self.device)
                self._stage_step(model, stepper, stage, stage_opts[stage.name], batches, count, n, sums, epoch)

    def _train_epoch(self, model, stepper, optimizer, scheduler, split: TensorSplit, epoch: int, step: int, progress, stage_opts=None):
        """One pass over the shuffled train split; ``stepper`` runs the views and the loss
        (:class:`_Step`, under DDP when several processes share each global batch)."""
        cfg, bp = self.cfg, self.bp
        model.train()
        stage_opts = stage_opts or {}
        order_gen = batch_order(cfg.seed, epoch)
        view_gen = _view_generator(cfg.seed, epoch, 2)
        n_batches = math.ceil(len(split) / cfg.batch_size)
        task = progress.add_task(f"epoch {epoch}/{cfg.epochs}", total=n_batches, loss=float("nan"))
        scaler = self.precision.scaler
        sums: dict[str, float] = {}
        stage_sums: dict[str, float] = {}
        seen = 0
        self._epoch_stages(model, stepper, stage_opts, split, epoch, stage_sums)
        if cfg.grad_accum_tail != "carry":  # carry: the last epoch's incomplete group joins this epoch's first
            model.zero_grad(set_to_none=True)
        step_stages = [s for s in cfg.stages if s.every == "step"]
        for i, batch in enumerate(_global_batches(split, cfg.batch_size, self.device, self.world, shuffle=True, generator=order_gen)):
            batches, count, size = _share(make_views(batch, bp, view_gen), self.world, self.device)  # views drawn for the global batch
            if step_stages and i % cfg.grad_accum == 0:
                for stage in step_stages:  # before the main step, on the same batch
                    self._stage_step(model, stepper, stage, stage_opts[stage.name], batches, count, size, stage_sums, epoch)
            stepping = steps_after(i, n_batches, cfg)
            with self._sync(stepper, stepping):
                with self.precision.autocast():
                    total, parts = stepper(batches, epoch=epoch)
                loss, *values = self.world.mean([float(total.detach()), *(float(v) for v in parts.values())], count, size)
                if not math.isfinite(loss):
                    raise ComposerError(f"epoch {epoch}, batch {i}: the loss is {loss}; lower training.lr or set training.grad_clip")
                weighted = self._weighted(total, count, size)
                scaled = weighted / cfg.grad_accum if cfg.grad_accum_reduction == "mean" else weighted
                (scaler.scale(scaled) if scaler is not None else scaled).backward()
            if cfg.grad_clip_at == "backward":  # the running sum, after every backward (no scaler: refused with fp16)
                self._clip(model)
            if stepping:
                if scaler is not None:
                    scaler.unscale_(optimizer)
                if cfg.grad_clip_at == "step":
                    self._clip(model)
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                model.zero_grad(set_to_none=True)  # a stage's parameters too: the main loss reaches them
                step += 1
                if scheduler is not None and cfg.scheduler.type in STEP_SCHEDULERS:
                    scheduler.step()
            seen += size
            sums["loss"] = sums.get("loss", 0.0) + loss * size
            for name, value in zip(parts, values):
                sums[f"loss/{name}"] = sums.get(f"loss/{name}", 0.0) + value * size
            progress.update(task, advance=1, loss=sums["loss"] / seen)
        progress.remove_task(task)
        if cfg.grad_accum_tail == "drop":
            model.zero_grad(set_to_none=True)
        elif cfg.grad_accum_tail == "carry":  # every process the same carried mean, so process 0's checkpoint holds it
            self.world.mean_grads(list(model.parameters()))
        row = {"epoch": epoch, "split": "train", **{k: v / max(1, seen) for k, v in sums.items()}}
        row.update((k, v / max(1.0, stage_sums[f"{k}#n"])) for k, v in stage_sums.items() if not k.endswith("#n"))
        row["lr"] = optimizer.param_groups[-1]["lr"]
        return row, step

    def _warn_if_diverging(self, log: RunLog, row: dict) -> None:
        """A training loss that grew a hundredfold since the first epoch that summed the same terms
        (a term that starts later, ``losses[].from_epoch``, is a jump by design) is worth a warning."""
        terms = {k for k in row if k.startswith("loss/")}
        first = next((r["loss"] for r in log.rows if r.get("split") == "train" and r.get("loss") is not None
                      and {k for k in r if k.startswith("loss/")} == terms), None)
        if first is not None and math.isfinite(row["loss"]) and abs(row["loss"]) > DIVERGENCE_FACTOR * max(abs(first), 1e-8):
            warning = (f"warning: the training loss grew from {first:.4g} to {row['loss']:.4g} "
                       f"(x{abs(row['loss']) / max(abs(first), 1e-8):.0f}); training may be diverging: lower training.lr or set training.grad_clip")
            self._note(warning)

    def _epoch_line(self, epoch: int, train_row: dict, valid: dict, improved: bool) -> str:
        keys = [k for k in ("mae", "corr", "acc2_nonzero", "f1_nonzero", "acc7", "acc", "f1_weighted") if k in valid]
        parts = " ".join(f"{k} {valid[k]:.4f}" for k in keys)
        mark = " *" if improved else ""  # an improved epoch
        return f"epoch {epoch:>3}  train loss {train_row['loss']:.4f}  valid loss {valid['loss']:.4f} {parts}{mark}"

    def _summary(self, log: RunLog, best, best_epoch, counts: dict[str, int], seconds: float) -> dict:
        at_best = {r["split"]: {k: v for k, v in r.items() if k not in ("epoch", "split")} for r in log.rows if r["epoch"] == best_epoch}
        last_epoch = max((r["epoch"] for r in log.rows), default=0)
        return {
            "blueprint": self.bp.name,
            "run_dir": str(self.run_dir),
            "epochs_run": last_epoch,
            "best_epoch": best_epoch,
            "monitor": {"metric": self.monitor, "split": "valid", "direction": self.direction, "best": best},
            "best": at_best,
            "kept": {"rule": self.cfg.monitor.keep, "epoch": best_epoch if self.cfg.monitor.keep == "best" else max(
                (r["epoch"] for r in log.rows if r["split"] == "valid" and math.isfinite(r.get(self.monitor, math.nan))), default=None)},
            "parameters": counts["model"],
            "training_only_parameters": counts["training_only"],
            "device": str(self.device),
            "precision": self.precision.name,
            "seed": self.cfg.seed,
            "data": self.data_record,
            "seconds": round(seconds, 2),
            "files": {
                "metrics": "metrics.jsonl",
                "metrics_csv": "metrics.csv",
                "block_logs": "block_logs.jsonl",
                "best": "best.safetensors",
                "last": "last.ckpt",
                "data": DATA_RECORD,
            },
        }

    def _print_summary(self, summary: dict) -> None:
        from rich.table import Table

        best = summary["best"]
        splits = [s for s in ("train", "valid", "test") if s in best]
        table = Table(title=f"{summary['blueprint']}: best epoch {summary['best_epoch']} by valid {summary['monitor']['metric']}")
        table.add_column("metric")
        for s in splits:
            table.add_column(s, justify="right")
        names = []
        for s in splits:
            names += [k for k in best[s] if k not in names and k != "lr" and not k.startswith("loss/")]
        for name in names:
            table.add_row(name, *[f"{best[s][name]:.4f}" if isinstance(best[s].get(name), (int, float)) else "" for s in splits])
        self.console.print(table)
        self.console.print(f"run folder: {summary['run_dir']} ({summary['seconds']} s)")


def train(
    blueprint,
    data: Any = None,
    out: str | Path | None = None,
    *,
    overrides=(),
    epochs: int | None = None,
    seed: int | None = None,
    resume: bool = False,
    device: str | None = None,
    progress: bool = True,
    on_epoch_end=None,
    overwrite: bool = False,
) -> TrainResult:
    """Train a blueprint; returns a :class:`TrainResult` (run folder, summary, best model).

    ``blueprint``: a path, YAML text, dict or loaded blueprint; ``overrides``: ``path=value``
    strings; ``data``: see :func:`composer.data.load_data` (default: ``training.data``, the
    synthetic set); ``out``: the run folder (default ``runs/<name>``); ``epochs`` and ``seed``
    override ``training.epochs`` / ``training.seed``; ``resume`` continues from
    ``<out>/last.ckpt``; ``device``: ``auto`` (CUDA, then CPU), ``cpu``, ``cuda:N``.
    ``on_epoch_end(epoch, {split: row})`` is called after each epoch's checkpoint (rows as in
    ``metrics.jsonl``); an exception it raises (e.g. a pruned search trial) ends training.
    A run folder that already holds a run is refused unless ``resume`` (continue it) or
    ``overwrite`` (replace it); a run that never gets a finite validation value raises.
    Under ``torchrun`` (``WORLD_SIZE > 1``) the processes train one model data-parallel
    (:mod:`composer.train.distributed`); process 0 alone writes the run folder.
    """
    overrides = list(overrides)
    if epochs is not None:
        overrides.append(f"training.epochs={int(epochs)}")
    if seed is not None:
        overrides.append(f"training.seed={int(seed)}")
    bp = as_blueprint(blueprint, overrides)
    trainer = Trainer(bp, data, out, device=device, progress=progress, on_epoch_end=on_epoch_end, overwrite=overwrite)
    try:
        result = trainer.fit(resume=resume)
        trainer.world.close(synchronise=True)
        return result
    finally:
        trainer.world.close()
