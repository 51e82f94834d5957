"""The blueprint files the repository ships, for the tests parametrized over them."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
#: Paper presets, their variants and the zoo of baselines equal to MMSA (blueprints/zoo/, docs/zoo.md).
PRESETS = sorted([*ROOT.glob("blueprints/*.yaml"), *ROOT.glob("blueprints/variants/*.yaml"), *ROOT.glob("blueprints/zoo/*.yaml")])
SEARCHES = sorted(ROOT.glob("blueprints/search/*.yaml"))


def _needs_plugins(path: Path) -> bool:
    data = yaml.safe_load(path.read_text())
    return isinstance(data, dict) and bool(data.get("plugins"))


#: Examples made of built-in blocks. An example that registers its own block (`plugins:`, the
#: custom-block tutorial) is tested by its own test in a separate process (tests/test_docs.py).
EXAMPLES = sorted(p for p in ROOT.glob("examples/**/*.yaml") if not _needs_plugins(p))


def _datasets(path: Path) -> list[str]:
    data = yaml.safe_load(path.read_text())
    table = data.get("datasets") if isinstance(data, dict) else None
    return [str(name) for name in table] if isinstance(table, dict) else []


#: (preset, dataset) for every entry of every shipped preset's ``datasets:`` section.
PRESET_DATASETS = [(path, name) for path in PRESETS for name in _datasets(path)]
