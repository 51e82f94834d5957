"""The papers' numbers in the presets' ``reported:`` blocks (``composer reproduce`` prints them
beside Composer's own).

Every entry must name metrics that Composer computes for the preset's task (for the robustness
protocols ``per_rate`` and ``lnln``: ``auilc_<metric>`` or ``mean_<metric>``), hold accuracies
and F1 in percent (in (1, 100]: a fraction would be a unit slip), MAE >= 0 and Corr in [-1, 1],
name its table, and have at most one entry per protocol (``composer reproduce`` uses the first).
Where the paper texts are at hand (``/work/shared/papers`` or ``$COMPOSER_PAPERS``), every entry's
numbers, written as the paper prints them, must all occur in one line (one table row) of the paper
file its ``source`` names.

Presets with a reported number (``<preset>_<dataset>``: the preset at ``--dataset <dataset>``,
where its ``datasets:`` entry brings the dataset's own ``reported:``): rmfn, rmfn_no_mfp, rmfn_iemocap, rmfn_pom, msaf, msaf_authors,
glomo, glomo_mosei, glomo_authors, glomo_authors_mosei, glomo_global_only, glomo_local_only,
glomo_mlp_m, emt_dlfr, emt_dlfr_authors, emt_dlfr_authors_mosei, emt_dlfr_authors_sims, emt_dlfr_complete,
emt_dlfr_mosei, emt_dlfr_sims, hct_mg, hct_mg_mosei, hct_mg_iemocap, mult.

Presets without one, and why:

* ``early_fusion``, ``late_fusion``: Composer's own small baselines. HCT-MG's Table 2 has EF-LSTM
  and LF-LSTM (1.24M) rows, but for other, larger models than these two.
* ``msaf_placements``: MSAF's placement ablation (Table 5) is on NTU RGB+D only; no MOSEI numbers
  exist for the early / intermediate / late positions.
* ``rmfn_classification``: RMFN's MOSI A2 / F1 come from its regression model (L1 loss) read as a
  sign; the paper trains no cross-entropy classifier.
* EMT-DLFR's complete-setting MOSEI and CH-SIMS rows (Tables 4 and 5) are EMT trained without
  DLFR, which only ``emt_dlfr_complete`` (MOSI) trains; the MOSEI and CH-SIMS presets train with
  DLFR, so they carry their incomplete-setting AUILC only.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from composer import load_blueprint
from composer.metric_names import metric_names

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted((ROOT / "blueprints").glob("*.yaml")) + sorted((ROOT / "blueprints" / "variants").glob("*.yaml"))
PAPERS = Path(os.environ.get("COMPOSER_PAPERS", "/work/shared/papers"))

WITH_REPORTED = {
    "rmfn", "rmfn_no_mfp", "rmfn_iemocap", "rmfn_pom", "msaf", "msaf_authors",
    "glomo", "glomo_mosei", "glomo_authors", "glomo_authors_mosei", "glomo_global_only", "glomo_local_only", "glomo_mlp_m",
    "emt_dlfr", "emt_dlfr_authors", "emt_dlfr_authors_mosei", "emt_dlfr_authors_sims", "emt_dlfr_complete", "emt_dlfr_mosei", "emt_dlfr_sims",
    "hct_mg", "hct_mg_mosei", "hct_mg_iemocap", "mult",
}
WITHOUT_REPORTED = {"early_fusion", "late_fusion", "msaf_placements", "rmfn_classification"}
ROBUSTNESS_PREFIXES = ("auilc_", "mean_")


def _loaded():
    """Every preset, and every dataset of its ``datasets:`` with settings of its own as
    ``<preset>_<dataset>`` (``glomo_mosei``: ``glomo.yaml --dataset mosei``)."""
    loaded = {}
    for path in PRESETS:
        base = loaded[path.stem] = load_blueprint(path)
        loaded.update({f"{path.stem}_{name}": load_blueprint(path, dataset=name) for name, settings in base.datasets.items() if settings})
    return loaded


BLUEPRINTS = _loaded()
ENTRIES = [(name, i, entry) for name, bp in BLUEPRINTS.items() for i, entry in enumerate(bp.reported)]


def _base(metric: str) -> str:
    for prefix in ROBUSTNESS_PREFIXES:
        if metric.startswith(prefix):
            return metric[len(prefix):]
    return metric


def _printed(metric: str, value: float) -> str:
    """The value as the papers print it: MAE and Corr with 3 decimals, percentages with 1."""
    return f"{value:.3f}" if _base(metric).split("_")[0] in ("mae", "corr") else f"{value:.1f}"


def _allowed(bp, protocol: str) -> set[str]:
    names = {n for n in metric_names(bp.task) if n != "loss"}
    if protocol == "standard":
        return names
    return {prefix + n for prefix in ROBUSTNESS_PREFIXES for n in names}


def test_the_docstring_lists_every_preset():
    having = {name for name, bp in BLUEPRINTS.items() if bp.reported}
    assert having == WITH_REPORTED
    assert set(BLUEPRINTS) - having == WITHOUT_REPORTED


@pytest.mark.parametrize("name", sorted(WITH_REPORTED))
def test_one_entry_per_protocol(name):
    protocols = [entry.protocol for entry in BLUEPRINTS[name].reported]
    assert len(protocols) == len(set(protocols)), protocols


@pytest.mark.parametrize("name,index,entry", ENTRIES, ids=[f"{n}-{i}" for n, i, _ in ENTRIES])
def test_metric_names_are_computed_for_the_task(name, index, entry):
    unknown = set(entry.metrics) - _allowed(BLUEPRINTS[name], entry.protocol)
    assert not unknown, f"{name}: {sorted(unknown)} are not metrics Composer computes for this task / protocol"


@pytest.mark.parametrize("name,index,entry", ENTRIES, ids=[f"{n}-{i}" for n, i, _ in ENTRIES])
def test_values_are_in_range(name, index, entry):
    for metric, value in entry.metrics.items():
        base = _base(metric)
        if base.startswith(("acc", "sims_acc", "f1")):
            assert 1.0 < value <= 100.0, f"{name}.{metric} = {value}: percentages as printed"
        elif base.startswith("mae"):
            assert value >= 0.0, f"{name}.{metric} = {value}"
        elif base.startswith("corr"):
            assert -1.0 <= value <= 1.0, f"{name}.{metric} = {value}"
        else:
            pytest.fail(f"{name}.{metric}: no range check for this metric")


@pytest.mark.parametrize("name,index,entry", ENTRIES, ids=[f"{n}-{i}" for n, i, _ in ENTRIES])
def test_source_names_paper_file_and_table(name, index, entry):
    assert re.search(r"papers/\w+\.(md|txt)", entry.source), entry.source
    assert re.search(r"Table \d", entry.source), entry.source
    assert entry.dataset and entry.note


@pytest.mark.skipif(not PAPERS.is_dir(), reason="the paper texts are not available here")
@pytest.mark.parametrize("name,index,entry", ENTRIES, ids=[f"{n}-{i}" for n, i, _ in ENTRIES])
def test_numbers_are_one_row_of_the_paper(name, index, entry):
    paper = PAPERS / re.search(r"papers/(\w+\.(?:md|txt))", entry.source).group(1)
    wanted = {_printed(metric, value) for metric, value in entry.metrics.items()}
    rows = [set(re.findall(r"\d+\.\d+", line)) for line in paper.read_text(encoding="utf-8").splitlines()]
    assert any(wanted <= row for row in rows), f"{name}: no line of {paper.name} holds all of {sorted(wanted)}"


def test_printed_form_round_trips():
    """The row check compares text, so a value must print back exactly as written in the YAML."""
    for name, _, entry in ENTRIES:
        for metric, value in entry.metrics.items():
            assert float(_printed(metric, value)) == value, f"{name}.{metric} = {value} has more digits than printed"
