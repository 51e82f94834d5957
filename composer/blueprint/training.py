"""The ``training`` section of a blueprint: optimiser, schedule, stopping, views, data."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

__all__ = ["TrainingConfig", "ReinitConfig", "ParamGroupConfig", "SchedulerConfig", "ViewConfig", "MonitorConfig", "DataConfig", "StageConfig", "TrackingConfig", "MLflowConfig"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)  # lr: .inf / nan are refused


class ParamGroupConfig(_Strict):
    """Optimiser settings for the parameters of some blocks (e.g. a smaller lr for BERT).

    ``params`` narrows the group to the parameters of those blocks whose name contains one of
    its strings (matched as ``training.no_weight_decay`` matches); two groups may then share a
    block as long as no parameter is in both. ``lr: 0`` keeps the group's parameters at their
    initial values under every optimiser and scheduler (MMSA's MLMF: ``fusion_weights``,
    ``fusion_bias``); unlike freezing, they still take part in the gradient and its clipping."""

    blocks: list[str] = Field(min_length=1, description="Block ids whose parameters form this group.")
    params: list[Annotated[str, StringConstraints(min_length=1)]] | None = Field(
        default=None,
        min_length=1,
        description="Only the parameters of `blocks` whose name (e.g. `fusion.weights`) contains one of these strings (default: all).",
    )
    lr: float | None = Field(default=None, ge=0, description="Default: training.lr; 0: the group's parameters never change.")
    weight_decay: float | None = Field(default=None, ge=0)


class StageConfig(_Strict):
    """An update stage with its own objective and optimiser, run before the main update.

    The stage's optimiser steps the parameters of ``update`` (blocks, template uses, or losses
    by name: a loss network such as MMIM's bound estimator) on the sum of the ``objective``
    terms (loss names or loss groups, with their weights). Those parameters leave the main
    optimiser, which steps everything else on the total loss (MMIM, Han et al. 2021: the
    bound's networks on -lld first, then the model on the task loss, the CPC terms and the
    bound). ``every: epoch``: a pass over ``fraction`` of the epoch's batches before the main
    pass (MMSA's MMIM trainer; 0.5 on MOSEI); ``every: step``: on each batch before the main step.
    """

    name: str = Field(description="The stage's name (logs: train rows get `stage/<name>/loss`).")
    objective: list[str] = Field(min_length=1, description="Loss names or loss groups whose weighted sum this stage minimises.")
    update: list[str] = Field(min_length=1, description="Blocks, template uses or losses (by name) whose parameters this stage's optimiser steps.")
    every: Literal["epoch", "step"] = "epoch"
    fraction: float = Field(default=1.0, gt=0.0, le=1.0, description="every: epoch: the share of the epoch's batches the stage runs on (from the start of the epoch's order).")
    optimizer: Literal["adam", "adamw", "sgd"] | None = Field(default=None, description="Default: training.optimizer.")
    lr: float | None = Field(default=None, gt=0, description="Default: training.lr.")
    weight_decay: float | None = Field(default=None, ge=0, description="Default: training.weight_decay.")
    grad_clip: float | None = Field(default=None, gt=0, description="Clip the stage's gradient norm (default: training.grad_clip).")
    weight: float = Field(
        default=1.0, gt=0, description="Multiplier of the stage's objective (its terms keep their weights; MMIM's bound stage: 1/beta, so it minimises -lld itself)."
    )


class SchedulerConfig(_Strict):
    type: Literal["none", "cosine", "step", "plateau", "linear_warmup"] = "none"
    warmup_steps: int = Field(default=0, ge=0, description="linear_warmup: steps of linear increase.")
    step_size: int = Field(default=10, ge=1, description="step: epochs between decays.")
    gamma: float = Field(default=0.1, gt=0, le=1, description="step/plateau: decay factor.")
    patience: int = Field(default=2, ge=0, description="plateau: epochs without improvement before decay.")


class ViewConfig(_Strict):
    """An extra view of each training batch.

    ``temporal_mask``: each time step of each listed modality is dropped with probability
    ``rate`` (float features zeroed, text tokens replaced by the unknown token, special
    tokens kept); the masks are available to losses as ``VIEW:mask.MODALITY``.
    """

    type: Literal["temporal_mask"] = "temporal_mask"
    rate: float = Field(default=0.5, ge=0.0, le=1.0)
    rate_range: tuple[float, float] | None = Field(
        default=None, description="Draw the rate per batch uniformly from this range instead of `rate`."
    )
    modalities: list[str] | None = Field(default=None, description="Modalities to mask (default: all).")
    rates: dict[str, Annotated[float, Field(ge=0.0, le=1.0)]] | None = Field(
        default=None,
        description="A rate per modality (e.g. {text: 0.1, audio: 0.5}) instead of `rate`/`rate_range`; the listed modalities are masked.",
    )
    resample: Literal["batch", "split"] = Field(
        default="batch",
        description=(
            "batch: new masks for every batch (each epoch differs); split: each split's masks are drawn once, per "
            "modality from its seed (`seeds`), and kept for every epoch, as EMT-DLFR's code does (data/load_data.py): "
            "a sample always loses the same steps, and a step dropped at one rate is dropped at every higher rate."
        ),
    )
    seeds: dict[str, Annotated[int, Field(ge=0, le=2**32 - 1)]] | None = Field(
        default=None,
        description=(
            "resample: split: the seed of each modality's draw (EMT-DLFR: {text: 111, audio: 1111, vision: 11111}); "
            "default: training.seed plus the modality's position."
        ),
    )
    unk_token: int = Field(default=100, description="Token id that replaces masked text tokens ([UNK] in BERT).")
    special_tokens: list[int] = Field(default=[101, 102, 0], description="Token ids never masked ([CLS], [SEP], [PAD]).")


class MonitorConfig(_Strict):
    metric: str = Field(
        default="loss",
        description="Validation metric for early stopping and best checkpoint: a task metric, `loss`, or one loss term `loss/<name>`.",
    )
    direction: Literal["minimize", "maximize", "auto"] = "auto"
    view: str = Field(
        default="main",
        description="Whose predictions the validation metrics score: the batch as given (main) or a training view (e.g. incomplete), drawn with fixed seeds.",
    )
    keep: Literal["best", "last"] = Field(
        default="best",
        description="Which weights the run keeps as its model: the best epoch by `metric`, or the last epoch (authors who select nothing).",
    )


class ReinitConfig(_Strict):
    """Re-initialise weights after the model is built, seeded by ``training.seed``; blocks in
    ``skip`` (a pretrained text encoder) keep theirs.

    ``tensors: linear`` (default): every ``nn.Linear``'s weight is drawn and its bias set to
    ``bias`` (GLoMo's authors' BERT-style ``init_weights``: ``init: normal``, std 0.02, bias 0).
    ``tensors: matrices``: every trainable parameter with two or more dimensions (linear, RNN and
    convolution weights, loss networks too), in the model's parameter order; vectors keep their
    values (MMSA's MMIM: ``xavier_normal_`` on every such tensor outside BERT). ``init: normal``
    draws N(0, ``std``); ``init: xavier_normal`` is ``torch.nn.init.xavier_normal_`` (gain 1)."""

    init: Literal["normal", "xavier_normal"] = Field(default="normal", description="normal: N(0, std); xavier_normal: N(0, 2 / (fan_in + fan_out)).")
    tensors: Literal["linear", "matrices"] = Field(
        default="linear", description="linear: every nn.Linear (weight drawn, bias set); matrices: every trainable parameter of dimension >= 2."
    )
    std: float | None = Field(default=None, gt=0, le=10, description="init normal: standard deviation of the weights (required there).")
    bias: float | None = Field(default=None, description="tensors linear: value of every bias (default 0).")
    skip: list[str] = Field(default_factory=list, description="Block ids left as built (e.g. [text_bert]).")

    @model_validator(mode="after")
    def _consistent(self) -> "ReinitConfig":
        if self.init == "normal" and self.std is None:
            raise ValueError("reinit.init normal needs std (the weights' standard deviation)")
        if self.init == "xavier_normal" and self.std is not None:
            raise ValueError("reinit.init xavier_normal takes its std from each tensor's fans; remove std")
        if self.tensors == "matrices" and self.bias is not None:
            raise ValueError("reinit.tensors matrices leaves biases (vectors) as built; bias applies to tensors linear only")
        return self


#: The name of an extra label: a loss reads it as ``label.<name>``, so no dots or colons.
LabelName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=64)]


class DataConfig(_Strict):
    """Where batches come from: the built-in synthetic set (default) or files (docs/data.md).

    ``pickle``: a standard-layout feature pickle at ``path``; ``mag_pickle``: the word-aligned
    MAG/MIB pickle at ``path``; ``csd``: CMU-MultimodalSDK computational sequences, one per
    modality plus ``label`` in ``paths``, split into folds by ``split``.
    """

    source: Literal["synthetic", "pickle", "mag_pickle", "csd"] = "synthetic"
    path: str | None = None
    paths: dict[str, str] = Field(
        default_factory=dict, description="csd: one .csd file per modality, and `label` for the labels' file."
    )
    split: str | None = Field(
        default=None, description="csd: 'cmu_mosi' (the SDK's standard folds), a JSON split file or the SDK's *_std_folds.py (read as literals)."
    )
    vocab: str | None = Field(
        default=None, description="mag_pickle / csd: WordPiece vocab.txt that turns words into ids for a tokens modality."
    )
    label_columns: list[Annotated[int, Field(ge=0)]] | None = Field(
        default=None, description="csd: columns of the label features to keep (CMU-MOSEI: 0 = sentiment); all by default."
    )
    normalize: list[str] = Field(
        default_factory=list,
        description=(
            "Modalities to z-normalise per feature with the train split's mean and (population) std over valid steps: "
            "(x - mean) / (std + 1e-6) on the valid steps of every split, padding left at 0 (CH-SIMS audio and vision, EMT-DLFR)."
        ),
    )
    samples: dict[Literal["train", "valid", "test"], Annotated[int, Field(ge=1, le=1_000_000)]] = Field(
        default_factory=lambda: {"train": 512, "valid": 128, "test": 128},
        description="Synthetic samples per split (1 to 1,000,000 each).",
    )
    noise: float = Field(default=0.1, ge=0.0, description="Synthetic: observation noise.")
    incongruent: float = Field(
        default=0.2, ge=0.0, le=1.0, description="Synthetic: share of incongruent samples (the modalities disagree)."
    )
    seed: int = Field(default=0, ge=0, le=2**32 - 1, description="Synthetic: generator seed.")
    label_key: str = Field(default="regression_labels", description="Pickle: key of the labels.")
    extra_labels: dict[LabelName, Annotated[str, Field(min_length=1)]] = Field(
        default_factory=dict,
        description=(
            "More labels per sample, name -> pickle key (CH-SIMS' unimodal labels: {text: regression_labels_T, audio: "
            "regression_labels_A, vision: regression_labels_V}); each batch carries `label_<name>` and a loss reads it as "
            "`label.<name>`. The synthetic set draws them (a modality's name: that modality's own cue)."
        ),
    )


class MLflowConfig(_Strict):
    """An MLflow tracking store and experiment (docs/training.md#tracking)."""

    uri: str = Field(
        min_length=1, description="Tracking URI: sqlite:///runs/mlflow.db, file:./mlruns, http://host:5000, ... (composer train --mlflow URI replaces it)."
    )
    experiment: str | None = Field(default=None, min_length=1, description="Experiment name (made when missing; default: the blueprint's name).")


class TrackingConfig(_Strict):
    """Experiment trackers every run of the blueprint reports to, besides the run folder's own
    files (rank 0 only; the extra ``fusion-composer[tracking]`` installs both)."""

    tensorboard: bool = Field(default=False, description="Event files in <run>/tensorboard/ (composer train --tensorboard turns it on too).")
    mlflow: MLflowConfig | None = Field(default=None, description="An MLflow run per training run: parameters, per-epoch metrics, tags.")


class TrainingConfig(_Strict):
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    momentum: float = Field(default=0.9, ge=0, description="sgd only.")
    batch_size: int = Field(default=32, ge=1)
    epochs: int = Field(default=10, ge=1)
    early_stop: int | None = Field(default=None, ge=1, description="Stop after this many epochs without improvement.")
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    grad_accum: int = Field(default=1, ge=1, description="Batches per optimiser step.")
    grad_accum_reduction: Literal["mean", "sum"] = Field(
        default="mean", description="mean: the step follows the batches' average gradient; sum: their sum (code that never divides by grad_accum)."
    )
    grad_accum_tail: Literal["step", "drop", "carry"] = Field(
        default="step",
        description="An epoch's last, incomplete group of grad_accum batches: step: one optimiser step on it; drop: no step, its "
        "gradients discarded; carry: no step, its gradients added to the next epoch's first group (kept in last.ckpt).",
    )
    grad_clip: float | None = Field(default=None, gt=0, description="Clip the gradient norm to this value.")
    grad_clip_value: float | None = Field(
        default=None, gt=0, description="Clip every gradient element to [-value, value] (MMSA's MulT: 0.6)."
    )
    grad_clip_at: Literal["step", "backward"] = Field(
        default="step",
        description="When grad_clip / grad_clip_value apply: step: to the accumulated gradient, once before each optimiser "
        "step; backward: to the running gradient sum after every backward pass (MMSA's MulT and MISA trainers, with "
        "update_epochs). Refused with precision fp16.",
    )
    no_weight_decay: list[str] = Field(
        default_factory=list,
        description="Parameters whose name contains one of these strings get no weight decay (e.g. [bias, LayerNorm.weight]).",
    )
    reset_optimizer: Literal["never", "epoch"] = Field(
        default="never",
        description="epoch: a fresh optimiser (moments zeroed) at the start of every epoch, at that epoch's learning rate.",
    )
    reinit: ReinitConfig | None = Field(default=None, description="Re-initialise Linear layers or every matrix after the build (see ReinitConfig).")
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    param_groups: list[ParamGroupConfig] = Field(default_factory=list)
    seed: int = Field(default=0, ge=0, le=2**32 - 1, description="Seed of initialisation, batch order and views.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        default="auto", description="auto: bf16 autocast on CUDA when supported, fp32 on CPU."
    )
    compile: Literal["none", "default", "reduce-overhead", "max-autotune"] = Field(
        default="none",
        description="Run the model under torch.compile with this mode (reduce-overhead: CUDA graphs for static shapes); none: eager.",
    )
    compile_backend: Literal["inductor", "aot_eager"] = Field(
        default="inductor", description="torch.compile backend: inductor (fast kernels) or aot_eager (no code generation; for checking)."
    )
    cpu_threads: int | None = Field(
        default=None, ge=1, description="torch threads when training on CPU (default: torch's choice, one per core)."
    )
    views: dict[str, ViewConfig] = Field(default_factory=dict, description="Extra views of each batch.")
    stages: list[StageConfig] = Field(
        default_factory=list,
        description="Update stages with their own objective and optimiser, run in order before the main update (MMIM's bound first).",
    )
    data: DataConfig = Field(default_factory=DataConfig)
    tracking: TrackingConfig = Field(
        default_factory=TrackingConfig, description="Experiment tracking: TensorBoard and/or MLflow (docs/training.md#tracking)."
    )

    @model_validator(mode="after")
    def _views_named(self) -> "TrainingConfig":
        if "main" in self.views:
            raise ValueError("'main' is the batch as given; name extra views otherwise")
        return self

    @model_validator(mode="after")
    def _clip_at_backward(self) -> "TrainingConfig":
        if self.grad_clip_at != "backward":
            return self
        if self.grad_clip is None and self.grad_clip_value is None:
            raise ValueError("training.grad_clip_at: backward clips nothing: set training.grad_clip (norm) or "
                             "training.grad_clip_value (element-wise), or leave grad_clip_at at step")
        if self.precision == "fp16":
            raise ValueError("training.grad_clip_at: backward needs unscaled gradients after every backward pass, but fp16's "
                             "GradScaler unscales once per step (and clamping a scaled gradient would hide an overflow from it); "
                             "use precision bf16 or fp32, or grad_clip_at: step")
        return self

    @model_validator(mode="after")
    def _carry_without_stages(self) -> "TrainingConfig":
        if self.grad_accum_tail == "carry" and self.stages:
            raise ValueError("training.grad_accum_tail: carry keeps gradients from one epoch to the next, but each update of "
                             "training.stages zeroes the model's gradients; use grad_accum_tail step or drop with stages")
        return self
