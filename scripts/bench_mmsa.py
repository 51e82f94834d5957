"""CPU training-step time of the zoo's blueprints against MMSA 2.2.1's own modules (issue #24).

For each zoo model MMSA implements, at MMSA's configuration for one dataset (its real feature
widths, sequence lengths and batch size): MMSA's module built from ``get_config_regression``, the
zoo blueprint compiled with the options that read padding as MMSA does (tests/test_mmsa_zoo.py's
``MMSA_OPTIONS``; MulT takes no lengths, so Composer gets the batch without them, as MMSA reads
it), MMSA's weights copied in through the import-weights name map, one padded batch (padded steps
zero, as MMSA's pickles hold them). One training step is forward, L1 loss against the label,
backward, Adam step; the two modules' steps run in alternation (``interleaved_times``), so machine
drift hits both alike; every step's time is kept, and ``ratio_quartiles`` gives the quartiles
(first, median, third) of the per-repeat ratios: the spread. MMSA's data loader averages audio and
vision for the models with ``need_normalized`` before the model runs: done once, outside the timing, on both sides; AMIO's
aligner (MFN, Graph-MFN) is timed, Composer's ``pool`` blocks too. Composer's default (masking
padding) is timed beside it for information.

MFM, MCTN and MAG-BERT (mosi) take their trainer's own step on both sides instead of the L1 alone
(``OWN_STEP``): MFM's total loss (L1, the decoders' reconstructions, λ_mmd · the MMDs; Adam with
its weight decay), MCTN's ``loss_all`` (the translations' and the cycle's MSEs and the L1; the
gradient clipped to ``grad_clip`` before Adam's step), MAG-BERT's L1 through BERT-base (MMSA's
bert-base-uncased architecture from transformers' default ``BertConfig``, built offline with its
own random initialisation: no download) at the trainer's lr; Composer's side is the blueprint's
``compute_loss`` (the trainer's). The oracles and the equality-tested builders are
tests/test_mmsa_generative.py's and tests/test_mmsa_mag_bert.py's.

    .venv/bin/python scripts/bench_mmsa.py -o docs/bench-mmsa-cpu.json [--repeats 15] [--models tfn lmf]
    .venv/bin/python scripts/bench_mmsa.py --models mfm,mctn,mag_bert --repeats 9 -o /tmp/own.json [--threads 1]

``--threads`` sets torch's intra-op threads (default: torch's own, the machine's cores); on a
machine other processes load, one thread avoids the stalls of a thread team waiting for a
descheduled member, which hit whichever side is running and swamp the difference.

Needs the source checkout (tests/ for the MMSA oracle loader) and MMSA installed (scripts/setup.sh).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
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
import test_mmsa_generative as generative  # noqa: E402
import test_mmsa_mag_bert as mag  # noqa: E402
from test_mmsa_zoo import MMSA_OPTIONS, MODEL_ALIGNED, NORMALIZED, ONE_TIME_AXIS, SUBNETS_AS_MMSA, mmsa_state, zero_padding  # noqa: E402

SINGLE = {"tfn": "TFN", "lmf": "LMF", "lf_dnn": "LF_DNN", "ef_lstm": "EF_LSTM", "mfn": "MFN", "graph_mfn": "Graph_MFN"}
MULTI = {"mlf_dnn": "MLF_DNN", "mtfn": "MTFN", "mlmf": "MLMF"}
#: Models that take no lengths (MulT): the same computation is Composer's on a batch without them.
NO_LENGTHS = {"mult": "MULT"}
#: Models timed with their trainer's own step (loss, clipping, optimiser settings): ``OWN_STEP[name](repeats)``.
OWN = ("mfm", "mctn", "mag_bert")
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
    as_mmsa, default = compile_pair(name, sizes, options, dataset)
    names = NAME_MAPS[name](as_mmsa)
    state = mmsa_state(theirs)
    for ours in (as_mmsa, default):
        ours.load_state_dict({names[k]: v for k, v in state.items() if names[k] is not None})
    return as_mmsa, default, theirs, aligner, config


def timed(calls: dict, repeats: int, warmup: int = 3) -> tuple[dict[str, float], list[float]]:
    """``interleaved_times`` of ``calls`` (``"mmsa"`` and ``"as_mmsa"`` among them), every timed step
    kept: (median ms per call, quartiles (first, median, third) of the per-repeat ratios as_mmsa / mmsa)."""
    steps: dict[str, list[float]] = {k: [] for k in calls}

    def kept(key, fn):
        def run():
            start = time.perf_counter()
            fn()
            steps[key].append(time.perf_counter() - start)
        return run

    medians = interleaved_times({k: kept(k, fn) for k, fn in calls.items()}, torch.device("cpu"), warmup=warmup, repeats=repeats)
    ratios = [ours / theirs for ours, theirs in zip(steps["as_mmsa"][warmup:], steps["mmsa"][warmup:])]
    quartiles = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1 else ratios * 3
    return medians, [round(q, 3) for q in quartiles]


def row(name: str, config, theirs, times: dict, spread: list[float], repeats: int) -> dict:
    out = {
        "model": name, "dataset": config.dataset_name, "batch_size": int(config.batch_size),
        "feature_dims": list(config.feature_dims), "params": sum(p.numel() for p in theirs.parameters() if p.requires_grad),
        "mmsa_step_ms": round(times["mmsa"], 2), "composer_mmsa_options_step_ms": round(times["as_mmsa"], 2),
    }
    if "default" in times:
        out["composer_default_step_ms"] = round(times["default"], 2)
    out["ratio"] = round(times["as_mmsa"] / times["mmsa"], 3)
    if "default" in times:
        out["ratio_default"] = round(times["default"] / times["mmsa"], 3)
    return {**out, "ratio_quartiles": spread, "repeats": repeats, "threads": torch.get_num_threads()}


def optimise(loss, optimiser, clip: float | None = None):
    """One training step: ``loss()``, backward, the gradient's norm clipped to ``clip`` (MMSA's
    MCTN trainer), the optimiser's step."""
    params = [p for group in optimiser.param_groups for p in group["params"]]

    def run():
        loss().backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(params, clip)
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
    return run


def compile_pair(name: str, sizes: list[str], options: list[str], dataset: str = "mosi", default: bool = True):
    """The zoo blueprint ``name`` compiled with MMSA's ``options`` and (``default``) without them."""
    path = ROOT / "blueprints" / "zoo" / f"{name}.yaml"
    as_mmsa = composer.compile_blueprint(composer.load_blueprint(path, [*sizes, *options], dataset=dataset))
    return as_mmsa, composer.compile_blueprint(composer.load_blueprint(path, sizes, dataset=dataset)) if default else None


def own_step(config, name: str, theirs, their_loss, models: dict, batch: dict, repeats: int, *,
             lr: float, weight_decay: float = 0.0, clip: float | None = None, warmup: int = 3) -> dict:
    """Time MMSA's trainer step (``their_loss``) against Composer's (``compute_loss``) with the same
    Adam, clipping and batch, after checking that both losses agree on it (evaluation mode, the same
    seed for MFM's prior samples): ``loss_difference`` in the row."""
    for module in (theirs, models["as_mmsa"]):
        module.eval()
    with torch.no_grad():
        torch.manual_seed(7)
        reference = their_loss(batch).item()
        torch.manual_seed(7)
        difference = abs(generative.our_loss(models["as_mmsa"], batch)[1].item() - reference)
    if difference > 1e-4 * max(1.0, abs(reference)):
        raise AssertionError(f"{name}: Composer's loss differs from MMSA's by {difference:.3g} (MMSA {reference:.6g}): not the same computation")
    calls = {}
    for key, module in {"mmsa": theirs, **{k: m for k, m in models.items() if m is not None}}.items():
        module.train()
        adam = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
        loss = (lambda: their_loss(batch)) if key == "mmsa" else (lambda m=module: generative.our_loss(m, batch)[1])
        calls[key] = optimise(loss, adam, clip)
    times, spread = timed(calls, repeats, warmup)
    return {**row(name, config, theirs, times, spread, repeats), "loss_difference": float(f"{difference:.2g}")}


def sizes_of(config) -> list[str]:
    return [f"modalities.{m}.{field}={v}" for field, values in (("features", config.feature_dims), ("length", config.seq_lens))
            for m, v in zip(ORDER, values)]


def bench_mfm(repeats: int) -> dict:
    """MFM at MMSA's mosi configuration (AMIO's aligner first: the identity on aligned_50)."""
    mmsa = generative.load_mmsa()
    config = mmsa.config("mfm", "mosi")
    config.train_mode, config.device = "regression", "cpu"
    as_mmsa, default = compile_pair("mfm", sizes_of(config), generative.MFM_AS_MMSA)
    torch.manual_seed(1)
    theirs = generative.mmsa_mfm(mmsa, "mosi", config)
    names = NAME_MAPS["mfm"](as_mmsa)
    for ours in (as_mmsa, default):
        mmsa_oracle.copy_through_map(theirs.state_dict(), ours, names)
    batch = zero_padding(padded_batch(as_mmsa, int(config.batch_size)))
    return own_step(config, "mfm", theirs, lambda b: generative.mmsa_loss(config, theirs, b)[1],
                    {"as_mmsa": as_mmsa, "default": default}, batch, repeats, lr=1e-3, weight_decay=config.weight_decay)


def bench_mctn(repeats: int) -> dict:
    """MCTN at MMSA's mosi configuration (its only one): the text 768 wide, audio and vision padded to it."""
    mmsa = generative.load_mmsa()
    config = mmsa.config("mctn", "mosi")
    as_mmsa, default = compile_pair("mctn", sizes_of(config), generative.MCTN_AS_MMSA)
    theirs = generative.mmsa_mctn(mmsa, widths=tuple(config.feature_dims))
    names = NAME_MAPS["mctn"](as_mmsa)
    tensors = dict(theirs.named_parameters())  # each tensor once (its state dict repeats shared modules)
    for ours in (as_mmsa, default):
        mmsa_oracle.copy_through_map(tensors, ours, {k: names[k] for k in tensors})
    batch = zero_padding(padded_batch(as_mmsa, int(config.batch_size)))

    def their_loss(b):
        return theirs(b["text"], b["audio"], b["vision"], b["label"].view(-1, 1), lengths=None)[0]  # loss_all

    return own_step(config, "mctn", theirs, their_loss, {"as_mmsa": as_mmsa, "default": default}, batch, repeats,
                    lr=config.init_lr, clip=config.grad_clip)


def bench_mag_bert(repeats: int) -> dict:
    """MAG-BERT at MMSA's mosi configuration with BERT-base; Composer's default is MMSA's reading on
    aligned data (no options), timed once. One warm-up step (a step takes seconds)."""
    from transformers import BertConfig

    mmsa = mag.load_mmsa()
    config = mmsa.config("bert_mag", "mosi")
    config.train_mode, config.device = "regression", "cpu"
    base = {k: getattr(BertConfig(), k) for k in mmsa_oracle.TINY_BERT}  # bert-base-uncased's sizes
    ours, _ = compile_pair("mag_bert", [f"modalities.{m}.length={n}" for m, n in zip(ORDER, config.seq_lens)], [], default=False)
    torch.manual_seed(1)
    theirs = mag.build_mmsa(mmsa, config, **base)
    mmsa_oracle.copy_through_map(theirs.state_dict(), ours, NAME_MAPS["mag_bert"](ours))
    batch = padded_batch(ours, int(config.batch_size))
    batch["text_segment"] = torch.zeros_like(batch["text"])  # MMSA's pickles: text_bert[:, 2] zero

    def their_loss(b):
        return torch.nn.functional.l1_loss(mag.mmsa_predict(theirs, b), b["label"].view(-1, 1))  # the trainer's criterion

    return own_step(config, "mag_bert", theirs, their_loss, {"as_mmsa": ours}, batch, repeats,
                    lr=config.learning_rate, weight_decay=config.weight_decay, warmup=1)


OWN_STEP = {"mfm": bench_mfm, "mctn": bench_mctn, "mag_bert": bench_mag_bert}


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
    l1 = torch.nn.functional.l1_loss
    times, spread = timed({
        "mmsa": optimise(lambda: l1(mmsa_forward(), label), optimisers["mmsa"]),
        "as_mmsa": optimise(lambda: l1(as_mmsa(same)["prediction"], label), optimisers["as_mmsa"]),
        "default": optimise(lambda: l1(default(batch)["prediction"], label), optimisers["default"]),
    }, repeats)
    return row(name, config, theirs, times, spread, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, help="torch's intra-op threads (default: torch's own)")
    parser.add_argument("--models", nargs="*", default=[*SINGLE, *NO_LENGTHS, *MULTI, *OWN],
                        help="space- or comma-separated: " + ", ".join([*SINGLE, *NO_LENGTHS, *MULTI, *OWN]))
    args = parser.parse_args()
    models = [m for arg in args.models for m in arg.split(",") if m]
    unknown = sorted(set(models) - {*SINGLE, *NO_LENGTHS, *MULTI, *OWN})
    if unknown:
        parser.error(f"--models: unknown {unknown}; choose from {[*SINGLE, *NO_LENGTHS, *MULTI, *OWN]}")
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads: {args.threads}; expected a positive number of threads")
        torch.set_num_threads(args.threads)
    mmsa = oracle() if set(models) - set(OWN) else None
    rows = []
    for name in models:
        result = OWN_STEP[name](args.repeats) if name in OWN else bench(mmsa, name, "sims" if name in MULTI else "mosi", args.repeats)
        print(json.dumps(result), flush=True)
        rows.append(result)
    if args.output:
        args.output.write_text(json.dumps({"machine": machine_info(torch.device("cpu")), "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
