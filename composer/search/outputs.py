"""What a search leaves in its folder: ``trials.csv``, ``best.yaml`` / ``best.json`` or the
Pareto front (``pareto/``), the plots, and ``rerun.csv`` / ``rerun.md``.

Every table goes through :func:`write_csv` (columns: the union of the rows' keys in first-seen
order) and every file through :func:`write_text`: written to a temporary file and renamed, so
an interrupt or a full disk leaves the previous version; a full disk is an error that names the
file and says the study (in its storage) still holds every trial.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

import optuna

from composer.blueprint.load import dump_blueprint
from composer.errors import disk_write
from composer.search.objective import blueprint_for_params, decode_params
from composer.search.space import is_plain
from composer.search.workers import trial_note

__all__ = ["write_csv", "write_text", "write_outputs", "write_rerun", "no_trial_completed", "KEPT", "SEARCH_INFO"]

#: The file every search writes into its folder to find its study again (search-report, --rerun-best).
SEARCH_INFO = "search.json"
#: What a failed write of a search output leaves intact.
KEPT = "the study's storage, which holds every trial (composer search-report or a rerun of the search writes the tables again)"


def write_text(path: Path, text: str, kept: str = KEPT) -> Path:
    """Write ``text`` to ``path`` atomically (temporary file + rename); a full disk names ``path``."""
    tmp = path.with_name(f".{path.name}.tmp")
    with disk_write(path, kept):
        try:
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return path


def write_csv(path: Path, rows: list[dict[str, Any]], first: Iterable[str] = (), kept: str = KEPT) -> Path:
    """The search's one CSV writer: a header of ``first`` then every other key in first-seen order."""
    fields = list(dict.fromkeys([*first, *(k for r in rows for k in r)]))
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return write_text(path, buffer.getvalue(), kept)


def _params(space: dict, t) -> dict[str, Any]:
    """A trial's decoded parameters as table cells (``param:<path>``; lists and mappings as JSON)."""
    return {f"param:{k}": v if is_plain(v) else json.dumps(v) for k, v in decode_params(space, t.params).items()}


def no_trial_completed(study: optuna.Study) -> str | None:
    """None when some trial completed, else why none did: each distinct reason with its count."""
    trials = study.trials
    if any(t.state == optuna.trial.TrialState.COMPLETE for t in trials):
        return None
    if not trials:
        return "no trial completed: the study holds no trial"
    reasons = Counter(f"{t.state.name.lower()}: {trial_note(t, trials) or 'no reason recorded'}" for t in trials)
    shown = "; ".join(f"{n} x {reason}" if n > 1 else reason for reason, n in reasons.most_common(3))
    more = f"; and {len(reasons) - 3} other reasons" if len(reasons) > 3 else ""
    return f"no trial completed ({len(trials)} trials): {shown}{more}"


def write_outputs(study: optuna.Study, raw, smap, cfg, out_dir: Path) -> tuple[Path | None, float | None, list[Path]]:
    """``trials.csv``, then ``best.yaml`` and ``best.json`` (one objective) or ``pareto/`` (several),
    and the plots; returns the best blueprint's path, its value and the Pareto blueprints."""
    objectives = cfg.objectives
    labels = [o.label for o in objectives]
    rows = []
    for t in study.trials:
        values = t.values or [None] * len(labels)
        rows.append({
            "number": t.number,
            "state": t.state.name,
            **({"value": values[0]} if len(labels) == 1 else {f"value:{l}": v for l, v in zip(labels, values)}),
            **{f"std:{k}": v for k, v in (t.user_attrs.get("std") or {}).items() if cfg.seeds > 1},
            **_params(cfg.space, t),
            "reason": trial_note(t, study.trials),
            "run_dir": t.user_attrs.get("run_dir", ""),
        })
    if rows:
        write_csv(out_dir / "trials.csv", rows)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best_path, best_value, front = None, None, []
    if complete and len(objectives) == 1:
        best = study.best_trial
        bp = blueprint_for_params(raw, smap, cfg.space, best.params)
        best_path = out_dir / "best.yaml"
        write_text(best_path, dump_blueprint(bp))
        best_value = best.value
        write_text(out_dir / "best.json", json.dumps({"trial": best.number, "value": best.value, "params": best.params, "objective": objectives[0].model_dump()}, indent=2))
    elif complete:
        front = _write_pareto(study, raw, smap, cfg, out_dir)
    with disk_write(out_dir / "*.png", KEPT):
        _plots(study, out_dir, labels)
    return best_path, best_value, front


def _write_pareto(study: optuna.Study, raw, smap, cfg, out_dir: Path) -> list[Path]:
    """``pareto/``: one blueprint per Pareto-optimal trial (validates and trains as is) and a table."""
    folder = out_dir / "pareto"
    if folder.exists():
        for old in folder.glob("trial_*.yaml"):
            old.unlink()
    folder.mkdir(exist_ok=True)
    labels = [o.label for o in cfg.objectives]
    written, rows = [], []
    for t in sorted(study.best_trials, key=lambda t: t.values[0]):
        path = folder / f"trial_{t.number:04d}.yaml"
        write_text(path, dump_blueprint(blueprint_for_params(raw, smap, cfg.space, t.params)))
        written.append(path)
        rows.append({"trial": t.number, **dict(zip(labels, t.values)), **_params(cfg.space, t), "blueprint": path.name})
    write_csv(folder / "pareto.csv", rows)
    write_text(folder / "pareto.json", json.dumps({"objectives": [o.model_dump() for o in cfg.objectives], "front": rows}, indent=2, default=str))
    return written


def _plots(study: optuna.Study, out_dir: Path, labels: list[str]) -> list[Path]:
    """History and parameter-importance plots (for the first objective) and, with several
    objectives, the Pareto front (PNG), when matplotlib is installed."""
    import warnings

    try:
        import matplotlib

        matplotlib.use("Agg")
        from optuna.visualization import matplotlib as ovm
    except ImportError:
        return []
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    written = []
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    multi = len(labels) > 1
    first = dict(target=lambda t: t.values[0], target_name=labels[0]) if multi else {}
    if complete:
        ax = ovm.plot_optimization_history(study, **first)
        ax.figure.savefig(out_dir / "history.png", dpi=120, bbox_inches="tight")
        written.append(out_dir / "history.png")
    varied = {k for t in complete for k in t.params}
    if len(complete) >= 2 and varied:
        try:
            ax = ovm.plot_param_importances(study, **first)
            ax.figure.savefig(out_dir / "importance.png", dpi=120, bbox_inches="tight")
            written.append(out_dir / "importance.png")
        except (RuntimeError, ValueError):
            pass  # importance is undefined when every complete trial has the same parameters
    if multi and complete and len(labels) in (2, 3):
        ax = ovm.plot_pareto_front(study, target_names=labels)
        ax.figure.savefig(out_dir / "pareto.png", dpi=120, bbox_inches="tight")
        written.append(out_dir / "pareto.png")
    import matplotlib.pyplot as plt

    plt.close("all")
    return written


def write_rerun(out_dir: Path, name: str, rows: list[dict[str, Any]], label: str, seeds: int) -> None:
    """``rerun.csv`` (ranked rows) and ``rerun.md`` (a table of mean ± std of ``label``)."""
    write_csv(out_dir / "rerun.csv", rows, first=["rank"])
    key = f"mean_{label}"
    lines = [f"# {name}: the {len(rows)} best configurations, trained again with {seeds} new seeds", "",
             f"| rank | trial | search value | {label} mean ± std |", "|---|---|---|---|"]
    lines += [f"| {r['rank']} | {r['trial']} | {r['search_value']:.4f} | {r[key]:.4f} ± {r[f'std_{label}']:.4f} |" for r in rows]
    write_text(out_dir / "rerun.md", "\n".join(lines) + "\n")
