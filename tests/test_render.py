"""Rendering blueprints with graphviz: formats, content marks, expansion, missing ``dot``."""

from __future__ import annotations

import glob
import shutil
from pathlib import Path

import pytest
from torch import nn

import composer
from composer.cli import main as cli_main
from composer.errors import ComposerError
from composer.render import InsidePart, inside_of, render, render_to_file, write_graph
from composer.render._style import count_text, shape_text

ROOT = Path(__file__).resolve().parents[1]
BLUEPRINTS = sorted(glob.glob(str(ROOT / "blueprints" / "*.yaml")))
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz `dot` is not installed")

SMALL = """
blueprint: 1
name: small
task: {kind: regression, outputs: 1}
modalities:
  text:  {features: 12, length: 6}
  audio: {features: 5,  length: 6}
blocks:
  text_enc:  {type: lstm, in: text,  hidden: 8, output: last}
  audio_enc: {type: lstm, in: audio, hidden: 8, output: last}
  text_proj:  {type: linear, in: text_enc, out: 8}
  audio_proj: {type: linear, in: audio_enc, out: 8, share: text_proj}
  fusion: {type: concat, in: [text_proj, audio_proj]}
  refine: {type: linear, in: fusion, out: 16, enabled: false}
  head:   {type: mlp, in: refine, hidden: [8], out: 1}
losses:
  - {type: l1, pred: head}
  - {name: consistency, type: l1, pred: "incomplete:head", target: head, weight: 0.5}
training:
  views: {incomplete: {type: temporal_mask, rate: 0.3, modalities: [text]}}
search:
  space:
    blocks.text_enc.hidden: {int: [4, 16]}
    blocks.refine.enabled: {choice: [true, false]}
    losses.1.weight: {float: [0.1, 1.0]}
    training.lr: {float: [1.0e-4, 1.0e-2], log: true}
"""


def _svg_text(graph) -> str:
    return graph.pipe(format="svg").decode("utf-8")


# -- every shipped blueprint ---------------------------------------------------------------
@needs_dot
@pytest.mark.parametrize("path", BLUEPRINTS, ids=[Path(p).stem for p in BLUEPRINTS])
def test_shipped_blueprint_renders_to_svg_png_and_dot(path, tmp_path):
    bp = composer.load_blueprint(path)
    graph = render(bp, params=False)
    svg = write_graph(graph, tmp_path / "g.svg").read_text(encoding="utf-8")
    png = write_graph(graph, tmp_path / "g.png", dpi=50).read_bytes()
    dot = write_graph(graph, tmp_path / "g.dot").read_text(encoding="utf-8")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert dot.startswith("digraph")
    for block_id in bp.blocks:  # each block's header is a text element of its own
        assert f">{block_id}</text>" in svg, block_id
    for node in bp.plan.nodes:  # each input edge is labelled "[port: ]B × T_x × D"
        for spec in node.in_specs.values():
            assert f"{shape_text(spec)}</text>" in svg, (node.id, spec)


def test_every_shipped_blueprint_is_covered_by_the_glob():
    assert any(p.endswith("late_fusion.yaml") for p in BLUEPRINTS)


# -- command line ------------------------------------------------------------------------
@needs_dot
@pytest.mark.parametrize("suffix, magic", [("svg", b"<?xml"), ("png", b"\x89PNG"), ("pdf", b"%PDF"), ("dot", b"digraph")])
def test_cli_render_writes_the_format_of_the_extension(suffix, magic, tmp_path):
    out = tmp_path / f"late.{suffix}"
    rc = cli_main(["render", str(ROOT / "blueprints" / "late_fusion.yaml"), "-o", str(out), "--no-params", "--dpi", "50"])
    assert rc == 0
    assert out.read_bytes().startswith(magic)


def test_cli_render_applies_set_overrides(tmp_path):
    out = tmp_path / "late.dot"
    rc = cli_main(["render", str(ROOT / "blueprints" / "late_fusion.yaml"), "-o", str(out), "--no-params", "--set", "blocks.head.dropout=0.3"])
    assert rc == 0
    assert "dropout = 0.3" in out.read_text(encoding="utf-8")


def test_cli_render_refuses_an_unknown_extension(tmp_path, capsys):
    rc = cli_main(["render", str(ROOT / "blueprints" / "late_fusion.yaml"), "-o", str(tmp_path / "late.jpg")])
    assert rc == 1
    assert ".svg, .png, .pdf, .dot" in capsys.readouterr().err


# -- missing dot ------------------------------------------------------------------------------
def test_missing_dot_gives_a_composer_error_naming_the_packages(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without `dot`
    with pytest.raises(ComposerError) as info:
        render_to_file(ROOT / "blueprints" / "late_fusion.yaml", tmp_path / "late.svg", params=False)
    message = str(info.value)
    assert "apt-get install graphviz" in message and "brew install graphviz" in message
    assert not (tmp_path / "late.svg").exists()


def test_missing_dot_still_writes_dot_source(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    path = render_to_file(ROOT / "blueprints" / "late_fusion.yaml", tmp_path / "late.dot", params=False)
    assert path.read_text(encoding="utf-8").startswith("digraph")


def test_cli_reports_missing_dot_without_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    rc = cli_main(["render", str(ROOT / "blueprints" / "late_fusion.yaml"), "-o", str(tmp_path / "late.png")])
    assert rc == 1
    err = capsys.readouterr().err
    assert "graphviz" in err and "Traceback" not in err


# -- content ----------------------------------------------------------------------------------
def test_parameter_counts_per_block_match_the_model():
    bp = composer.load_blueprint(ROOT / "blueprints" / "late_fusion.yaml")
    model = composer.compile_blueprint(bp)
    source = render(bp).source
    for block_id, n in model.parameter_counts().items():
        assert f"{count_text(n)} params" in source, block_id
    assert f"{sum(p.numel() for p in model.parameters()):,} parameters" in source


def test_edges_carry_inferred_shapes_with_symbolic_batch_and_time():
    source = render(ROOT / "blueprints" / "late_fusion.yaml", params=False).source
    assert 'label="B × T_text × 300"' in source
    assert 'label="B × 112"' in source


def test_blocks_are_coloured_by_family():
    from composer.render._style import FAMILY_COLOURS

    source = render(ROOT / "blueprints" / "late_fusion.yaml", params=False).source
    for family in ("modality", "encoder", "fusion", "head", "loss"):
        assert FAMILY_COLOURS[family][0] in source, family


def test_disabled_block_is_drawn_bypassed():
    source = render(SMALL, params=False).source
    refine = next(line for line in source.splitlines() if line.strip().startswith("b__refine ["))
    assert "DASHED" in refine and "bypassed" in refine
    assert any("b__fusion -> b__refine" in line and "dashed" in line for line in source.splitlines())


def test_shared_block_has_dashed_edge_to_its_owner():
    source = render(SMALL, params=False).source
    edge = next(line for line in source.splitlines() if "b__audio_proj -> b__text_proj" in line)
    assert "dashed" in edge and "shared weights" in edge
    assert "shares weights of text_proj" in source


def test_search_space_fields_are_marked():
    source = render(SMALL, params=False).source
    assert "◆ hidden = 8 ∈ 4…16" in source
    assert "◆ enabled ∈ {true, false}" in source
    assert "◆ weight = 0.5 ∈ 0.1…1" in source
    assert "also searched: training.lr ∈ 0.0001…0.01 log" in source


def test_losses_comparing_views_are_drawn_per_view():
    source = render(SMALL, params=False).source
    assert "pred [incomplete]" in source
    assert "incomplete: temporal_mask, rate 0.3 on text" in source
    assert "cluster_losses" in source


def test_a_loss_that_starts_later_says_from_which_epoch():
    late = SMALL.replace('target: head, weight: 0.5}', 'target: head, weight: 0.5, from_epoch: 3}')
    assert "from epoch 3" in render(late, params=False).source
    assert "from epoch" not in render(SMALL, params=False).source


def test_auxiliary_loss_ports_feed_the_auxiliary_losses_node():
    text = SMALL.replace(
        "  head:   {type: mlp, in: refine, hidden: [8], out: 1}",
        "  experts: {type: moe, in: refine, out: 16, experts: 2, top_k: 1}\n  head:   {type: mlp, in: experts.out, hidden: [8], out: 1}",
    )
    source = render(text, params=False).source
    assert "aux_losses [" in source
    assert any("b__experts -> aux_losses" in line and "balance" in line for line in source.splitlines())


def test_direction_top_down_and_bad_direction():
    assert "rankdir=TB" in render(SMALL, params=False, direction="TB").source
    with pytest.raises(ComposerError, match="LR"):
        render(SMALL, params=False, direction="diagonal")


def test_overrides_are_applied():
    source = render(ROOT / "blueprints" / "late_fusion.yaml", overrides=["blocks.text_enc.hidden=24"], params=False).source
    assert "hidden = 24" in source


def test_python_api_returns_a_digraph():
    import graphviz

    assert "render" in composer.__all__
    assert isinstance(composer.render(SMALL, params=False), graphviz.Digraph)


# -- composite blocks -------------------------------------------------------------------------
def test_expand_draws_a_cluster_from_the_module_tree():
    source = render(ROOT / "blueprints" / "late_fusion.yaml", depth=2, expand=["head"]).source
    assert "subgraph cluster_head" in source
    assert "Linear 112→64" in source and "Linear 64→1" in source
    assert "subgraph cluster_text_enc" not in source


def test_expand_rejects_unknown_blocks():
    with pytest.raises(ComposerError, match="did you mean 'head'"):
        render(ROOT / "blueprints" / "late_fusion.yaml", expand=["haed"])


def test_module_tree_parts_add_up_and_sequential_is_chained():
    torch_seq = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    parts = inside_of(torch_seq, depth=1)
    assert [p.label for p in parts] == ["Linear 4→8", "Linear 8→2"]  # ReLU hidden
    assert parts[1].inputs == (parts[0].name,)
    assert sum(p.params for p in parts) == sum(p.numel() for p in torch_seq.parameters())


def test_repeated_layers_read_as_n_times_class():
    class Stack(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(nn.init.ones_(nn.Linear(1, 3).weight.detach().clone()))
            self.layers = nn.ModuleList(nn.Linear(3, 3) for _ in range(4))

    parts = inside_of(Stack(), depth=2)
    assert parts[0].name == "(parameters)" and parts[0].params == 3
    assert parts[1].label == "4 × Linear" and parts[1].params == 48
    assert parts[1].parts == ()  # a Linear has no inside


def test_describe_inside_protocol_is_used():
    class Described(nn.Module):
        def describe_inside(self):
            return [
                {"name": "gate", "label": "softmax gate", "params": 10},
                InsidePart("mix", "weighted sum", 0, inputs=("gate",)),
            ]

    parts = inside_of(Described(), depth=1)
    assert [(p.name, p.label, p.params, p.inputs) for p in parts] == [
        ("gate", "softmax gate", 10, ()),
        ("mix", "weighted sum", 0, ("gate",)),
    ]


def test_no_params_hides_counts_even_when_expanding():
    source = render(ROOT / "blueprints" / "late_fusion.yaml", params=False, depth=1).source
    assert " params" not in source and "subgraph cluster_head" in source


def test_describe_inside_parts_are_drawn_with_their_flow_and_recurrent_edges():
    bp = composer.load_blueprint(ROOT / "blueprints" / "late_fusion.yaml")
    model = composer.compile_blueprint(bp)
    model.head.describe_inside = lambda: [
        InsidePart("cell", "recurrent cell", 5, inputs=("state",)),
        InsidePart("state", "state update", 7, inputs=("cell",)),
    ]
    lines = render(bp, model=model, expand=["head"]).source.splitlines()
    forward = next(line for line in lines if "p__head__0 -> p__head__1" in line)
    back = next(line for line in lines if "p__head__1 -> p__head__0" in line)
    assert "dashed" not in forward
    assert "dashed" in back and "constraint=false" in back
    assert any("recurrent cell" in line for line in lines)
