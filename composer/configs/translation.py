"""Cyclic sequence-to-sequence translation between modalities: MCTN's blocks.

The Multimodal Cyclic Translation Network (Pham, Liang, Manzini, Morency, Póczos, "Found in
Translation: Learning Robust Joint Representations by Cyclic Translations Between Modalities",
AAAI 2019) learns a joint representation by translating a source modality into a target one
(the encoder's states are the representation), back again (the cyclic translation, trained by a
cycle-consistency loss), and, hierarchically, that representation into a third modality; the
prediction reads the last encoder's states, so at test time only the source is read. The blocks
follow MMSA 2.2.1's code (``MMSA/models/singleTask/MCTN.py``: ``Encoder``, ``Attention``,
``Decoder``, ``Seq2Seq``, ``Regression``), one sequence-to-sequence translation being an encoder
and a decoder:

``translation_encoder``: ``(B, T, D_s)`` -> ``out`` = ``E (B, T, H)`` and ``directions`` ``(B, T, 2H)``::

    [h→_t; h←_t] = biLSTM(x)_t,     e_t = h→_t + h←_t           (the two directions summed; E = [e_t])

``translation_decoder``: ``{memory: E, directions, target: (B, T, D_t)}`` -> ``(B, T, D_t)``::

    s_1 = tanh(W_s (h→_T + h←_1))                     (the last state of each direction)
    a_t = softmax_j(v · tanh(W_a [s_t; e_j]))         (attention over the source steps j)
    c_t = Σ_j a_tj e_j
    d_t = Σ_directions biLSTM([y_{t-1}; c_t]), one step from a zero state;   s_{t+1} = d_t
    ŷ_t = W_o [d_t; c_t] + b_o    for t = 2..T (teacher forcing: y_{t-1} is the target's);   ŷ_1 = 0

MCTN's loss is ``λ_y L1(ŷ, y) + Σ λ MSE(translation, target)`` over the forward, the cyclic and
the second-level translation (MMSA: λ = 0.1 each, λ_y = 1): ``mse`` losses of the blueprint.
The cycle is the forward encoder and decoder used again on the translation (``share:``; MMSA's
``seq2seq1`` called twice); the template ``cyclic_translation``
(blueprints/zoo/templates/translation.yaml) says it.

``recurrent_attention_head``: ``(B, T, H)`` -> ``(B, out)``: an LSTM over the representation,
``α = softmax_t(tanh(w · r_t + b_w))``, ``ŷ = W (Σ_t α_t r_t) + b`` (MCTN's regression on ``E``).

``pad_features``: ``(B, T, D)`` -> ``(B, T, width)``, zeros appended to the features (MMSA
pads audio and vision to the widest modality so every translation has one width, ``F.pad``).

``recur_over: batch`` reproduces MMSA 2.2.1, whose ``nn.LSTM``s run without ``batch_first`` on
batch-first tensors: they recur over the *samples of the batch* and treat the time steps as
their batch, so one sample's outputs depend on the others in its batch and its position in it;
the attention of the translation then runs over the batch too, while the head's pooling runs
over time. The default, ``time``, recurs over time as the paper does and masks padding (packed
LSTMs, attention and pooling over valid steps, zero translations at padded steps).
Modules: :mod:`composer.blocks.translation`.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from composer.configs._base import BlockConfig, Shapes, SpecError, Width, expect_kind, expect_ports
from composer.configs._shapes import linear, rnn, under
from composer.registry import block_type
from composer.spec import Spec, sequence, vector

__all__ = ["TranslationEncoderConfig", "TranslationDecoderConfig", "RecurrentAttentionHeadConfig", "PadFeaturesConfig", "RecurOver"]

MODULES = "composer.blocks.translation"

RecurOver = Literal["time", "batch"]
_RECUR = "time: the paper's recurrence over time steps, padding masked; batch: MMSA 2.2.1's, whose LSTMs without batch_first recur over the samples of a batch (padding read)."


def _known(port: str, spec: Spec) -> int:
    expect_kind(port, spec, "sequence")
    if not isinstance(spec.features, int):
        raise SpecError(f"input '{port}' needs a known width, got {spec}", field="in")
    return spec.features


@block_type("encoder", implementation=f"{MODULES}:TranslationEncoder")
class TranslationEncoderConfig(BlockConfig):
    """MCTN's translation encoder (Pham et al., AAAI 2019; MMSA 2.2.1's ``Encoder``): the joint
    representation of a source sequence.

    Input ``(B, T, D)``. Outputs: ``out`` = ``E`` ``(B, T, H)``, the bidirectional LSTM's two
    directions summed (then dropout), and ``directions`` ``(B, T, 2H)``, the two directions side by
    side (a ``translation_decoder`` reads its initial state from their last steps). Submodule
    ``rnn`` (a biLSTM ``D → H``).
    """

    type: Literal["translation_encoder"] = "translation_encoder"
    hidden: Width = Field(description="H: the width of E (MMSA's hid_dim).")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout on E (MMSA: 0).")
    recur_over: RecurOver = Field(default="time", description=_RECUR)

    main_port: ClassVar[str | None] = "out"

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        expect_ports(inputs, exactly=1)
        (port, spec), = inputs.items()
        _known(port, spec)
        return {"out": spec.with_features(self.hidden), "directions": spec.with_features(2 * self.hidden)}

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        (spec,) = inputs.values()
        return under("rnn", rnn("lstm", int(spec.features), self.hidden, 1, True))

    @classmethod
    def examples(cls):
        return [({"hidden": 4}, {"in": sequence("T_x", 5)}), ({"hidden": 3, "recur_over": "batch"}, {"in": sequence(4, 2)})]


@block_type("head", implementation=f"{MODULES}:TranslationDecoder")
class TranslationDecoderConfig(BlockConfig):
    """MCTN's attention decoder (Pham et al., AAAI 2019; MMSA 2.2.1's ``Attention``, ``Decoder`` and the loop of
    ``Seq2Seq``): a target sequence translated from an encoder's representation, teacher-forced.

    Inputs (a mapping): ``memory`` ``E (B, T, H)`` and ``directions`` ``(B, T, 2H)`` (a
    ``translation_encoder``'s two ports) and ``target (B, T, D_t)`` on the same time axis. Output
    ``(B, T, D_t)``: step 1 is zero, step t reads the target's step t - 1. Submodules ``state``
    (``W_s``, no bias), ``attention.attn`` (``W_a``, no bias), ``attention.v`` (no bias),
    ``rnn`` (a biLSTM ``D_t + H → H``, one step from a zero state, so its ``weight_hh`` never
    acts, as in MMSA) and ``out`` (``W_o``: ``2H → D_t``).
    """

    type: Literal["translation_decoder"] = "translation_decoder"
    recur_over: RecurOver = Field(default="time", description=_RECUR)

    #: The target is what the decoder translates into: read as its teacher-forced previous steps
    #: only (never the last step; nothing of a one-step sample), so no content check applies.
    shape_only_ports: ClassVar[tuple[str, ...]] = ("target",)

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        if set(inputs) != {"memory", "directions", "target"}:
            raise SpecError(
                "give the inputs as a mapping with the ports 'memory' and 'directions' (a translation_encoder's `out` and "
                f"`directions`) and 'target' (the sequence to translate into), got ports {sorted(inputs)}",
                field="in",
            )
        widths = {p: _known(p, s) for p, s in inputs.items()}
        if widths["directions"] != 2 * widths["memory"]:
            raise SpecError(f"directions {inputs['directions']} must be twice as wide as memory {inputs['memory']}", field="in")
        if len({s.shape[:2] for s in inputs.values()}) != 1:
            shown = ", ".join(f"{p} {s}" for p, s in inputs.items())
            raise SpecError(f"memory, directions and target must share one time axis (give the modalities one `time:` symbol): {shown}", field="in")
        return {"out": inputs["target"]}

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        h, d_t = int(inputs["memory"].features), int(inputs["target"].features)
        return {
            **under("state", linear(h, h, bias=False)),
            **under("attention.attn", linear(2 * h, h, bias=False)),
            **under("attention.v", linear(h, 1, bias=False)),
            **under("rnn", rnn("lstm", d_t + h, h, 1, True)),
            **under("out", linear(2 * h, d_t)),
        }

    @classmethod
    def examples(cls):
        return [
            ({}, {"memory": sequence("T", 3), "directions": sequence("T", 6), "target": sequence("T", 4)}),
            ({"recur_over": "batch"}, {"memory": sequence(5, 2), "directions": sequence(5, 4), "target": sequence(5, 3)}),
        ]


@block_type("head", implementation=f"{MODULES}:RecurrentAttentionHead")
class RecurrentAttentionHeadConfig(BlockConfig):
    """MCTN's regression on the joint representation (MMSA 2.2.1's ``Regression``): ``(B, T, D)`` -> ``(B, out)``.

    ``r = LSTM(x)`` (width ``hidden``, default ``D``), ``α = softmax_t(tanh(w · r_t + b_w))``,
    ``ŷ = W (Σ_t α_t r_t) + b``. Submodules ``rnn``, ``score`` (``Linear(hidden, 1)``), ``out``.
    """

    type: Literal["recurrent_attention_head"] = "recurrent_attention_head"
    hidden: Width | None = Field(default=None, description="The LSTM's width (default: the input's, as MMSA's LSTM(hid_dim, hid_dim)).")
    out: Width = Field(default=1, description="Output width.")
    recur_over: RecurOver = Field(default="time", description=_RECUR)

    def width(self, spec: Spec) -> int:
        return self.hidden if self.hidden is not None else int(spec.features)

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        expect_ports(inputs, exactly=1)
        (port, spec), = inputs.items()
        _known(port, spec)
        return {"out": vector(self.out, batch=spec.batch)}

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        (spec,) = inputs.values()
        h = self.width(spec)
        return {**under("rnn", rnn("lstm", int(spec.features), h, 1, False)), **under("score", linear(h, 1)), **under("out", linear(h, self.out))}

    @classmethod
    def examples(cls):
        return [({}, {"in": sequence("T_x", 4)}), ({"hidden": 3, "out": 2, "recur_over": "batch"}, {"in": sequence(5, 2)})]


@block_type("other", implementation=f"{MODULES}:PadFeatures")
class PadFeaturesConfig(BlockConfig):
    """Zeros appended to the features: ``(B, D)`` or ``(B, T, D)`` -> the same kind with ``width`` (≥ D)
    features (MMSA's MCTN pads audio and vision to the widest modality, ``F.pad``). No parameters."""

    type: Literal["pad_features"] = "pad_features"
    width: Width = Field(description="The width after padding (at least the input's).")

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        expect_ports(inputs, exactly=1)
        (port, spec), = inputs.items()
        expect_kind(port, spec, "sequence", "vector")
        if not isinstance(spec.features, int) or spec.features > self.width:
            raise SpecError(f"input '{port}' {spec} is wider than width {self.width}: padding only adds features", field="width")
        return {"out": spec.with_features(self.width)}

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        return {}

    @classmethod
    def examples(cls):
        return [({"width": 6}, {"in": sequence("T_x", 4)}), ({"width": 3}, {"in": vector(3)})]
