"""References: how a blueprint names a value, parsed in one place.

A reference is ``[view:]source[.port]``:

- ``source``: a modality, a block id (``pair/ab`` for a block expanded from a template), or in a
  loss one of the batch's own entries (``label``, ``mask.<modality>``);
- ``port``: one output of a block with several (an encoder's ``seq`` and ``pooled``);
- ``view``: in a loss, the view of the batch whose forward pass is meant (``main`` by default,
  e.g. ``incomplete:fusion.global``).

Blocks' ``in:``, ``outputs:``, loss fields and template ports all use this one type.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Ref", "MAIN_VIEW", "SEPARATOR", "BATCH_REFS"]

#: The view of the batch as given (losses may name other views of ``training.views``).
MAIN_VIEW = "main"
#: Joins a template use and an inner block into the expanded block's id (``pair/ab``).
SEPARATOR = "/"
#: What a batch holds besides its inputs, readable by training-only blocks (and losses): the
#: label, each sample's position in its split ``index`` ``(B,)`` and the split's size.
BATCH_REFS = ("label", "index", "split_size")


@dataclass(frozen=True)
class Ref:
    """A parsed reference; ``key`` is the value's name in the graph (``enc``, ``enc.seq``)."""

    source: str
    port: str | None = None
    view: str = MAIN_VIEW

    @staticmethod
    def parse(text: str) -> "Ref":
        """``"incomplete:fusion.global"`` -> ``Ref("fusion", "global", "incomplete")``."""
        view, _, rest = str(text).rpartition(":")
        source, _, port = rest.partition(".")
        return Ref(source, port or None, view or MAIN_VIEW)

    @staticmethod
    def from_key(key: str) -> "Ref":
        """A value key of the graph (``enc`` or ``enc.seq``, no view) -> its Ref."""
        source, _, port = key.partition(".")
        return Ref(source, port or None)

    @property
    def key(self) -> str:
        return self.source if self.port is None else f"{self.source}.{self.port}"

    @property
    def text(self) -> str:
        """The reference as written (the view only when it is not ``main``)."""
        return self.key if self.view == MAIN_VIEW else f"{self.view}:{self.key}"
