"""Every hybrid of examples/hybrids/ against its parent paper blueprints, on one synthetic set.

    .venv/bin/python examples/hybrids/benchmark.py --out runs/hybrids_benchmark

All models see the same data: one built-in synthetic set (``composer.data.synthetic_data``)
with word-aligned modalities (tokens text through a tiny random BERT, 8 audio and 10 vision
features, 20 steps each, one time axis: RMFN's LSTHMs and a modality gate need one), given
to :func:`composer.train.protocol.run_protocol` as ``data=``. Each blueprint is built at the
same small shapes by overrides (``--set`` paths): the common modalities, a 2-layer 16-wide BERT
for the text of every model (the feature-text papers read its last layer where they read
GloVe), widths of about 16, one layer per transformer, lr 1e-3 for every model (the papers'
BERT fine-tuning rates would leave a from-scratch model untrained in a few epochs) and no
gradient accumulation. Classification hybrids are run as regression so every row has MAE,
Corr and Acc-2. ``standard`` protocol, seeds 0, 1, 2: mean ± std over seeds of the test
metrics. Parameter counts are the model's (training-only loss networks excluded).
The numbers are a smoke test of the wiring at toy sizes, not a ranking of the papers.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch
import yaml

import composer
from composer.data.synthetic import synthetic_data
from composer.train.protocol import run_protocol

ROOT = Path(__file__).resolve().parents[2]
SEEDS = [0, 1, 2]
BERT = "{type: bert, in: text, init: random, hidden_size: 16, num_layers: 2, num_heads: 2, intermediate_size: 32, vocab_size: 2000}"
MODALITIES = {
    "text": {"kind": "tokens", "length": 20, "vocab": 2000, "time": "T"},
    "audio": {"features": 8, "length": 20, "time": "T"},
    "vision": {"features": 10, "length": 20, "time": "T"},
}
TINY_BERT = [f"{k}={v}" for k, v in {"hidden_size": 16, "num_layers": 2, "num_heads": 2, "intermediate_size": 32, "vocab_size": 2000}.items()]

#: Paper blueprints at the benchmark's shapes: file, block overrides (and modality renames).
PARENTS = {
    "GLoMo": ("blueprints/glomo.yaml", [
        *(f"blocks.text_bert.{o}" for o in TINY_BERT),
        "blocks.text_coding.dim=16", "blocks.text_moe.out=16", "blocks.audio_moe.out=16", "blocks.vision_moe.out=16",
        *(f"blocks.{m}_coding.{k}={v}" for m in ("audio", "vision") for k, v in (("dim", 16), ("heads", 2), ("layers", 1))),
        "blocks.fusion.heads=2", "blocks.fusion.layers=1", "blocks.fusion.ff_dim=32",
    ]),
    "EMT-DLFR": ("blueprints/emt_dlfr.yaml", [
        *(f"blocks.text_enc.{o}" for o in TINY_BERT),
        "blocks.vision_enc.hidden=16",
        *(f"blocks.{b}.out=16" for b in ("text_proj", "text_utt", "audio_proj", "audio_utt", "vision_proj", "vision_utt")),
        "blocks.emt.layers=1", "blocks.emt.heads=2", "blocks.emt.ffn_expansion=2", "blocks.head.hidden=[32]",
        "training.param_groups=[]", "training.grad_accum=1",
    ]),
    "HCT-MG": ("blueprints/hct_mg.yaml", [
        f"blocks.text_bert={BERT}", "blocks.text_enc.in=text_bert.seq",
        *(f"blocks.{m}_enc.hidden=20" for m in ("text", "audio", "vision")),
        "blocks.fusion.layers=1", "blocks.head.hidden=[120]",
    ]),
    "MSAF": ("blueprints/msaf.yaml", [
        f"blocks.text_bert={BERT}", "blocks.text_l1.in=text_bert.seq", "blocks.visual_l1.in=vision",
        *(f"blocks.{m}_l{i}.hidden=16" for m in ("visual", "audio", "text") for i in (1, 2)),
        "blocks.msaf.channels=8", "blocks.msaf.segments=2",
    ]),
    "MulT": ("blueprints/mult.yaml", [
        f"blocks.text_bert={BERT}", "blocks.text_drop.in=text_bert.seq",
        *(f"blocks.proj_{m}.out=20" for m in "tav"),
        *(f"blocks.{b}.layers=1" for b in ("cm_t_a", "cm_t_v", "cm_a_t", "cm_a_v", "cm_v_t", "cm_v_a", "mem_t", "mem_a", "mem_v")),
        "blocks.head.hidden=[120]",
    ]),
    "RMFN": ("blueprints/rmfn.yaml", [
        f"blocks.text_bert={BERT}", "blocks.rmfn.in.text=text_bert.seq",
        "blocks.rmfn.hidden={text: 16, audio: 16, vision: 16}",
        "blocks.rmfn.fusion.hidden=32", "blocks.rmfn.fusion.out=32", "blocks.rmfn.fusion.summarize_hidden=[32]",
        "blocks.head.hidden=[32]",
    ]),
}
#: Each hybrid, its parents and the overrides that make it a regression model where it is not one.
HYBRIDS = {
    "glomo_experts_emt_dlfr": (["GLoMo", "EMT-DLFR"], []),
    "hct_mg_msaf_encoder": (["HCT-MG", "MSAF"], []),
    "glomo_rmfn": (["GLoMo", "RMFN"], []),
    "mult_msaf_glomo_tfn": (["MulT", "MSAF", "GLoMo"], [
        "task={kind: regression, outputs: 1}", "blocks.glomo.out=1", "blocks.tfn_head.out=1",
        "losses.task.type=l1", "losses.tfn_aux.type=l1", "search.objective={metric: mae, split: valid, direction: minimize}",
    ]),
    "gated_promotion_msaf": (["HCT-MG", "EMT-DLFR", "MSAF"], []),
    "mult_experts_mfp_dlfr": (["MulT", "GLoMo", "RMFN", "EMT-DLFR"], []),
    "glomo_msaf_mfp": (["GLoMo", "MSAF", "RMFN"], [f"blocks.text_bert={BERT}", "blocks.text_enc.in=text_bert.seq"]),
}


def common(epochs: int, samples: dict[str, int]) -> list[str]:
    """Overrides every model gets: the data's modalities, the training set and schedule."""
    mods = [f"modalities.{m}={yaml.safe_dump(spec, default_flow_style=True).strip()}" for m, spec in MODALITIES.items()]
    train = [f"training.epochs={epochs}", "training.batch_size=16", "training.lr=1.0e-3", "training.early_stop=null",
             f"training.data.samples={yaml.safe_dump(samples, default_flow_style=True).strip()}"]
    return mods + train


def parent(name: str, extra: list[str]):
    path, overrides = PARENTS[name]
    data = yaml.safe_load((ROOT / path).read_text())
    if "visual" in data["modalities"]:  # MSAF names its modalities visual / audio / text
        data["modalities"] = {"vision" if m == "visual" else m: spec for m, spec in data["modalities"].items()}
    return composer.load_blueprint(data, [*overrides, *extra], source=path)


def hybrid(stem: str, extra: list[str]):
    return composer.load_blueprint(ROOT / "examples/hybrids" / f"{stem}.yaml", [*HYBRIDS[stem][1], *extra])


def run(bp, data, out: Path, epochs: int) -> dict:
    start = time.perf_counter()
    result = run_protocol(bp, "standard", data=data, out=out, seeds=SEEDS, epochs=epochs, device="cpu", progress=False, log=lambda _: None)
    metrics = result.per_rate[0.0]
    params = composer.compile_blueprint(bp).parameter_summary()["model"]
    return {"params": params, "seconds": time.perf_counter() - start,
            **{k: metrics[k] for k in ("mae", "corr", "acc2_nonzero", "acc2_haszero")}}


def cell(mean_std: tuple[float, float], scale: float = 1.0, digits: int = 3) -> str:
    mean, std = mean_std
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def row(name: str, parents: str, r: dict) -> str:
    return (f"| {name} | {parents} | {r['params']:,} | {cell(r['mae'])} | {cell(r['corr'])} | "
            f"{cell(r['acc2_nonzero'], 100, 1)} | {cell(r['acc2_haszero'], 100, 1)} | {r['seconds']:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs/hybrids_benchmark")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--train", type=int, default=192, help="training samples (valid 32, test 64)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    samples = {"train": args.train, "valid": 32, "test": 64}
    extra = common(args.epochs, samples)
    data = synthetic_data(hybrid("glomo_rmfn", extra))  # one set for every model
    rows: dict[str, dict] = {}
    for stem, (parents, _) in HYBRIDS.items():
        for name in parents:
            if name not in rows:
                rows[name] = run(parent(name, extra), data, args.out / name, args.epochs)
                print(name, rows[name], flush=True)
        rows[stem] = run(hybrid(stem, extra), data, args.out / stem, args.epochs)
        print(stem, rows[stem], flush=True)
    lines = [
        f"{args.epochs} epochs, {samples['train']} / {samples['valid']} / {samples['test']} synthetic samples (train / valid / test), "
        f"seeds {', '.join(map(str, SEEDS))}; {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, 1 thread; "
        f"{sum(r['seconds'] for r in rows.values()):.0f} s in all.",
        "",
        "| model | parents | parameters | MAE | Corr | Acc-2 (neg / pos) | Acc-2 (neg / non-neg) | time (s, 3 seeds) |",
        "|---|---|---:|---|---|---|---|---:|",
    ]
    for name in PARENTS:
        lines.append(row(name, "paper", rows[name]))
    for stem, (parents, _) in HYBRIDS.items():
        lines.append(row(f"`{stem}`", ", ".join(parents), rows[stem]))
    table = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(table, encoding="utf-8")
    print(table)


if __name__ == "__main__":
    main()
