"""Aligning an unaligned sequence to another's time axis, as MMSA's ``AlignSubNet`` does
(thuiar/MMSA ``models/subNets/AlignNets.py``; AMIO runs it before a model that needs word-aligned
inputs, ``need_model_aligned``): ``{target (B, T_t, ·), source (B, T_s, D)} -> (B, T_t, D)`` on
the target's time axis. Module: :mod:`composer.blocks.align`.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from composer.configs._base import BlockConfig, Shapes, SpecError, expect_kind
from composer.configs._shapes import conv1d, rnn, under
from composer.registry import block_type
from composer.spec import Spec, sequence

__all__ = ["AlignConfig"]

MODULES = "composer.blocks.align"


@block_type("other", implementation=f"{MODULES}:Align")
class AlignConfig(BlockConfig):
    """Align ``source (B, T_s, D)`` to ``target``'s time axis: ``-> (B, T_t, D)`` (target's mask).

    The target (a sequence, or tokens) is read for its time axis (length and mask) only. With ``S`` source and ``L``
    target steps (each sample's valid lengths; with ``padding: include`` the padded ``T_s``, ``T_t``):

    * ``avg_pool`` (MMSA's only mode in use): ``P = ⌈S / L⌉``; the source is extended to ``P·L``
      steps by repeating its last step, read as ``P`` rows of ``L`` and averaged over the rows:
      ``y_j = (1/P) Σ_{p<P} x_{min(p·L + j, S-1)}``, ``j < L`` (an *interleaved* average: steps
      ``j, j+L, j+2L, ...``; ``y = x`` when ``S = L``). No parameters.
    * ``ctc`` (MulT's CTC module, yaohungt/Multimodal-Transformer): a 2-layer LSTM ``D -> n+1``
      (``n = steps``, index 0 the blank), ``π = softmax(LSTM(x))[..., 1:]`` ``(B, T_s, n)``,
      ``y = πᵀ x`` ``(B, n, D)``; padded source steps get ``π = 0``. Needs the target's padded
      length ``steps``. Parameters: the LSTM's.
    * ``conv1d``: a learned map over positions, ``Conv1d(T_s, n, kernel 1, bias=False)`` on the
      steps as channels: ``y_j = Σ_i W_{j,i} x_i`` (padded source steps zeroed first). Needs
      ``steps`` and ``source_steps`` (both padded lengths fixed). Parameters ``n·T_s``. MMSA 2.2.1
      builds this mode but applies its audio and vision maps to the *text* (``conv1d_A(text_x)``),
      and AMIO never selects it; this is the map applied to the source.

    ``padding: exclude`` (default) uses each sample's valid lengths and zeroes the output's padded
    steps, so a sample's result never depends on its padding. ``include`` is MMSA's: the padded
    lengths, every padded step read as a step (the result depends on the batch's padding).
    """

    type: Literal["align"] = "align"
    shape_only_ports: ClassVar[tuple[str, ...]] = ("target",)  # its time axis and mask; never its values
    mode: Literal["avg_pool", "ctc", "conv1d"] = Field(
        default="avg_pool", description="avg_pool: MMSA's interleaved average (no parameters); ctc: MulT's CTC aligner; conv1d: a map over positions."
    )
    padding: Literal["exclude", "include"] = Field(
        default="exclude",
        description="exclude: each sample's valid lengths; include: the padded lengths, as MMSA (depends on padding).",
    )
    steps: int | None = Field(default=None, ge=1, description="ctc and conv1d: the target's padded length n (their weights depend on it).")
    source_steps: int | None = Field(default=None, ge=1, description="conv1d: the source's padded length T_s.")

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        if set(inputs) != {"target", "source"}:
            raise SpecError(f"align takes a mapping with ports 'target' and 'source', got {sorted(inputs)}", field="in")
        expect_kind("target", inputs["target"], "sequence", "tokens")  # its time axis only: words may be the target (MAG-BERT)
        expect_kind("source", inputs["source"], "sequence")
        target, source = inputs["target"], inputs["source"]
        if self.mode == "avg_pool":
            for field in ("steps", "source_steps"):
                if getattr(self, field) is not None:
                    raise SpecError(f"`{field}` is for modes ctc and conv1d; avg_pool reads the lengths of each batch", field=field)
        else:
            if self.steps is None:
                raise SpecError(f"mode {self.mode} needs `steps`, the target's padded length (its weights depend on it)", field="steps")
            if isinstance(target.time, int) and target.time != self.steps:
                raise SpecError(f"steps is {self.steps} but the target has {target.time} steps", field="steps")
        if self.mode == "conv1d":
            if self.source_steps is None:
                raise SpecError("mode conv1d needs `source_steps`, the source's padded length (its weights depend on it)", field="source_steps")
            if isinstance(source.time, int) and source.time != self.source_steps:
                raise SpecError(f"source_steps is {self.source_steps} but the source has {source.time} steps", field="source_steps")
        elif self.source_steps is not None:
            raise SpecError("`source_steps` is for mode conv1d", field="source_steps")
        return {"out": Spec("sequence", (source.batch, target.time, source.features))}

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        width = int(inputs["source"].features)
        if self.mode == "ctc":
            return under("ctc", rnn("lstm", width, self.steps + 1, layers=2))
        if self.mode == "conv1d":
            return under("conv", conv1d(self.source_steps, self.steps, 1, bias=False))
        return {}

    @classmethod
    def examples(cls):
        return [
            ({}, {"target": sequence("T_t", 2), "source": sequence("T_s", 3)}),
            ({}, {"target": sequence("T_t", 4), "source": sequence("T_t", 3)}),
            ({"padding": "include"}, {"target": sequence(3, 2), "source": sequence(8, 3)}),
            ({"mode": "ctc", "steps": 4}, {"target": sequence(4, 2), "source": sequence("T_s", 3)}),
            ({"mode": "conv1d", "steps": 3, "source_steps": 7}, {"target": sequence(3, 2), "source": sequence(7, 3)}),
        ]
