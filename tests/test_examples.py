"""Every blueprint under examples/ validates, renders and trains one epoch, YAML only."""

import shutil
from pathlib import Path

import pytest

import composer

from shipped import EXAMPLES, ROOT


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_validates_renders_and_trains(path, tmp_path):
    bp = composer.load_blueprint(path)
    if shutil.which("dot"):
        out = composer.render(bp).render(str(tmp_path / "graph"), format="svg", cleanup=True)
        assert Path(out).stat().st_size > 0
    result = composer.train(bp, out=tmp_path / "run", epochs=1, progress=False)
    assert result.summary["best_epoch"] == 1


def test_the_search_space_of_an_example_reaches_its_variables(tmp_path):
    path = ROOT / "examples/hybrids/glomo_msaf_mfp.yaml"
    wide = composer.load_blueprint(path, ["vars.d=32", "vars.n=2"])
    assert wide.blocks["audio_coding"].dim == 32 and wide.blocks["split_attention"].channels == 16
    assert wide.blocks["audio_tokens"].steps == 2
