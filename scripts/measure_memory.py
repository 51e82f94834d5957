"""Training memory on CPU: the traced estimate against the measured peak, per blueprint (issue #26).

For each blueprint, two figures of the same training step (``composer.train.memory``: every view
of one batch of ``training.batch_size`` samples at full length, the loss, backward, the
optimisers' steps, with their state already made):

* **estimate**: :func:`composer.train.memory.trace_training_memory` (fake tensors, nothing allocated);
* **measured**: the same step run for real in a fresh process, one blueprint at a time: the
  growth of the process's resident memory (RSS) from just before the model is built to the
  step's peak. The same step runs first at batch 2 (every module, kernel and thread pool it
  uses is loaded; what it freed is returned with ``malloc_trim``), the peak RSS is reset (``/proc/self/clear_refs``, Linux) and the baseline read;
  after the step the peak (``VmHWM``) minus the baseline is the figure. It covers the
  parameters, the optimiser state, the batch, every activation and temporary, and whatever the
  allocator keeps; not the interpreter, the libraries or a data set.

A blueprint is measured only when the machine has room for it: its estimate times
``--headroom`` must fit in ``MemAvailable``; otherwise its row says so and holds no measurement.

    python scripts/measure_memory.py                     # every paper blueprint, the table printed
    python scripts/measure_memory.py --write             # and docs/memory-cpu.json written
    python scripts/measure_memory.py blueprints/mult.yaml --batch-size 4
    python scripts/measure_memory.py --table           # the table of docs/memory-cpu.json, nothing run
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PAPER_BLUEPRINTS = ("rmfn", "msaf", "glomo", "emt_dlfr", "hct_mg", "mult", "early_fusion", "late_fusion")
TOLERANCE = 0.25  # issue #26: the estimate within 25% of the measured peak

#: The child process: the measured step, its figure printed as JSON on the last line.
CHILD = r"""
import ctypes, gc, json, sys, torch
sys.path.insert(0, {root!r})
import composer
from composer.graph.model import compile_blueprint
from composer.train.memory import make_optimizers, prime_optimizers, step_batches, training_step

torch.manual_seed(0)
bp = composer.load_blueprint({path!r})
batch_size = {batch_size!r} or bp.training.batch_size

def step(n):
    model = compile_blueprint(bp)
    model.train()
    optimizers = make_optimizers(model)
    prime_optimizers(model, optimizers)
    training_step(model, step_batches(model, n), optimizers)

step(2)  # warm-up at batch 2: every module, kernel and thread pool the step uses is loaded first
gc.collect()
ctypes.CDLL("libc.so.6").malloc_trim(0)  # what the warm-up freed goes back to the system

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(key + " not in /proc/self/status")

gc.collect()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak RSS restarts from the current RSS
base = status("VmRSS")
step(batch_size)
print(json.dumps({{"measured_bytes": status("VmHWM") - base, "baseline_rss": base}}))
"""


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("MemAvailable not in /proc/meminfo")


def measure(path: Path, batch_size: int | None, timeout: int = 1800) -> dict:
    code = CHILD.format(root=str(ROOT), path=str(path), batch_size=batch_size)
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if run.returncode != 0:
        raise RuntimeError(f"{path}: the measured step failed:\n{run.stderr[-3000:]}")
    out = json.loads(run.stdout.strip().splitlines()[-1])
    out["measure_s"] = round(time.perf_counter() - start, 1)
    return out


def row(path: Path, batch_size: int | None, headroom: float) -> dict:
    import composer
    from composer.train.memory import trace_training_memory

    bp = composer.load_blueprint(path)
    start = time.perf_counter()
    est = trace_training_memory(bp, batch_size)
    out = {
        "blueprint": path.stem, "path": str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path),
        "batch_size": est.batch_size, "estimate_bytes": est.peak_bytes, "tensor_bytes": est.tensor_bytes, "state_bytes": est.state_bytes,
        "batch_bytes": est.batch_bytes, "trace_s": round(time.perf_counter() - start, 1),
        "floor_bytes": bp.size.train_bytes,
    }
    available = mem_available()
    if est.peak_bytes * headroom > available:
        out["not_measured"] = f"needs about {est.peak_bytes * headroom / 1e9:.1f} GB with headroom; {available / 1e9:.1f} GB available"
        return out
    out.update(measure(path, batch_size))
    out["ratio"] = round(out["estimate_bytes"] / out["measured_bytes"], 3)
    out["within_tolerance"] = abs(out["ratio"] - 1) <= TOLERANCE
    return out


def machine() -> dict:
    import torch

    return {
        "date": dt.date.today().isoformat(), "platform": platform.platform(), "cpu": platform.machine(),
        "cores": __import__("os").cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
    }


def _gb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e9:.2f}" if n >= 1e8 else f"{n / 1e9:.3f}"


def table(rows: list[dict]) -> str:
    """The rows as the Markdown table of docs/performance.md."""
    lines = ["| blueprint | batch | estimate GB | measured GB | estimate / measured | old floor GB | trace s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ratio = f"{r['ratio']:.2f}" if "ratio" in r else r.get("not_measured", "-")
        lines.append(f"| {r['blueprint']} | {r['batch_size']} | {_gb(r['estimate_bytes'])} | {_gb(r.get('measured_bytes'))} | {ratio} "
                     f"| {_gb(r['floor_bytes'])} | {r['trace_s']} |")
    return "\n".join(lines)


def write(output: Path, fresh: dict) -> None:
    """Add one row to the JSON file, replacing an earlier row of the same blueprint and batch."""
    old = json.loads(output.read_text()) if output.exists() else {"rows": []}
    kept = [r for r in old.get("rows", []) if (r["blueprint"], r["batch_size"]) != (fresh["blueprint"], fresh["batch_size"])]
    output.write_text(json.dumps({"machine": machine(), "rows": kept + [fresh]}, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("blueprints", nargs="*", type=Path, help="Blueprints (default: the paper blueprints).")
    parser.add_argument("--batch-size", type=int, default=None, help="Instead of each blueprint's training.batch_size.")
    parser.add_argument("--headroom", type=float, default=1.5, help="Measure only when estimate x this fits in MemAvailable.")
    parser.add_argument("--write", action="store_true", help="Write docs/memory-cpu.json (rows for other blueprints are kept).")
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "memory-cpu.json")
    parser.add_argument("--table", action="store_true", help="Print the table of --output's rows and run nothing.")
    args = parser.parse_args(argv)
    if args.table:
        print(table(json.loads(args.output.read_text())["rows"]))
        return 0
    paths = args.blueprints or [ROOT / "blueprints" / f"{n}.yaml" for n in PAPER_BLUEPRINTS]
    rows = []
    for path in paths:  # one at a time: the measurements must not overlap
        rows.append(row(path.resolve(), args.batch_size, args.headroom))
        print(json.dumps(rows[-1]), flush=True)
        if args.write:  # after every row: a later failure loses nothing measured
            write(args.output, rows[-1])
    print(table(rows))
    return 0 if all(r.get("within_tolerance", True) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
