"""Palette and text formatting shared by every part of a rendered graph.

One colour pair (fill, border) per block family, chosen from a light, print-friendly
palette whose fills stay distinguishable in greyscale by their border shade; marks for
searchable fields, disabled blocks, shared weights and training views use fixed colours
so a reader learns them once.
"""

from __future__ import annotations

import html
from typing import Any

from composer.spec import Spec

__all__ = [
    "FAMILY_COLOURS",
    "SEARCH_COLOUR",
    "SHARE_COLOUR",
    "DISABLED_COLOUR",
    "VIEW_COLOURS",
    "FONT",
    "family_colours",
    "shape_text",
    "count_text",
    "value_text",
    "escape",
]

FONT = "Helvetica"

# family -> (fill, border/header text)
FAMILY_COLOURS: dict[str, tuple[str, str]] = {
    "modality": ("#EDEDED", "#595959"),
    "encoder": ("#DCE9F6", "#2F6497"),
    "projection": ("#DDEFD9", "#3A7D34"),
    "pooling": ("#FFF3CF", "#9A7400"),
    "fusion": ("#F9DCDC", "#A8322D"),
    "head": ("#E6DEF2", "#5E3C99"),
    "regularizer": ("#FCE6D2", "#B35806"),
    "loss": ("#F3DDE9", "#8E2C5E"),
    "other": ("#EEEEEE", "#555555"),
}
SEARCH_COLOUR = "#D35400"  # searchable fields and the search legend
SHARE_COLOUR = "#1B7F79"  # shared-weight edges
DISABLED_COLOUR = "#9E9E9E"  # bypassed blocks and their edges
VIEW_COLOURS = ("#333333", "#C0392B", "#2471A3", "#7D3C98", "#B9770E")  # main view first


def family_colours(family: str) -> tuple[str, str]:
    return FAMILY_COLOURS.get(family, FAMILY_COLOURS["other"])


def escape(text: Any) -> str:
    """Text safe inside a graphviz HTML-like label."""
    return html.escape(str(text), quote=True)


def shape_text(spec: Spec) -> str:
    """``sequence (B, T_text, 300)`` -> ``B × T_text × 300``; scalars read ``scalar``."""
    if spec.kind == "scalar" or not spec.shape:
        return "scalar"
    dims = " × ".join(str(d) for d in spec.shape)
    if spec.kind == "tokens":
        return f"{dims} ids"
    return dims


def count_text(n: int) -> str:
    """Parameter count in the style of papers: 940, 93.7k, 1.24M, 110M."""
    if n < 1000:
        return str(n)
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            x = n / div
            return (f"{x:.3g}" if x < 100 else f"{x:.0f}") + suffix
    return str(n)  # pragma: no cover - unreachable


def value_text(value: Any, limit: int = 36) -> str:
    """A config value as short text: lists inline, floats compact, long text cut with '…'."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, (list, tuple)):
        text = "[" + ", ".join(value_text(v, limit) for v in value) + "]"
    elif isinstance(value, dict):
        text = "{" + ", ".join(f"{k}: {value_text(v, limit)}" for k, v in value.items()) + "}"
    elif value is None:
        text = "none"
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
