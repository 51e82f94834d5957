"""MMSA 2.2.1 (thuiar/MMSA, MIT) as a test oracle: its modules loaded without its package __init__.

``MMSA/__init__.py`` imports its runner, which needs GPU-only libraries; the model classes,
losses and configuration loader need only torch (and ``easydict``). :func:`load` imports the
named MMSA modules under stand-in parent packages and restores ``sys.modules`` afterwards, so
nothing of MMSA stays imported. Tests skip with the reason when MMSA is not installed
(``bash scripts/setup.sh`` installs it: ``pip install --no-deps mmsa==2.2.1 easydict``).
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import importlib.util
import sys
import types
from unittest import mock

import pytest

#: Stand-in packages: name -> (folder under MMSA/ or None, attributes the real __init__ would export
#: that the loaded modules import and never use).
_PACKAGES = {
    "MMSA": ("", {}),
    "MMSA.trains": ("trains", {}),
    "MMSA.trains.singleTask": ("trains/singleTask", {}),
    "MMSA.trains.multiTask": ("trains/multiTask", {}),
    "MMSA.utils": (None, {"MetricsTop": None, "dict_to_str": None}),
    "MMSA.models": ("models", {}),
    "MMSA.models.singleTask": ("models/singleTask", {}),
    "MMSA.models.subNets": ("models/subNets", {"BertTextEncoder": None}),
}


def load(*modules: str, exports: dict[str, tuple[str, ...]] | None = None) -> dict[str, types.ModuleType]:
    """Import MMSA modules (``"MMSA.models.singleTask.TFN"``, ``"MMSA.config"``) around the package __init__.

    ``exports`` names, per stand-in package, submodules whose public names the package must
    re-export first (``{"MMSA.models.subNets": ("FeatureNets",)}`` for ``from ..subNets import SubNet``).
    Skips the calling test when MMSA (or a module it imports) is missing.
    """
    spec = importlib.util.find_spec("MMSA")
    if spec is None:
        pytest.skip("MMSA 2.2.1 is not installed (pip install --no-deps mmsa==2.2.1 easydict)")
    root = spec.submodule_search_locations[0]
    saved = {k: v for k, v in sys.modules.items() if k == "MMSA" or k.startswith("MMSA.")}
    try:
        for name, (folder, attrs) in _PACKAGES.items():
            package = types.ModuleType(name)
            package.__path__ = [f"{root}/{folder}".rstrip("/")] if folder is not None else []
            package.__dict__.update(attrs)
            sys.modules[name] = package
        for name, subs in (exports or {}).items():
            for sub in subs:
                module = importlib.import_module(f"{name}.{sub}")
                sys.modules[name].__dict__.update({k: getattr(module, k) for k in getattr(module, "__all__", [])})
        return {name: importlib.import_module(name) for name in modules}
    except ImportError as exc:
        pytest.skip(f"MMSA's modules need {exc}")
    finally:
        for k in [k for k in sys.modules if k == "MMSA" or k.startswith("MMSA.")]:
            del sys.modules[k]
        sys.modules.update(saved)


def models() -> types.SimpleNamespace:
    """MMSA's single-task model classes (TFN, LMF, LF_DNN, EF_LSTM, MFN, Graph_MFN), its ``AMIO``
    wrapper's aligner ``AlignSubNet``, and ``get_config_regression``."""
    names = ["TFN", "LMF", "LF_DNN", "EF_LSTM", "MFN", "Graph_MFN"]
    loaded = load(
        *[f"MMSA.models.singleTask.{n}" for n in names], "MMSA.models.subNets.AlignNets", "MMSA.config",
        exports={"MMSA.models.subNets": ("FeatureNets", "AlignNets")},
    )
    return types.SimpleNamespace(
        **{n: getattr(loaded[f"MMSA.models.singleTask.{n}"], n) for n in names},
        AlignSubNet=loaded["MMSA.models.subNets.AlignNets"].AlignSubNet,
        get_config_regression=loaded["MMSA.config"].get_config_regression,
    )


#: A BERT small enough for CPU tests; MMSA's BERT models read only its sizes.
TINY_BERT = {"vocab_size": 60, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 37, "max_position_embeddings": 64, "type_vocab_size": 2}


@contextlib.contextmanager
def offline_bert(**sizes):
    """Build MMSA's BERT-based modules (MISA, MMIM, Self-MM, TFR-Net, BERT_MAG) offline.

    MMSA calls ``from_pretrained("bert-base-uncased")`` for its encoders and tokenizers. Inside
    this context, ``from_pretrained`` on any ``transformers`` model class builds the class from a
    ``BertConfig`` of :data:`TINY_BERT` updated with ``sizes`` (random weights: the tests copy
    weights across anyway), passing on the keyword arguments a subclass's ``__init__`` takes
    (``BERT_MAG``'s ``args``); a tokenizer's ``from_pretrained`` returns a stand-in that MMSA only
    stores. Nothing is downloaded; the patches are undone on exit. Yields the ``BertConfig``.
    """
    from transformers import BertConfig, PreTrainedModel, PreTrainedTokenizerBase

    config = BertConfig(**{**TINY_BERT, **sizes})

    def model_from_pretrained(cls, name, *args, **kwargs):
        kwargs.pop("config", None)
        num_labels = kwargs.pop("num_labels", None)
        built = copy.deepcopy(config)
        if num_labels is not None:
            built.num_labels = num_labels
        return cls(built, *args, **kwargs)

    def tokenizer_from_pretrained(cls, name, *args, **kwargs):
        return types.SimpleNamespace(name_or_path=name)

    with mock.patch.object(PreTrainedModel, "from_pretrained", classmethod(model_from_pretrained)), \
            mock.patch.object(PreTrainedTokenizerBase, "from_pretrained", classmethod(tokenizer_from_pretrained)):
        yield config


def write_bert_pickle(path, lengths: dict[str, int], widths: dict[str, int], *, n: int = 6, seed: int = 0, vocab: int = 60) -> None:
    """An MMSA-layout unaligned pickle at test sizes, as MMSA's BERT models read it: per split
    ``text_bert`` ``(N, 3, L)`` (word-piece ids with [CLS] = 1 first, the attention mask, zero
    segment ids), ``text`` as 8-wide features (unread by a tokens modality), each of ``widths``'
    modalities (audio, vision) with its ``<m>_lengths``, ``regression_labels`` and ``id``."""
    import pickle
    from pathlib import Path

    import numpy as np

    rng = np.random.default_rng(seed)
    steps = lengths["text"]
    data = {}
    for split in ("train", "valid", "test"):
        valid = rng.integers(3, steps + 1, size=n)
        mask = (np.arange(steps)[None] < valid[:, None]).astype(np.float32)
        ids = rng.integers(3, vocab, size=(n, steps)) * mask
        ids[:, 0] = 1
        d = {"text_bert": np.stack([ids, mask, np.zeros_like(mask)], axis=1).astype(np.float32),
             "text": rng.standard_normal((n, steps, 8)).astype(np.float32)}
        for m, w in widths.items():
            d[m] = rng.standard_normal((n, lengths[m], w)).astype(np.float32)
            d[f"{m}_lengths"] = rng.integers(2, lengths[m] + 1, size=n).tolist()
        d["regression_labels"] = np.round(rng.uniform(-3, 3, size=n), 1).astype(np.float32)
        d["id"] = np.array([f"{split}_{i}" for i in range(n)])
        data[split] = d
    Path(path).write_bytes(pickle.dumps(data))


def model_and_trainer(task: str, name: str) -> types.SimpleNamespace:
    """MMSA's model class (``models/<task>/<name>.py``), its module, its trainer class and module
    (``trains/<task>/<name>.py``, metrics stubbed: the tests compare losses, not MMSA's metric
    table) and ``get_config_regression``, e.g. ``model_and_trainer("singleTask", "MISA")``."""
    model_path, trainer_path = f"MMSA.models.{task}.{name}", f"MMSA.trains.{task}.{name}"
    loaded = load(model_path, trainer_path, "MMSA.config", exports={"MMSA.models.subNets": ("BertTextEncoder",)})
    trainer_module = loaded[trainer_path]
    trainer_module.MetricsTop = lambda mode: types.SimpleNamespace(getMetics=lambda metric: None)
    return types.SimpleNamespace(model=getattr(loaded[model_path], name), module=loaded[model_path],
                                 trainer=getattr(trainer_module, name), trainer_module=trainer_module,
                                 config=loaded["MMSA.config"].get_config_regression)


def copy_through_map(source: dict, ours, names: dict, keep: frozenset = frozenset()) -> None:
    """Load MMSA's tensors ``source`` into Composer's ``ours`` through ``names`` (MMSA name ->
    Composer name, None for a tensor MMSA keeps and nothing reads): every MMSA tensor named once and
    every Composer tensor filled exactly once, but ``keep`` (state Composer's blocks own, left as built)."""
    target = ours.state_dict()
    assert sorted(names) == sorted(source), f"unmapped MMSA tensors: {sorted(set(source) ^ set(names))}"
    used = [v for v in names.values() if v is not None]
    wanted = set(target) - set(keep)
    assert sorted(used) == sorted(wanted), f"Composer tensors mapped 0 or 2 times: {sorted(wanted ^ set(used))}"
    ours.load_state_dict({**{k: target[k] for k in keep}, **{names[k]: v for k, v in source.items() if names[k] is not None}})


# -- MMSA's BERT models beside their zoo blueprints (MMIM, Self-MM) -------------------------------

#: MMSA's audio and vision feature widths per dataset (``datasetCommonParams``: the unaligned releases).
FEATURE_WIDTHS = {"mosi": (5, 20), "mosei": (74, 35), "sims": (33, 709)}


def bert_base(dataset: str) -> dict:
    """BERT-base's sizes with the dataset's vocabulary (bert-base-chinese's 21,128 pieces on CH-SIMS)."""
    from composer.configs.text import BERT_BASE

    return {**BERT_BASE, "vocab_size": 21128 if dataset == "sims" else 30522}


def regression_config(mmsa, model: str, dataset: str, text_width: int, widths, **changes):
    """MMSA's ``get_config_regression(model, dataset)`` for a regression run on the CPU with the
    feature widths ``[text_width, *widths]`` (audio, vision) and ``changes``; MMSA's structure otherwise."""
    config = mmsa.config(model, dataset)
    config.update(feature_dims=[text_width, *widths], train_mode="regression", device="cpu", **changes)
    return config


def bert_module(mmsa, config, bert: dict, seed: int = 1):
    """MMSA's model class (``mmsa.model``) built from ``config`` with an offline BERT of sizes ``bert``, seeded."""
    import torch

    torch.manual_seed(seed)
    with offline_bert(**bert):
        return mmsa.model(config)


def zoo_model(blueprint, dataset: str, overrides, seed: int = 0):
    """Composer's model of ``blueprint`` at ``--dataset`` with ``--set`` ``overrides``, seeded."""
    import torch

    import composer

    torch.manual_seed(seed)
    return composer.compile_blueprint(composer.load_blueprint(blueprint, list(overrides), dataset=dataset))


def trainable(module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def no_dropout(*modules) -> None:
    """Every dropout off (BERT's attention reads its module's p), so training mode is deterministic."""
    from torch import nn

    for module in modules:
        for m in module.modules():
            if isinstance(m, nn.Dropout):
                m.p = 0.0


def full_size_counts(mmsa, config_at, blueprint, dataset: str) -> tuple[int, int]:
    """At the dataset's real feature widths and BERT-base: MMSA's trainable count (its module built
    on the meta device from ``config_at(text_width, (audio, vision))``) and the blueprint's (model and
    training-only parameters together)."""
    import torch

    import composer
    from composer.graph.size import estimate_size

    bert = bert_base(dataset)
    with torch.device("meta"), offline_bert(**bert):
        theirs = mmsa.model(config_at(bert["hidden_size"], FEATURE_WIDTHS[dataset]))
    size = estimate_size(composer.load_blueprint(blueprint, dataset=dataset).plan)
    return trainable(theirs), size.model_params + size.training_params


def imported_as_saved_by_mmsa(theirs, blueprint, folder, dataset: str, overrides):
    """Composer's model from MMSA's weights as MMSA saves them (``AMIO.state_dict()``: ``Model.`` before
    each name) through ``import_mmsa_weights``, loaded back with ``composer.load_model``."""
    import torch

    import composer
    from composer.zoo_import import import_mmsa_weights

    torch.save({f"Model.{k}": v for k, v in theirs.state_dict().items()}, folder / "mmsa.pth")
    out = import_mmsa_weights(folder / "mmsa.pth", blueprint, folder / "w.safetensors", dataset=dataset, overrides=list(overrides))
    return composer.load_model(out)


def assert_gradients_equal(ours, theirs, names: dict, unused: tuple[str, ...] = ()) -> int:
    """After a backward pass on both sides: the gradient of every parameter pair of ``names`` (MMSA
    name -> Composer name) equal (atol 1e-5, rtol 1e-4) and non-zero, but for MMSA names starting
    with one of ``unused``, which neither side may have a gradient for. Returns how many were compared."""
    import torch

    params, twins = dict(ours.named_parameters()), dict(theirs.named_parameters())
    compared = 0
    for mmsa_name, name in names.items():
        if mmsa_name.startswith(unused):
            assert params[name].grad is None and twins[mmsa_name].grad is None, name
            continue
        assert params[name].grad is not None and params[name].grad.abs().sum() > 0, name
        torch.testing.assert_close(params[name].grad, twins[mmsa_name].grad, atol=1e-5, rtol=1e-4, msg=lambda m: f"{name}: {m}")
        compared += 1
    return compared


class Stop(Exception):
    """Raised by a stand-in (``optim.Adam``, ``ReduceLROnPlateau``) to stop MMSA's ``do_train`` once it
    has built what a test reads."""


def epoch_end(model, epoch: int) -> None:
    """Every module's end-of-epoch hook, as the trainer calls them (``composer_epoch_end``)."""
    from composer.train.trainer import EPOCH_HOOK

    for module in model.modules():
        if callable(getattr(module, EPOCH_HOOK, None)):
            getattr(module, EPOCH_HOOK)(epoch)


# -- MMSA's trainer beside Composer's (MulT, MISA: tests/test_grad_clip_at.py, tests/test_mmsa_misa.py)


class EpochDone(Exception):
    """Raised where MMSA's ``do_train`` begins an epoch's training metrics, after the epoch's last step."""


def epoch_batches(bp, data, mmsa_text) -> list[dict]:
    """Composer's training batches of epoch 1 in its order (``batch_order(seed, 1)``) from the
    pickle ``data``, in MMSA's dict layout: ``text`` is ``mmsa_text(batch)``, ``labels: {"M": label}``."""
    from composer.data import load_data
    from composer.train.trainer import batch_order

    cfg = bp.training
    split = load_data(bp, data)["train"]
    return [{"text": mmsa_text(b), "audio": b["audio"], "vision": b["vision"], "labels": {"M": b["label"]}}
            for b in split.batches(cfg.batch_size, device="cpu", shuffle=True, generator=batch_order(cfg.seed, 1))]


def mmsa_one_epoch(mmsa, args, model, batches: list[dict], monkeypatch) -> None:
    """MMSA's own ``do_train`` (``mmsa.trainer(args)``) on ``model`` for one epoch of ``batches``,
    stopped at the epoch's training metrics (:class:`EpochDone`). Its ``optim.Adam`` is swapped for
    plain SGD at the same learning rate: Adam turns the float noise of gradients that are zero in
    exact arithmetic into full-size steps that differ between two correct implementations. Its
    ``ReduceLROnPlateau`` (where it has one; torch 2.13 has no ``verbose``) is unused before validation."""
    import torch

    monkeypatch.setattr(mmsa.trainer_module, "optim", types.SimpleNamespace(Adam=lambda params, lr: torch.optim.SGD(params, lr=lr)))
    if hasattr(mmsa.trainer_module, "ReduceLROnPlateau"):
        monkeypatch.setattr(mmsa.trainer_module, "ReduceLROnPlateau", lambda optimizer, **kw: None)
    trainer = mmsa.trainer(args)

    def stop(*_):
        raise EpochDone

    trainer.metrics = stop
    with pytest.raises(EpochDone):
        trainer.do_train(model, {"train": batches})


def trained_from(bp, start: dict, names: dict, out, data, monkeypatch, prepare=None) -> dict:
    """Composer's trainer on ``bp`` and the pickle ``data``, its model starting from MMSA's
    tensors ``start`` (copied through ``names``, every tensor on both sides once; then ``prepare(model)``
    if given): the trained tensors under MMSA's names (those ``names`` maps to a Composer tensor)."""
    from composer.train import trainer as trainer_module
    from composer.train.checkpoint import load_checkpoint

    import composer

    compile_real = trainer_module.compile_blueprint

    def with_mmsas_weights(blueprint):
        model = compile_real(blueprint)
        copy_through_map(start, model, names)
        if prepare is not None:
            prepare(model)
        return model

    monkeypatch.setattr(trainer_module, "compile_blueprint", with_mmsas_weights)
    try:
        composer.train(bp, data, out=out, progress=False, device="cpu")
    finally:
        monkeypatch.setattr(trainer_module, "compile_blueprint", compile_real)
    weights = load_checkpoint(out / "last.ckpt")["model"]
    return {k: weights[v] for k, v in names.items() if v is not None}
