"""The documentation cannot rot: generated pages are fresh, every example is checked, the site builds.

* ``docs/reference/*.md`` equal a fresh ``python -m composer.docs_gen`` (regenerated in memory).
* Every fenced code block of ``README.md`` and ``docs/**/*.md`` is checked by its language, by
  the conventions of ``docs/writing-docs.md``:

  - ``yaml`` with a top-level ``blueprint:`` key is a whole blueprint: ``composer.load_blueprint``
    must accept it (schema, graph, shapes);
  - any other ``yaml`` block is a *fragment* of a blueprint: it must parse, its top-level keys
    must be blueprint sections (or block ids mapping to blocks), and every block and loss type
    and every field name in it must exist (values may be placeholders or ``${vars}``);
  - ``bash``/``sh``/``shell`` lines, ``console`` lines after ``$``, and lines of unlabelled blocks
    that start with ``composer``: each ``composer ...`` command is parsed against the real
    CLI (unknown command or option, missing argument, bad value fail); ``bash scripts/X``
    and ``python X.py`` must name files of the repository;
  - ``python`` must compile;
  - ``<!-- docs: skip -->`` before a block exempts it.
* The worked example of the custom-block tutorial passes its own tests (``examples/custom_block``).
* ``mkdocs build --strict`` succeeds with no warning (skipped only when mkdocs is not installed;
  ``scripts/setup.sh`` installs it).
"""

from __future__ import annotations

import ast
import importlib.util
import re
import shlex
import subprocess
import sys
import textwrap
import types
import typing
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from composer import docs_gen
from composer.blocks._base import BlockConfig
from composer.registry import get_block, get_loss, list_blocks, list_losses
from composer.blueprint.load import load_blueprint
from composer.blueprint.schema import BlueprintBase
from composer.errors import ComposerError
from composer.losses._base import LossConfig

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^(?P<indent>[ ]*)(?P<fence>```+|~~~+)(?P<lang>[\w+-]*)[^\n]*$")
MARK = re.compile(r"<!--\s*docs:\s*(?P<mark>[\w-]+)\b[^>]*-->")


@dataclass
class Block:
    path: Path
    line: int
    lang: str
    text: str
    mark: str | None

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def code_blocks(path: Path) -> list[Block]:
    """Fenced code blocks with their language and the ``<!-- docs: ... -->`` mark before them."""
    lines = path.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence = len(m["indent"]), m["fence"]
        previous = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        mark = MARK.search(previous)
        body, j = [], i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            body.append(lines[j][min(indent, len(lines[j]) - len(lines[j].lstrip(" "))):])
            j += 1
        blocks.append(Block(path, i + 1, m["lang"].lower(), "\n".join(body) + "\n", mark["mark"] if mark else None))
        i = j + 1
    return blocks


ALL_BLOCKS = [b for path in DOC_FILES for b in code_blocks(path) if b.mark != "skip"]


def _ids(blocks):
    return [b.where for b in blocks]


# -- YAML ---------------------------------------------------------------------------------------

YAML_BLOCKS = [b for b in ALL_BLOCKS if b.lang in ("yaml", "yml")]


def _members(annotation) -> list:
    """An annotation's alternatives: Optional and unions opened, Annotated unwrapped."""
    if typing.get_origin(annotation) is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [m for a in typing.get_args(annotation) for m in _members(a)]
    return [] if annotation is type(None) else [annotation]


def _models(annotation) -> list[type[BaseModel]]:
    return [m for m in _members(annotation) if isinstance(m, type) and issubclass(m, BaseModel)]


def _container(annotation, kind) -> typing.Any:
    """The item annotation of a list (``kind=list``) or the value annotation of a dict, else Any."""
    for m in _members(annotation):
        if typing.get_origin(m) is kind or (kind is list and typing.get_origin(m) is tuple):
            args = typing.get_args(m)
            return args[-1 if kind is dict else 0] if args else typing.Any
    return typing.Any


def _field(model: type[BaseModel], key: str):
    for name, f in model.model_fields.items():
        if key in (name, f.alias):
            return f
    return None


def check_names(value, annotation, where: str, templates: set[str], problems: list[str]) -> None:
    """Every key of every mapping must be a field of the model it stands for; block and loss
    types must be registered. Values are not type-checked (a fragment may use ${vars})."""
    models = _models(annotation)
    if isinstance(value, dict) and isinstance(value.get("type"), str) and all(issubclass(m, (BlockConfig, LossConfig)) for m in models):
        if value["type"] in templates:
            return
        try:
            entry = get_loss(value["type"]) if where.startswith("losses") else get_block(value["type"])
        except ComposerError as exc:  # an unknown type, with a suggestion
            problems.append(f"{where}: {exc}")
            return
        models = [entry.config]
    if isinstance(value, list):
        for i, item in enumerate(value):
            check_names(item, _container(annotation, list), f"{where}[{i}]", templates, problems)
    elif isinstance(value, dict) and models:
        for key, item in value.items():
            if key == "...":  # a placeholder for fields left out
                continue
            fields = [f for m in models if (f := _field(m, str(key)))]
            if not fields:
                problems.append(f"{where}: unknown field '{key}'")
            else:
                check_names(item, fields[0].annotation, f"{where}.{key}", templates, problems)
    elif isinstance(value, dict):
        for key, item in value.items():
            check_names(item, _container(annotation, dict), f"{where}.{key}", templates, problems)


def check_fragment(data) -> list[str]:
    problems: list[str] = []
    if not isinstance(data, dict):
        return ["a fragment must be a mapping"]
    templates = set((data.get("templates") or {}))
    for key, value in data.items():
        if key == "blocks":
            for block_id, config in (value or {}).items():
                check_names(config, typing.Any, f"blocks.{block_id}", templates, problems)
        elif key == "losses":
            for i, loss in enumerate(value or []):
                check_names(loss, typing.Any, f"losses[{i}]", templates, problems)
        elif (field := _field(BlueprintBase, key)) is not None:
            check_names(value, field.annotation, key, templates, problems)
        elif isinstance(value, dict) and "type" in value:  # a mapping of block ids to blocks
            check_names(value, typing.Any, f"blocks.{key}", templates, problems)
        else:
            problems.append(f"'{key}' is neither a blueprint section nor a block id with a `type`")
    return problems


@pytest.mark.parametrize("block", YAML_BLOCKS, ids=_ids(YAML_BLOCKS))
def test_yaml_example(block):
    data = yaml.safe_load(block.text)
    if isinstance(data, dict) and "blueprint" in data:
        load_blueprint(block.text, source=block.where)  # raises with every problem
        return
    problems = check_fragment(data)
    assert not problems, f"{block.where}: " + "; ".join(problems)


def test_fragment_checker_catches_mistakes():
    assert check_fragment({"blocks": {"enc": {"type": "lstm", "in": "text", "hidden": 8}}}) == []
    assert check_fragment({"training": {"optimizer": "adam", "scheduler": {"type": "cosine", "warmup_steps": 3}}}) == []
    assert any("hiden" in p for p in check_fragment({"blocks": {"enc": {"type": "lstm", "hiden": 8}}}))
    assert any("lstmm" in p for p in check_fragment({"enc": {"type": "lstmm", "in": "x"}}))
    assert any("lr_rate" in p for p in check_fragment({"training": {"lr_rate": 1}}))
    assert any("epoch" in p for p in check_fragment({"search": {"epoch": 3}}))
    assert any("huber" in p for p in check_fragment({"losses": [{"type": "huber", "pred": "head"}]}))


# -- shell ----------------------------------------------------------------------------------------

SHELL_LANGS = ("bash", "sh", "shell", "console", "")


def shell_commands(block: Block) -> list[tuple[int, str]]:
    """``(line, command)`` pairs worth checking in a shell-like block."""
    out, pending, start = [], "", 0
    for n, raw in enumerate(block.text.splitlines(), start=block.line + 1):
        line = raw.strip()
        if block.lang == "console" or (block.lang == "" and line.startswith("$ ")):
            if not line.startswith("$ ") and not pending:
                continue
            line = line.removeprefix("$ ")
        elif block.lang == "" and not line.startswith("composer "):
            continue
        if not pending:
            start = n
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        out.append((start, pending + line))
        pending = ""
    return out


def _cli():
    import typer.main

    from composer.cli import app

    return typer.main.get_command(app)


def check_command(words: list[str]) -> str | None:
    """None when the ``composer`` words parse against the CLI, else the reason."""
    root = _cli()
    ctx = root.make_context("composer", [], resilient_parsing=True)
    group, rest, name = root, list(words), "composer"
    while hasattr(group, "list_commands"):
        if not rest:
            return f"'{name}' needs a command"
        if rest[0] == "--help":
            return None
        cmd = group.get_command(ctx, rest[0])
        if cmd is None:
            return f"unknown command '{rest[0]}' (commands: {', '.join(group.list_commands(ctx))})"
        name, group, rest = rest[0], cmd, rest[1:]
        if hasattr(cmd, "list_commands"):
            ctx = cmd.make_context(name, [], parent=ctx, resilient_parsing=True)
    if "--help" in rest:
        return None
    try:
        group.make_context(name, rest, parent=ctx)
    except Exception as exc:  # click's UsageError / BadParameter (typer vendors click)
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        return f"{type(exc).__name__}: {message}"
    return None


def split_pipeline(command: str) -> list[list[str]]:
    """The simple commands of a shell line (split at ``| && || ; &``, redirections and comments dropped)."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split, lexer.commenters = True, "#"
    commands, words, tokens = [], [], list(lexer)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token in ("|", "||", "&&", ";", "&"):
            commands.append(words)
            words = []
        elif token.isdigit() and i + 1 < len(tokens) and tokens[i + 1][:1] in ("<", ">"):
            pass  # the file descriptor of a redirection (2>&1)
        elif set(token) <= set("<>&"):
            i += 1  # a redirection and its target
        else:
            words.append(token)
        i += 1
    return [w for w in commands + [words] if w]


def check_shell(command: str) -> str | None:
    """None when every ``composer`` command of a shell line parses and every named script exists."""
    try:
        pipeline = split_pipeline(command)
    except ValueError as exc:
        return f"cannot split: {exc}"
    for words in pipeline:
        while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):  # VAR=value prefixes
            words = words[1:]
        if not words:
            continue
        why = None
        if Path(words[0]).name == "composer":
            why = check_command(words[1:])
        elif words[:3] in (["python", "-m", "composer"], ["python3", "-m", "composer"]):
            why = check_command(words[3:])
        else:
            script = next((w for w in words[:2] if w.startswith(("scripts/", "examples/"))), None)
            if script and words[0] in ("bash", "sh", "python", "python3", script) and not (ROOT / script).is_file():
                why = f"{script} does not exist"
        if why:
            return why
    return None


SHELL_BLOCKS = [b for b in ALL_BLOCKS if b.lang in SHELL_LANGS and shell_commands(b)]


@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=_ids(SHELL_BLOCKS))
def test_shell_example(block):
    problems = [f"line {n}: `{cmd}`: {why}" for n, cmd in shell_commands(block) if (why := check_shell(cmd))]
    assert not problems, f"{block.where}: " + "; ".join(problems)


def test_shell_checker_catches_mistakes():
    assert check_shell("composer train blueprints/late_fusion.yaml --epochs 2 --set training.lr=3e-4") is None
    assert check_shell("composer data inspect mosi.pkl --json out.json") is None
    assert "unknown command" in check_shell("composer trian blueprints/late_fusion.yaml")
    assert "--epoch" in check_shell("composer train blueprints/late_fusion.yaml --epoch 2")
    assert check_shell("composer train") is not None  # missing BLUEPRINT
    assert check_shell("composer train x.yaml --epochs 0") is not None  # below min=1
    assert "does not exist" in check_shell("bash scripts/no_such_script.sh")
    assert "does not exist" in check_shell("python examples/missing.py --fast")
    assert "--bogus" in check_shell('cd /tmp && composer validate "a b.yaml" --bogus | head -3  # "|" in a comment')
    assert check_shell("composer blocks 'msaf*' --details > blocks.txt 2>&1") is None


# -- Python --------------------------------------------------------------------------------------

PY_BLOCKS = [b for b in ALL_BLOCKS if b.lang in ("python", "py")]


@pytest.mark.parametrize("block", PY_BLOCKS, ids=_ids(PY_BLOCKS))
def test_python_example_compiles(block):
    ast.parse(textwrap.dedent(block.text), filename=block.where)  # an excerpt may be a method


def test_examples_were_collected():
    """The collectors find the examples (a broken fence regex would silently check nothing)."""
    whole = [b for b in YAML_BLOCKS if "blueprint:" in b.text]
    assert len(whole) >= 30 and len(SHELL_BLOCKS) >= 15 and len(PY_BLOCKS) >= 5, (len(whole), len(SHELL_BLOCKS), len(PY_BLOCKS))
    assert any(b.path.name == "README.md" for b in SHELL_BLOCKS)


# -- generated pages, the worked example, the site ------------------------------------------------


def test_generated_pages_are_fresh():
    pages = docs_gen.generate()
    stale = docs_gen.stale_pages(pages)
    assert not stale, f"stale generated pages {stale}: refresh them with `.venv/bin/python -m composer.docs_gen`"


def test_reference_documents_every_block_and_loss():
    pages = docs_gen.generate()
    text = "".join(pages.values())
    missing = [e.name for e in list_blocks() + list_losses() if e.builtin and f"## `{e.name}`" not in text]
    assert not missing
    cli = pages[str(docs_gen.REFERENCE / "cli.md")]
    assert all(f"## `composer {name}`" in cli for name in ("train", "evaluate", "search", "search-report", "data inspect", "render", "bench"))


def test_custom_block_tutorial_quotes_the_example():
    """Every code excerpt of the tutorial is copied verbatim from examples/custom_block."""
    sources = "\n".join(p.read_text() for p in sorted((ROOT / "examples" / "custom_block").glob("*.*")))
    excerpts = [b for b in code_blocks(ROOT / "docs" / "tutorials" / "custom-block.md") if b.lang in ("python", "yaml")]
    assert len(excerpts) >= 6
    stale = [b.where for b in excerpts if b.text.strip() not in sources]
    assert not stale, f"tutorial excerpts no longer in examples/custom_block: {stale}"


def test_custom_block_example_passes_its_tests():
    """examples/custom_block is the tutorial's worked example; it runs in its own process so
    its block does not join this process's registry (and the generated pages)."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-o", "addopts=", "-p", "no:cacheprovider", "examples/custom_block"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    passed = re.search(r"\b(\d+) passed", result.stdout)
    assert passed and int(passed[1]) >= 8 and "failed" not in result.stdout, result.stdout[-500:]


def test_site_builds_strict(tmp_path):
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings_handlers") is None:
        pytest.skip("mkdocs / mkdocstrings[python] not installed (scripts/setup.sh installs the `docs` extra)")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "WARNING" not in output, output[-4000:]
    assert (tmp_path / "site" / "reference" / "blocks-fusion.html").exists()
    assert (tmp_path / "site" / "tutorials" / "first-model.html").exists()
