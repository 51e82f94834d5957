"""``composer search-report``: one page (Markdown and HTML) about a search folder.

The page holds the objectives, the trials table, the optimisation history, parameter
importances and (with several objectives) the Pareto plot, the best blueprint's picture
(graphviz) and how the best configuration differs from the base blueprint. It reads the
folder's ``search.json`` (written by every search) to find the study again.
"""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path
from typing import Any

import optuna

from composer.blueprint.load import get_path, resolve_path, split_path
from composer.errors import ComposerError
from composer.search.outputs import SEARCH_INFO, write_text

__all__ = ["write_report", "read_search_info", "SEARCH_INFO"]



def _cell(value: Any) -> str:
    """A value as Markdown text that renders as written: HTML escaped, and the characters of
    links, emphasis and tables backslashed, so a choice value such as ``<script>`` or
    ``[x](javascript:...)`` is shown, never run or linked."""
    if isinstance(value, float):
        return f"{value:.4g}"
    text = html.escape("" if value is None else str(value), quote=False)
    return re.sub(r"([\\`*_\[\]()|!#])", r"\\\1", text)


def _code(value: Any) -> str:
    """A value in a Markdown code span (rendered literally); backticks inside are replaced."""
    return "`" + str(value).replace("`", "'") + "`"


def _base_value(raw: dict, path: str) -> Any:
    try:
        return get_path(raw, resolve_path(raw, split_path(path)))
    except (KeyError, IndexError, TypeError, ComposerError):
        return "(default)"


def read_search_info(out_dir: Path) -> dict[str, Any]:
    """A search folder's ``search.json``, checked: ``blueprint`` (a path), ``study`` (a name),
    ``overrides`` (a list of strings) and ``storage`` (a URL or None). Raises ComposerError."""
    info_path = out_dir / SEARCH_INFO
    if not info_path.is_file():
        raise ComposerError(f"{out_dir}: no {SEARCH_INFO} here; give the folder a `composer search` wrote")
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ComposerError(f"{info_path} is damaged ({exc}); run `composer search` into this folder again to rewrite it") from None
    if not isinstance(info, dict):
        raise ComposerError(f"{info_path}: expected a JSON object with 'blueprint' and 'study', found {type(info).__name__}")
    expected = {"blueprint": (str, "the blueprint's path"), "study": (str, "the study's name"),
                "overrides": (list, "a list of --set strings"), "storage": ((str, type(None)), "a storage URL or null")}
    for key, (kind, what) in expected.items():
        value = info.get(key, [] if key == "overrides" else None if key == "storage" else ...)
        if value is ... or not isinstance(value, kind) or key == "overrides" and not all(isinstance(v, str) for v in value):
            raise ComposerError(f"{info_path}: '{key}' is {value if value is not ... else 'missing'!r}, expected {what}")
    if not Path(info["blueprint"]).is_file():
        raise ComposerError(f"{info_path}: the blueprint {info['blueprint']} is gone; restore it or search again")
    if info.get("storage") is None and not (out_dir / "study.db").is_file():
        raise ComposerError(f"{out_dir}: no study.db here (the search's default storage); the folder is incomplete")
    return info


def write_report(out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` into a search folder; returns both paths."""
    from composer.blueprint.load import validate_data
    from composer.search.objective import decode_params, read_raw
    from composer.search.storage import describe_storage, make_storage, open_study
    from composer.search.workers import trial_note

    out_dir = Path(out_dir)
    info = read_search_info(out_dir)
    raw, _ = read_raw(info["blueprint"], info.get("overrides", []))
    cfg = validate_data(raw).search
    if cfg is None or not cfg.space:
        raise ComposerError(f"{info['blueprint']}: the blueprint has no `search.space`; it is not the one this search ran")
    study = open_study(info["study"], make_storage(info.get("storage"), out_dir), describe_storage(info.get("storage"), out_dir))
    labels = [o.label for o in cfg.objectives]
    params = list(dict.fromkeys(k for t in study.trials for k in t.params))
    header = ["#", "state", *labels, *params, "note"]
    rows = []
    for t in study.trials:
        values = t.values or [None] * len(labels)
        decoded = decode_params(cfg.space, t.params)
        rows.append([t.number, t.state.name.lower(), *values, *[json.dumps(decoded[p]) if p in decoded else "" for p in params], trial_note(t, study.trials)])

    best_yaml = out_dir / "best.yaml"
    pareto = sorted((out_dir / "pareto").glob("trial_*.yaml")) if (out_dir / "pareto").is_dir() else []
    shown = best_yaml if best_yaml.exists() else (pareto[0] if pareto else None)
    picture = None
    if shown is not None and shutil.which("dot"):
        from composer.render import render

        picture = Path(render(shown).render(str(out_dir / "report_best"), format="svg", cleanup=True)).name
    diff: list[tuple[str, Any, Any]] = []
    chosen = None
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if complete:
        chosen = study.best_trial if len(labels) == 1 else sorted(study.best_trials, key=lambda t: t.values[0])[0]
        for path, value in decode_params(cfg.space, chosen.params).items():
            base = _base_value(raw, path)
            if base != value:
                diff.append((path, base, value))

    plots = [name for name in ("history.png", "importance.png", "pareto.png") if (out_dir / name).exists()]
    md = [f"# Search report: {_cell(info['study'])}", "", f"Blueprint: {_code(info['blueprint'])}  ", f"Storage: {_code(info.get('storage') or 'sqlite (search folder)')}  ",
          "Objectives: " + ", ".join(f"{o.label} ({o.direction})" for o in cfg.objectives) + "  ", _sampler_line(study), ""]
    counts: dict[str, int] = {}
    for t in study.trials:
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    md.append("Trials: " + ", ".join(f"{n} {state}" for state, n in counts.items()) + "")
    md.append("")
    if chosen is not None:
        md += [f"## Best configuration (trial {chosen.number})", "", "| " + " | ".join(labels) + " |", "|" + "---|" * len(labels),
               "| " + " | ".join(_cell(v) for v in chosen.values) + " |", ""]
        if shown is not None:
            md.append(f"Blueprint: {_code(shown.name)}" + (f" (Pareto front: {len(pareto)} blueprints in `pareto/`)" if pareto else ""))
            md.append("")
        md += ["Differences from the base blueprint:", "", "| path | base | best |", "|---|---|---|"]
        md += [f"| {_code(p)} | {_code(json.dumps(b))} | {_code(json.dumps(v))} |" for p, b, v in diff] or ["| (none) | | |"]
        md.append("")
        if picture:
            md += [f"![best blueprint]({picture})", ""]
    for name in plots:
        md += [f"![{name[:-4]}]({name})", ""]
    md += ["## Trials", "", "| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    md += ["", "Browse the study interactively: `optuna-dashboard " + _dashboard_url(info, out_dir) + "`", ""]
    md_path = write_text(out_dir / "report.md", "\n".join(md), kept=f"the search folder as it was ({SEARCH_INFO}, the study, trials.csv)")

    esc = html.escape
    body = [f"<h1>Search report: {esc(info['study'])}</h1>",
            f"<p>Blueprint: <code>{esc(info['blueprint'])}</code><br>Objectives: {esc(', '.join(f'{o.label} ({o.direction})' for o in cfg.objectives))}<br>"
            f"Trials: {esc(', '.join(f'{n} {s}' for s, n in counts.items()))}</p>"]
    if chosen is not None:
        body.append(f"<h2>Best configuration (trial {chosen.number})</h2><p>{esc(', '.join(f'{l} = {_cell(v)}' for l, v in zip(labels, chosen.values)))}</p>")
        body.append("<table><tr><th>path</th><th>base</th><th>best</th></tr>" + "".join(
            f"<tr><td><code>{esc(p)}</code></td><td><code>{esc(json.dumps(b))}</code></td><td><code>{esc(json.dumps(v))}</code></td></tr>" for p, b, v in diff) + "</table>")
        if picture:
            body.append(f'<p><img src="{esc(picture)}" alt="best blueprint" style="max-width:100%"></p>')
    for name in plots:
        body.append(f'<p><img src="{esc(name)}" alt="{esc(name[:-4])}" style="max-width:48%"></p>')
    body.append("<h2>Trials</h2><table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>" + "".join(
        "<tr>" + "".join(f"<td>{esc(_cell(c))}</td>" for c in row) + "</tr>" for row in rows) + "</table>")
    body.append(f"<p>Interactive: <code>optuna-dashboard {esc(_dashboard_url(info, out_dir))}</code></p>")
    style = "body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;font-size:0.9em}td,th{border:1px solid #ccc;padding:2px 6px}"
    html_path = write_text(out_dir / "report.html", f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(info['study'])}</title><style>{style}</style></head><body>"
                         + "\n".join(body) + "</body></html>\n", kept="report.md and the search folder as it was")
    return md_path, html_path


def _sampler_line(study: optuna.Study) -> str:
    """``Sampler: tpe (seed 0; ...), Optuna 5.1.0`` from the study's record (composer.search.sampler)."""
    from composer.search.sampler import describe_sampler

    record = study.user_attrs.get("sampler")
    if not isinstance(record, dict):
        return "Sampler: not recorded (a study begun by an older Composer)"
    versions = study.user_attrs.get("optuna_versions") or [study.user_attrs.get("optuna_version", "?")]
    return f"Sampler: `{describe_sampler(record)}`, Optuna {', '.join(map(str, versions))}"


def _dashboard_url(info: dict, out_dir: Path) -> str:
    storage = info.get("storage")
    if storage is None:
        return f"sqlite:///{(out_dir / 'study.db').resolve()}"
    if storage.startswith("journal:"):
        return storage.removeprefix("journal:")
    return storage
