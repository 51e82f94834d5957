"""``limit_length``: a sequence read only as far as another input's valid length.

MMSA 2.2.1's MISA (``models/singleTask/MISA.py``, ``alignment`` and ``extract_features``) packs
the audio and visual sequences with the *text's* lengths (the sum of BERT's attention mask,
[CLS] and [SEP] included) and runs its LSTMs on that prefix only, also on unaligned data where
audio and vision have hundreds of steps of their own. This block says that reading in a graph:
its output is the input ``x`` on a new time axis whose valid steps are the first
``min(L_by, L_x)`` (``padding: exclude``) or ``min(L_by, T_x)`` (``padding: include``: MMSA's,
which reads ``x``'s padded steps when the text is longer than ``x``). MISA (Hazarika et al. 2020)
§3.2 takes the utterance vectors ``u_a``, ``u_v`` from the final states of these LSTMs, on
word-aligned data where the text's lengths are the audio's and the vision's. Module:
:mod:`composer.blocks.lengths`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from composer.configs._base import BlockConfig, Shapes, SpecError, expect_kind
from composer.registry import block_type
from composer.spec import Spec, sequence, tokens

__all__ = ["LimitLengthConfig", "limited_time"]

MODULES = "composer.blocks.lengths"


def limited_time(x: Spec, by: Spec) -> str:
    """The output's time symbol: a new axis of ``x``'s length whose mask comes from ``by``."""
    return f"{x.time}_by_{by.time}"


@block_type("other", implementation=f"{MODULES}:LimitLength")
class LimitLengthConfig(BlockConfig):
    """A sequence read for another input's valid length: ``{x: (B, T, D), by: (B, T', ·)} -> (B, T, D)``.

    The output is ``x`` on a new time axis (``<T>_by_<T'>``) whose padding mask keeps the first
    ``n_b`` steps of sample ``b``, ``n_b = min(L_by,b, L_x,b)`` (``padding: exclude``, the
    default: never a padded step of ``x``) or ``n_b = min(L_by,b, T)`` (``padding: include``:
    padded steps of ``x`` count as valid up to ``L_by``, as MMSA's MISA packs audio and vision with
    the text's lengths, ``pack_padded_sequence(x, lengths_text)``). ``L`` is an input's valid
    length (its whole axis when it has no mask); ``by`` may be a sequence or tokens (BERT's ids,
    whose mask counts [CLS] and [SEP]); only its mask is read, never its values, so no gradient
    reaches it. Steps past ``n_b`` are zeroed. No parameters.
    """

    type: Literal["limit_length"] = "limit_length"
    padding: Literal["exclude", "include"] = Field(
        default="exclude",
        description=(
            "exclude: at most x's own valid steps (padding invariant); include: up to by's length even past x's "
            "valid steps, reading x's padding as MMSA's MISA does. Depends on padding."
        ),
    )

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        if set(inputs) != {"x", "by"}:
            raise SpecError(f"needs inputs `x` (the sequence) and `by` (whose lengths it takes), a mapping; got {sorted(inputs)}", field="in")
        expect_kind("x", inputs["x"], "sequence")
        expect_kind("by", inputs["by"], "sequence", "tokens")
        x = inputs["x"]
        return {"out": x.with_time(limited_time(x, inputs["by"]))}

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        return {}

    @classmethod
    def examples(cls):
        return [
            ({}, {"x": sequence("T_audio", 3), "by": tokens("T_text")}),
            ({}, {"x": sequence(7, 2), "by": tokens("T_text")}),
        ]
