"""Everything to measure on a CUDA machine, in one run (called by scripts/bench_gpu.sh).

For every paper blueprint (blueprints/*.yaml) at the papers' MOSI shapes: training step
(forward, the blueprint's whole loss, backward, Adam) and inference in fp32 and bf16
autocast, eager, ``torch.compile`` and ``torch.compile(mode="reduce-overhead")`` (CUDA graphs),
at batch 24 / 64 / 256; the reference ratio against the plain-PyTorch reference
(tests/reference/, fp32 eager, interleaved); the largest bf16-vs-fp32 prediction difference;
and, when the ``MMSA`` package is importable, MMSA's own MulT on the same shapes side by side.
Rows are appended to docs/performance.md with the machine, the versions and the date, and
written as JSON next to it.

``--quick`` (CPU, one blueprint, batch 2, eager fp32) runs the same code end to end so a CPU
test keeps this script from rotting.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import composer  # noqa: E402
from composer.bench import bench_model, compare_with_reference, interleaved_times, machine_info  # noqa: E402
from composer.train.views import make_views  # noqa: E402

PAPERS = ["mult", "hct_mg", "rmfn", "msaf", "glomo", "emt_dlfr"]
MODES = {"eager": None, "compile": "default", "cuda_graphs": "reduce-overhead"}
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def _model(name: str, device: torch.device, quick: bool):
    sets = []
    if quick:
        bp = composer.load_blueprint(ROOT / "blueprints" / f"{name}.yaml")
        sets = [f"modalities.{m}.length={min(6, v.length)}" for m, v in bp.modalities.items() if v.kind in ("sequence", "tokens")]
    torch.manual_seed(0)
    return composer.compile_blueprint(composer.load_blueprint(ROOT / "blueprints" / f"{name}.yaml", sets)).to(device)


def _step_time(model, batch_size: int, device: torch.device, mode: str | None, dtype, repeats: int) -> tuple[float, float]:
    """(train step ms, inference ms) with the blueprint's whole loss, under a compile mode and autocast."""
    batch = model.example_inputs(batch_size, device=device)
    runner = model if mode is None else torch.compile(model, mode=mode)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    views = make_views(batch, model.blueprint, torch.Generator().manual_seed(0))
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype is not None else (lambda: torch.autocast(device.type, enabled=False))

    def train() -> None:
        model.train()
        with autocast():
            outputs = {v: runner(b) for v, b in views.items()}
            loss, _ = model.compute_loss(outputs, views)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def infer() -> None:
        model.eval()
        with torch.no_grad(), autocast():
            runner(batch)

    times = interleaved_times({"train": train, "infer": infer}, device, warmup=3, repeats=repeats)
    return times["train"], times["infer"]


def _bf16_difference(model, device: torch.device) -> float:
    batch = model.example_inputs(8, device=device)
    model.eval()
    with torch.no_grad():
        full = model(batch)["prediction"].float()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            low = model(batch)["prediction"].float()
    return float((full - low).abs().max())


def _mmsa_mult(batch_size: int, device: torch.device, repeats: int) -> dict | None:
    """MMSA's own MulT on the MOSI shapes (768/5/20; 50/500/375), when the package is there."""
    try:
        from easydict import EasyDict
        from MMSA.models.singleTask.MULT import MULT
    except ImportError:
        return None
    args = EasyDict(dict(
        feature_dims=(768, 5, 20), seq_lens=(50, 500, 375), dst_feature_dim_nheads=(50, 10), nlevels=4,
        attn_dropout=0.2, attn_dropout_a=0.0, attn_dropout_v=0.0, relu_dropout=0.0, embed_dropout=0.2, res_dropout=0.0,
        output_dropout=0.5, text_dropout=0.5, attn_mask=True, conv1d_kernel_size_l=5, conv1d_kernel_size_a=5,
        conv1d_kernel_size_v=5, train_mode="regression", num_classes=1, use_bert=False, need_data_aligned=False,
    ))
    model = MULT(args).to(device)
    text, audio, vision = (torch.randn(batch_size, t, d, device=device) for t, d in ((50, 768), (500, 5), (375, 20)))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-6)

    def train() -> None:
        model.train()
        out = model(text, audio, vision)["M"]
        (out - 0.0).abs().mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    ms = interleaved_times({"train": train}, device, warmup=3, repeats=repeats)["train"]
    return {"params": sum(p.numel() for p in model.parameters()), "train_step_ms": round(ms, 2), "samples_per_s": round(batch_size * 1000 / ms, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "performance.md")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="CPU smoke run: one blueprint, batch 2, eager fp32")
    args = parser.parse_args(argv)
    device = torch.device("cpu" if args.quick or not torch.cuda.is_available() else "cuda")
    if device.type != "cuda" and not args.quick:
        print("no CUDA device: use --quick for a CPU smoke run", file=sys.stderr)
        return 2
    papers = PAPERS[:1] if args.quick else PAPERS
    batches = [2] if args.quick else [24, 64, 256]
    modes = {"eager": None} if args.quick else MODES
    precisions = {"fp32": None} if args.quick else PRECISIONS
    rows = []
    for name in papers:
        model = _model(name, device, args.quick)
        reference = compare_with_reference(model, bench_model(model, batch_size=batches[0], device=device, repeats=3), device=device,
                                           repeats=args.repeats)
        bf16_diff = _bf16_difference(model, device) if "bf16" in precisions else math.nan
        for batch_size in batches:
            for mode_name, mode in modes.items():
                for precision, dtype in precisions.items():
                    torch._dynamo.reset()
                    try:
                        train_ms, infer_ms = _step_time(model, batch_size, device, mode, dtype, args.repeats)
                        error = ""
                    except Exception as exc:  # one configuration failing (e.g. memory at batch 256) must not stop the run
                        train_ms = infer_ms = math.nan
                        error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
                    rows.append({
                        "blueprint": name, "params": reference.params, "batch": batch_size, "mode": mode_name, "precision": precision,
                        "train_step_ms": round(train_ms, 2), "samples_per_s": round(batch_size * 1000 / train_ms, 1) if train_ms == train_ms else math.nan,
                        "inference_ms": round(infer_ms, 2), "reference_ratio": reference.reference_ratio,
                        "bf16_max_diff": bf16_diff, "error": error,
                    })
                    print(json.dumps(rows[-1]), flush=True)
    mmsa = None if args.quick else _mmsa_mult(64, device, args.repeats)
    machine = machine_info(device)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"\n## {machine.get('gpu', machine['cpu'])}, {stamp}\n",
             f"torch {machine['torch']}, Python {machine['python']}, {machine['platform']}; command: `bash scripts/bench_gpu.sh`.\n",
             "| blueprint | params | batch | mode | precision | train step ms | samples/s | inference ms | reference ratio | bf16 max diff | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['blueprint']} | {r['params']:,} | {r['batch']} | {r['mode']} | {r['precision']} | {r['train_step_ms']} | "
                     f"{r['samples_per_s']} | {r['inference_ms']} | {r['reference_ratio']} | {r['bf16_max_diff']:.2e} | {r['error']} |")
    lines.append("")
    lines.append(f"MMSA's MulT (MOSI shapes, batch 64, fp32 eager): {mmsa}" if mmsa else "MMSA's MulT: the MMSA package is not installed here.")
    with args.out.open("a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps({"machine": machine, "date": stamp, "rows": rows, "mmsa_mult": mmsa}, indent=2))
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
