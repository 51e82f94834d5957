"""`composer search-report` writes a page a browser opens, and the fusion zoo runs end to end."""

import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

import composer
from composer.cli import main
from composer.search import search

ROOT = Path(__file__).parents[1]


def test_search_report_page_has_trials_plots_picture_and_the_diff(tmp_path, capsys):
    from tests_search_toy import toy_file

    search(toy_file(tmp_path), out=tmp_path / "s", trials=3)
    assert main(["search-report", str(tmp_path / "s")]) == 0
    page = (tmp_path / "s" / "report.html").read_text()
    md = (tmp_path / "s" / "report.md").read_text()
    assert "Differences from the base blueprint" in md and "blocks.text_enc.hidden" in md
    assert "## Trials" in md and "optuna-dashboard sqlite:///" in md

    sources = []

    class Images(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag == "img":
                sources.append(dict(attrs)["src"])

    Images().feed(page)
    assert "history.png" in sources
    if shutil.which("dot"):
        assert "report_best.svg" in sources
    for src in sources:
        assert (tmp_path / "s" / src).exists(), src


def test_report_needs_a_search_folder(tmp_path, capsys):
    assert main(["search-report", str(tmp_path)]) == 1
    assert "no search.json" in capsys.readouterr().err


ZOO = ROOT / "blueprints/search/fusion_zoo.yaml"
SMALL = ["training.epochs=1", "training.data.samples={train: 32, valid: 16, test: 16}", "modalities.audio.length=8", "modalities.vision.length=7", "modalities.text.length=6"]


@pytest.mark.parametrize("index", range(5))
def test_every_fusion_operator_of_the_zoo_builds_and_trains(index, tmp_path):
    raw = yaml.safe_load(ZOO.read_text())
    raw["blocks"]["fusion"] = raw["search"]["space"]["blocks.fusion"]["choice"][index]
    raw["blocks"]["msaf_seq"]["enabled"] = index % 2 == 0
    result = composer.train(composer.load_blueprint(raw, SMALL), out=tmp_path / "run", progress=False)
    assert result.summary["best_epoch"] == 1


def test_fusion_zoo_search_runs_end_to_end(tmp_path):
    result = search(ZOO, overrides=SMALL, out=tmp_path / "s", trials=3, sampler="random", seed=4)
    assert len(result.study.trials) == 3 and result.best_blueprint is not None
    composer.load_blueprint(result.best_blueprint)


def test_report_md_shows_hostile_choice_values_as_text(tmp_path):
    from tests_search_toy import TOY, toy_file

    hostile = ["<script>alert(1)</script>", "[x](javascript:alert(1))"]
    space = {**TOY["search"]["space"], "description": {"choice": hostile}}
    search(toy_file(tmp_path, space=space), out=tmp_path / "s", trials=3)
    assert main(["search-report", str(tmp_path / "s")]) == 0
    import re

    md = (tmp_path / "s" / "report.md").read_text()
    outside_code = re.sub(r"`[^`]*`", "", md)  # a code span renders literally: neither HTML nor a link
    assert "<script>" not in outside_code and "](javascript:" not in outside_code
    assert "&lt;script&gt;" in md or "\\[x\\]\\(javascript" in md  # shown as text
