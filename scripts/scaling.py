"""Scaling figures (issue #16.9): train-step time against sequence length and number of
modalities for EMT's three fusion strategies (OAGL eq. 8, OALL eq. 7, OOLL eq. 6) and for MulT's
crossmodal transformers against HCT-MG's hierarchical crossmodal fusion.

Every model gets the same front and back: ``M`` sequence modalities of 16 features and length
``L`` (one padding mask per modality), a Linear to ``d = 32`` per modality, the fusion under
test (4 heads, 2 layers), a mean or last-step read-out and an MLP head with an L1 loss. Only
the fusion differs, so the curves compare the operators. A step is forward, loss, backward and
an SGD update at batch 8 (``composer.bench.bench_model``), median of the repeats.

    .venv/bin/python scripts/scaling.py            # writes docs/scaling-cpu.json, docs/figures/scaling_*.svg
    .venv/bin/python scripts/scaling.py --quick    # fewer points (a smoke run)

The Markdown table in docs/performance.md is printed at the end (paste it between the markers).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from composer import compile_blueprint, load_blueprint
from composer.bench import bench_model, machine_info
from composer.errors import ComposerError

ROOT = Path(__file__).resolve().parents[1]
D, HEADS, LAYERS, FEATURES = 32, 4, 2, 16
MODELS = ("emt_oagl", "emt_oall", "emt_ooll", "mult", "hct_mg")
NAMES = [f"m{i}" for i in range(8)]


def blueprint(model: str, modalities: int, length: int) -> dict:
    """The blueprint of one point: ``modalities`` inputs of ``length`` steps, fusion ``model``."""
    names = NAMES[:modalities]
    blocks: dict = {f"p_{m}": {"type": "linear", "in": m, "out": D} for m in names}
    if model.startswith("emt_"):
        strategy = model.removeprefix("emt_")
        ins = {m: f"p_{m}" for m in names}
        if strategy == "oagl":
            for m in names:
                blocks[f"u_{m}"] = {"type": "pool", "in": f"p_{m}", "mode": "mean"}
            ins.update({f"{m}_utt": f"u_{m}" for m in names})
        blocks["fusion"] = {"type": "emt", "in": ins, "strategy": strategy, "layers": LAYERS, "heads": HEADS}
        readout = "fusion.global" if strategy == "oagl" else None
        if readout is None:
            for m in names:
                blocks[f"r_{m}"] = {"type": "pool", "in": f"fusion.{m}", "mode": "mean"}
            blocks["readout"] = {"type": "concat", "in": [f"r_{m}" for m in names]}
            readout = "readout"
    elif model == "mult":
        for t in names:
            for s in names:
                if s != t:
                    blocks[f"cm_{t}_{s}"] = {"type": "crossmodal", "in": {"target": f"p_{t}", "source": f"p_{s}"}, "heads": HEADS, "layers": LAYERS}
            sources = [f"cm_{t}_{s}" for s in names if s != t]
            if len(sources) > 1:
                blocks[f"cat_{t}"] = {"type": "concat", "in": sources}
            memory_in = f"cat_{t}" if len(sources) > 1 else sources[0]
            blocks[f"mem_{t}"] = {"type": "transformer", "in": memory_in, "heads": HEADS, "layers": LAYERS}
            blocks[f"last_{t}"] = {"type": "pool", "in": f"mem_{t}", "mode": "last"}
        blocks["readout"] = {"type": "concat", "in": [f"last_{t}" for t in names]}
        readout = "readout"
    elif model == "hct_mg":
        blocks["fusion"] = {"type": "hierarchical_crossmodal", "in": {m: f"p_{m}" for m in names}, "primary": names[0], "heads": HEADS, "layers": LAYERS}
        readout = "fusion"
    else:
        raise ValueError(model)
    blocks["head"] = {"type": "mlp", "in": readout, "hidden": [D], "out": 1}
    return {
        "blueprint": 1,
        "name": f"{model}_M{modalities}_L{length}",
        "task": {"kind": "regression", "outputs": 1},
        "modalities": {m: {"features": FEATURES, "length": length} for m in names},
        "blocks": blocks,
        "losses": [{"type": "l1", "pred": "head"}],
    }


def measure(model: str, modalities: int, length: int, repeats: int) -> dict:
    point = {"model": model, "modalities": modalities, "length": length}
    try:
        compiled = compile_blueprint(load_blueprint(blueprint(model, modalities, length)))
    except ComposerError as exc:  # the operator is not defined for this many modalities
        return {**point, "train_step_ms": None, "params": None, "note": " ".join(line.strip() for line in str(exc).splitlines()[1:])[:200]}
    result = bench_model(compiled, batch_size=8, warmup=1, repeats=repeats)
    return {**point, "train_step_ms": result.train_step_ms, "params": result.params}


def plot(points: list[dict], x: str, fixed: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    for model in MODELS:
        rows = sorted((p for p in points if p["model"] == model and p["train_step_ms"] is not None
                       and all(p[k] == v for k, v in fixed.items())), key=lambda p: p[x])
        if rows:
            ax.plot([p[x] for p in rows], [p["train_step_ms"] for p in rows], marker="o", label=model)
    ax.set_xlabel({"length": "sequence length L (every modality)", "modalities": "number of modalities M"}[x])
    ax.set_ylabel("train step (ms, batch 8)")
    if x == "length":
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
    ax.set_title(", ".join(f"{k} = {v}" for k, v in fixed.items()) + f"; d = {D}, {HEADS} heads, {LAYERS} layers", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, metadata={"Date": None})
    plt.close(fig)


def table(points: list[dict], x: str, fixed: dict) -> str:
    rows = [p for p in points if all(p[k] == v for k, v in fixed.items())]
    xs = sorted({p[x] for p in rows})
    head = f"| model | " + " | ".join(f"{x[0].upper()} = {v}" for v in xs) + " |"
    lines = [head, "|---|" + "---:|" * len(xs)]
    for model in MODELS:
        cells = []
        for v in xs:
            found = [p for p in rows if p["model"] == model and p[x] == v]
            ms = found[0]["train_step_ms"] if found else None
            cells.append("n/a" if ms is None else f"{ms:.1f}")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer points and repeats")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    torch.manual_seed(0)
    lengths = (16, 64) if args.quick else (16, 32, 64, 128, 256)
    counts = (2, 3) if args.quick else (2, 3, 4)
    repeats = 2 if args.quick else 5
    points = []
    for model in MODELS:
        for length in lengths:
            points.append(measure(model, 3, length, repeats))
            print(json.dumps(points[-1]), flush=True)
        for m in counts:
            if m != 3:
                points.append(measure(model, m, 64, repeats))
                print(json.dumps(points[-1]), flush=True)
    out = args.out
    (out / "figures").mkdir(parents=True, exist_ok=True)
    record = {"machine": machine_info(torch.device("cpu")), "torch_threads": torch.get_num_threads(), "batch_size": 8,
              "d": D, "heads": HEADS, "layers": LAYERS, "features": FEATURES, "points": points}
    (out / "scaling-cpu.json").write_text(json.dumps(record, indent=2) + "\n")
    plot(points, "length", {"modalities": 3}, out / "figures" / "scaling_length.svg")
    plot(points, "modalities", {"length": 64}, out / "figures" / "scaling_modalities.svg")
    print(table(points, "length", {"modalities": 3}))
    print()
    print(table(points, "modalities", {"length": 64}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
