"""Config of the BERT encoder with a Multimodal Adaptation Gate inside (MAG-BERT, Rahman et al., ACL 2020).

Block ``mag_bert``: ``{tokens (B, T), m_1 (B, T, D_1), ..., m_k (B, T, D_k)} -> cls (B, H), seq (B, T, H) [, pooled (B, H)]``.

The ``bert`` block (:mod:`composer.configs.text`) with the Multimodal Adaptation Gate inside:
the fields, the equations and the shapes are in :class:`MAGBertConfig`'s docstring (``composer
blocks``, the reference pages); the module is :mod:`composer.blocks.mag_bert`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from composer.configs._base import Shapes, SpecError, expect_ports
from composer.configs._shapes import layer_norm, linear, under
from composer.configs.text import TextEncoderConfig, text_sizes
from composer.registry import block_type
from composer.spec import Spec, sequence, tokens

__all__ = ["MAGBertConfig", "gate_shapes"]


def gate_shapes(hidden: int, widths: dict[str, int]) -> Shapes:
    """Parameters of the Multimodal Adaptation Gate for width ``hidden`` and nonverbal widths
    ``{port: D_m}``: ``gates.<m>`` ``Linear(D_m + H, H)``, ``shifts.<m>`` ``Linear(D_m, H)``, ``norm``."""
    shapes: Shapes = {}
    for port, width in widths.items():
        shapes.update(under(f"gates.{port}", linear(width + hidden, hidden)))
    for port, width in widths.items():
        shapes.update(under(f"shifts.{port}", linear(width, hidden)))
    return {**shapes, **under("norm", layer_norm(hidden))}


@block_type("encoder", implementation="composer.blocks.mag_bert:MAGBert")
class MAGBertConfig(TextEncoderConfig):
    """BERT with the Multimodal Adaptation Gate after layer ``injection_index`` (MAG-BERT, §3 eqs. 1-5).

    ``{tokens (B, T), m_1 (B, T, D_1), ..., m_k (B, T, D_k)} -> cls (B, H), seq (B, T, H)
    [, layers (B, k·T, H)] [, pooled (B, H)]``: the ``bert`` block (the same ``model``, ``init``,
    ``weights``, sizes, ``pooler``, ``segment_key``, ``hidden_layers``, ...) with the gate on the
    hidden state after layer ``injection_index`` (0 = the embedding output, as in MAG-BERT and
    MMSA's ``BERT_MAG``; k = the output of layer k). ``in:`` maps one tokens port (the words) and
    one or more sequence ports on the words' time axis (e.g. ``{text: text, audio: audio, vision:
    vision}``). The gate shifts each word's hidden state ``Z_i`` by its nonverbal steps ``X_m,i``:

    * eq. (1)-(2), a gate per nonverbal modality m: ``g_m = ReLU(W_gm [X_m,i ; Z_i] + b_gm)``
      (``gates.<m>``: ``Linear(D_m + H, H)``; the modality's features first, then ``Z_i``, as in the
      authors' and MMSA's code);
    * eq. (3), the displacement vector: ``H_i = Σ_m g_m ⊙ (W_m X_m,i + b_m)`` (``shifts.<m>``:
      ``Linear(D_m, H)``; MMSA's code gives each modality's projection a bias where the paper has
      one ``b_H``);
    * eq. (5), the scaling: ``α_i = min(β · ‖Z_i‖₂ / (‖H_i‖₂ + ε), 1)`` with ``β`` = ``beta_shift``
      and ε = 1e-6 (a zero ``‖H_i‖`` is read as 1);
    * eq. (4), then layer norm and dropout (§3, after eq. 5): ``Z̄_i = Dropout(LayerNorm(Z_i + α_i H_i))``
      (``norm``: ``nn.LayerNorm(H)``, ε = 1e-5; ``gate_dropout``), which the layers above read in
      place of ``Z_i``.

    The paper writes the gate for acoustic and visual inputs; here it takes any number of sequence
    inputs, named by their ports. Padded steps are shifted too, but BERT's attention mask keeps
    every layer above from reading them, so the outputs do not depend on padding (``seq`` is zero
    there, as for ``bert``). ``hidden_layers`` read the shifted states; ``freeze: true`` fixes
    BERT's weights but not the gate's, which still learns through the frozen layers above it.
    """

    type: Literal["mag_bert"] = "mag_bert"  # type: ignore[assignment]
    injection_index: int = Field(
        default=0,
        ge=0,
        description="Hidden state the gate shifts: 0 = the embedding output (MAG-BERT, MMSA), k = the output of layer k.",
    )
    beta_shift: float = Field(default=1.0, gt=0.0, description="β of eq. 5: the largest shift as a fraction of ‖Z_i‖.")
    gate_dropout: float = Field(default=0.5, ge=0.0, lt=1.0, description="Dropout after the gate's LayerNorm (§3, after eq. 5).")

    @model_validator(mode="after")
    def _gate_needs_inputs(self) -> "MAGBertConfig":
        ports = self.input_map()
        if len(ports) < 2 or isinstance(self.inputs, str):
            raise ValueError("`in` needs the tokens and at least one nonverbal sequence, e.g. {text: text, audio: audio, vision: vision}")
        return self

    def split_inputs(self, inputs: dict[str, Spec]) -> tuple[str, dict[str, Spec]]:
        """The tokens port and the nonverbal ports (in order); a SpecError when they do not fit."""
        expect_ports(inputs, at_least=2)
        words = [port for port, spec in inputs.items() if spec.kind == "tokens"]
        if len(words) != 1:
            raise SpecError(f"expected exactly one tokens input (the words), got {len(words)} among {', '.join(inputs)}", field="in")
        (word_port,) = words
        time = inputs[word_port].time
        others = {port: spec for port, spec in inputs.items() if port != word_port}
        for port, spec in others.items():
            if spec.kind != "sequence":
                raise SpecError(f"input '{port}' must be a sequence aligned with the words, got {spec}", field="in")
            if spec.time != time:
                raise SpecError(
                    f"input '{port}' is on time axis {spec.time}, the words on {time}: the gate shifts each word by its "
                    "own step, so the sequences must be word-aligned (give the modalities one `time:` symbol)",
                    field="in",
                )
        return word_port, others

    def gate_widths(self, inputs: dict[str, Spec]) -> dict[str, int]:
        """The gate's nonverbal ports and their widths ``{port: D_m}``."""
        _, others = self.split_inputs(inputs)
        return {port: int(spec.features) for port, spec in others.items()}

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        word_port, _ = self.split_inputs(inputs)
        out = super().infer({word_port: inputs[word_port]})
        layers = text_sizes(self).num_hidden_layers
        if self.injection_index > layers:
            raise SpecError(
                f"injection_index {self.injection_index} is beyond the encoder's {layers} layers (0 = embeddings .. {layers})",
                field="injection_index",
            )
        return out

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        word_port, _ = self.split_inputs(inputs)
        gate = gate_shapes(text_sizes(self).hidden_size, self.gate_widths(inputs))
        return {**super().parameter_shapes({word_port: inputs[word_port]}), **under("gate", gate)}

    @classmethod
    def examples(cls):
        tiny = {"init": "random", "hidden_size": 8, "num_layers": 2, "num_heads": 2, "intermediate_size": 16, "vocab_size": 128}
        aligned = {"text": tokens("T"), "audio": sequence("T", 3), "vision": sequence("T", 5)}
        return [
            ({**tiny, "gate_dropout": 0.3}, aligned),
            ({**tiny, "injection_index": 2, "pooler": True, "beta_shift": 0.5, "segment_key": "text_segment"}, aligned),
            ({**tiny, "injection_index": 1, "hidden_layers": [-2, -1], "freeze": True}, {"words": tokens(5), "audio": sequence(5, 4)}),
        ]
