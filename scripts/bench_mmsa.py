"""CPU training-step time of the zoo's blueprints against MMSA 2.2.1's own modules (issue #24).

For each zoo model MMSA implements, at MMSA's configuration for one dataset (its real feature
widths, sequence lengths and batch size): MMSA's module built from ``get_config_regression``, the
zoo blueprint compiled with the options that read padding as MMSA does (tests/test_mmsa_zoo.py's
``MMSA_OPTIONS``; MulT takes no lengths, so Composer gets the batch without them, as MMSA reads it), MMSA's weights copied in through the import-weights name map, one padded batch
(padded steps zero, as MMSA's pickles hold them). One training step is forward, L1 loss against
the label, backward, Adam step; the two modules' steps run in alternation (``interleaved_times``),
so machine drift hits both alike. MMSA's data loader averages audio and vision for the models with
``need_normalized`` before the model runs: done once, outside the timing, on both sides; AMIO's
aligner (MFN, Graph-MFN) is timed, Composer's ``pool`` blocks too. Composer's default (masking
padding) is timed beside it for information.

    .venv/bin/python scripts/bench_mmsa.py -o docs/bench-mmsa-cpu.json [--repeats 15] [--models tfn lmf]

Needs the source checkout (tests/ for the MMSA oracle loader) and MMSA installed (scripts/setup.sh).
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import composer  # noqa: E402
from composer.bench import interleaved_times, machine_info  # noqa: E402
from composer.testing import padded_batch  # noqa: E402
from composer.zoo_import import NAME_MAPS  # noqa: E402

import mmsa_oracle  # noqa: E402
from test_mmsa_zoo import MMSA_OPTIONS, MODEL_ALIGNED, NORMALIZED, ONE_TIME_AXIS, SUBNETS_AS_MMSA, mmsa_state, zero_padding  # noqa: E402

SINGLE = {"tfn": "TFN", "lmf": "LMF", "lf_dnn": "LF_DNN", "ef_lstm": "EF_LSTM", "mfn": "MFN", "graph_mfn": "Graph_MFN"}
MULTI = {"mlf_dnn": "MLF_DNN", "mtfn": "MTFN", "mlmf": "MLMF"}
#: Models that take no lengths (MulT): the same computation is Composer's on a batch without them.
NO_LENGTHS = {"mult": "MULT"}
ORDER = ("text", "audio", "vision")  # MMSA's feature_dims / seq_lens order


def oracle() -> types.SimpleNamespace:
    loaded = mmsa_oracle.load(
        *[f"MMSA.models.singleTask.{c}" for c in (*SINGLE.values(), *NO_LENGTHS.values())],
        *[f"MMSA.models.multiTask.{c}" for c in MULTI.values()],
        "MMSA.models.subNets.AlignNets", "MMSA.config", exports={"MMSA.models.subNets": ("FeatureNets", "AlignNets")},
    )
    classes = {n: getattr(loaded[f"MMSA.models.singleTask.{c}"], c) for n, c in {**SINGLE, **NO_LENGTHS}.items()}
    classes.update({n: getattr(loaded[f"MMSA.models.multiTask.{c}"], c) for n, c in MULTI.items()})
    return types.SimpleNamespace(classes=classes, AlignSubNet=loaded["MMSA.models.subNets.AlignNets"].AlignSubNet,
                                 config=loaded["MMSA.config"].get_config_regression)


def pair(mmsa, name: str, dataset: str):
    """(Composer model with MMSA's padding options, Composer's default model, MMSA module, config)."""
    config = mmsa.config(name, dataset)
    config.train_mode, config.device = "regression", "cpu"
    lengths = dict(zip(ORDER, config.seq_lens))
    if name in ONE_TIME_AXIS:  # aligned data: one time axis, the text's length
        lengths = {m: lengths["text"] for m in ORDER}
    sizes = [f"modalities.{m}.features={w}" for m, w in zip(ORDER, config.feature_dims)]
    sizes += [f"modalities.{m}.length={n}" for m, n in lengths.items()]
    sizes += [f"blocks.norm.steps={lengths['text']}"] if name == "ef_lstm" else []
    aligner = None
    if name in MODEL_ALIGNED:
        config.seq_lens = [lengths[m] for m in ORDER]
        aligner = mmsa.AlignSubNet(config, "avg_pool")
    if name == "ef_lstm":
        config.seq_lens = lengths["text"]
    torch.manual_seed(1)
    theirs = mmsa.classes[name](config)
    options = [] if name in NO_LENGTHS else MMSA_OPTIONS.get(name, SUBNETS_AS_MMSA)
    path = ROOT / "blueprints" / "zoo" / f"{name}.yaml"
    as_mmsa = composer.compile_blueprint(composer.load_blueprint(path, [*sizes, *options], dataset=dataset))
    default = composer.compile_blueprint(composer.load_blueprint(path, sizes, dataset=dataset))
    names = NAME_MAPS[name](as_mmsa)
    state = mmsa_state(theirs)
    for ours in (as_mmsa, default):
        ours.load_state_dict({names[k]: v for k, v in state.items() if names[k] is not None})
    return as_mmsa, default, theirs, aligner, config


def step(module, forward, optimiser, label):
    def run():
        torch.nn.functional.l1_loss(forward(), label).backward()
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
    return run


def bench(mmsa, name: str, dataset: str, repeats: int) -> dict:
    as_mmsa, default, theirs, aligner, config = pair(mmsa, name, dataset)
    batch = zero_padding(padded_batch(as_mmsa, int(config.batch_size)))
    same = {k: v for k, v in batch.items() if not k.endswith("_lengths")} if name in NO_LENGTHS else batch  # MMSA's reading
    text, audio, vision = batch["text"], batch["audio"], batch["vision"]
    if NORMALIZED.get(name, name in MULTI):  # the data loader's averaging, outside the timing
        audio, vision = audio.mean(1, keepdim=True), vision.mean(1, keepdim=True)
    label = batch["label"].view(-1, 1)
    for m in (as_mmsa, default, theirs):
        m.train()

    def mmsa_forward():
        inputs = aligner(text, audio, vision) if aligner is not None else (text, audio, vision)
        return theirs(*inputs)["M"]

    optimisers = {k: torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-6)
                  for k, m in (("as_mmsa", as_mmsa), ("default", default), ("mmsa", theirs))}
    times = interleaved_times({
        "mmsa": step(theirs, mmsa_forward, optimisers["mmsa"], label),
        "as_mmsa": step(as_mmsa, lambda: as_mmsa(same)["prediction"], optimisers["as_mmsa"], label),
        "default": step(default, lambda: default(batch)["prediction"], optimisers["default"], label),
    }, torch.device("cpu"), warmup=3, repeats=repeats)
    return {
        "model": name, "dataset": dataset, "batch_size": int(config.batch_size),
        "feature_dims": list(config.feature_dims), "params": sum(p.numel() for p in theirs.parameters() if p.requires_grad),
        "mmsa_step_ms": round(times["mmsa"], 2), "composer_mmsa_options_step_ms": round(times["as_mmsa"], 2),
        "composer_default_step_ms": round(times["default"], 2),
        "ratio": round(times["as_mmsa"] / times["mmsa"], 3), "ratio_default": round(times["default"] / times["mmsa"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--models", nargs="*", default=[*SINGLE, *NO_LENGTHS, *MULTI])
    args = parser.parse_args()
    mmsa = oracle()
    rows = []
    for name in args.models:
        dataset = "sims" if name in MULTI else "mosi"
        row = bench(mmsa, name, dataset, args.repeats)
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.output:
        args.output.write_text(json.dumps({"machine": machine_info(torch.device("cpu")), "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
