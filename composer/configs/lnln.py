"""LNLN, the Language-dominated Noise-resistant Learning Network (Zhang, Wang, Yu, "Towards Robust
Multimodal Sentiment Analysis with Incomplete Data", NeurIPS 2024): configs of its blocks.
Module: :mod:`composer.blocks.lnln`; the adversarial loss: :mod:`composer.configs.losses.lnln`.

* ``random_missing`` — LNLN's training-time incomplete data (§4.1 and the authors'
  ``core/dataset.py``): per sample a missing rate ``r ~ U(0, 1)``, except a fraction of samples
  kept complete (``r = 0``), and each valid step dropped with probability ``r`` (features ->
  0, tokens -> [UNK], special tokens kept: :func:`composer.layers.missing.drop_steps`). Outputs
  the incomplete input and the completeness label ``1 - r`` (eq. 4's target). In training only:
  at evaluation the input passes unchanged and the label is 1.
* ``dmc`` — Dominant Modality Correction (§3.2): the completeness check (eq. 3: a token
  encoder with one learned token over the language, then ``σ(W_2 LeakyReLU(W_1 ·))``), the
  proxy dominant feature generator (eq. 5: a token encoder over ``[H_p; H_a; H_v]`` whose
  ``n`` tokens are ``H_p``'s proxy), the gradient reversal on the proxy (the adversarial
  learning of eq. 6) and the correction ``H_d = (1 - w) H_p + w H_l`` (eq. 7).

The reconstructor (§3.4, eq. 9) is three ``almt_transformer`` blocks, the effectiveness
discriminator (eq. 6) an ``mlp`` with ``share:``, and DMML (§3.3) ALMT's ``ahl`` and
``almt_fusion``: blueprints/zoo/lnln.yaml.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from composer.configs._base import BlockConfig, Shapes, SpecError, expect_kind, expect_ports
from composer.configs._shapes import linear, under
from composer.configs.almt import fixed_length, token_encoder
from composer.registry import block_type
from composer.spec import Spec, sequence, tokens, vector

__all__ = ["RandomMissingConfig", "DMCConfig"]

MODULES = "composer.blocks.lnln"


@block_type("regularizer", implementation=f"{MODULES}:RandomMissing")
class RandomMissingConfig(BlockConfig):
    """LNLN's random missing data in training: ``sequence (B, T, D)`` or ``tokens (B, T)`` -> ``out`` (the same), ``completeness (B, 1)``.

    Per sample ``r ~ U(low, high)`` (``rate_range``), set to 0 with probability ``complete``;
    every valid step ``t`` is dropped where ``u_t < r`` (``u_t ~ U(0, 1)``): features become 0,
    token ids ``unk_token``, ``special_tokens`` ([CLS], [SEP], [PAD]) and padding are never
    dropped. ``completeness`` is ``1 - r``, the target of LNLN's completeness check (eq. 4). In
    evaluation the input passes unchanged and ``completeness`` is 1 (the robustness protocols mask
    test data themselves: ``composer evaluate --missing-rates``, ``composer robustness``).
    Draws come from PyTorch's generator (seeded by ``training.seed``), a new rate per sample and
    batch. No parameters.
    """

    type: Literal["random_missing"] = "random_missing"
    complete: float = Field(default=0.5, ge=0.0, le=1.0, description="Probability that a sample stays complete (LNLN: half the training set).")
    rate_range: tuple[float, float] = Field(default=(0.0, 1.0), description="The missing rate r of an incomplete sample is drawn uniformly from this range.")
    unk_token: int = Field(default=100, ge=0, description="Token id of a dropped token ([UNK] in BERT).")
    special_tokens: list[int] = Field(default=[101, 102, 0], description="Token ids never dropped ([CLS], [SEP], [PAD]).")

    main_port = "out"

    @model_validator(mode="after")
    def _ordered_range(self) -> "RandomMissingConfig":
        low, high = self.rate_range
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"rate_range must satisfy 0 <= low <= high <= 1, got {list(self.rate_range)}")
        return self

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        expect_ports(inputs, exactly=1)
        (port, spec), = inputs.items()
        expect_kind(port, spec, "sequence", "tokens")
        return {"out": spec, "completeness": vector(1, batch=spec.batch)}

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        return {}

    @classmethod
    def examples(cls):
        return [
            ({}, {"in": sequence("T_x", 4)}),
            ({"complete": 0.0, "rate_range": [0.2, 0.6]}, {"in": tokens("T_t")}),
        ]


@block_type("fusion", implementation=f"{MODULES}:DMC")
class DMCConfig(BlockConfig):
    """LNLN's Dominant Modality Correction (§3.2, eqs. 3-7): ``{language, audio, vision: (B, n_m, d)}``
    -> ``dominant (B, n, d)``, ``completeness (B, 1)``, ``proxy (B, n, d)``.

    * completeness check (eq. 3): ``w = σ(W_2 LeakyReLU_0.1(W_1 E_c([c; H_l])[0]))``, ``E_c`` a
      token encoder (``check_layers`` layers) with one learned token ``c``;
    * proxy dominant features (eq. 5): ``H_p' = E_p([t; H_p; H_a; H_v])[:n]``, ``n`` learned
      tokens ``t`` (zeros) and ``n`` learned proxy vectors ``H_p`` (ones), ``E_p`` with
      ``proxy_layers`` layers; then a gradient reversal layer (scale ``-grl``) on ``H_p'``, so the
      effectiveness discriminator's loss (eq. 6) trains the generator adversarially;
    * correction (eq. 7): ``H_d = (1 - w) · H_p' + w · H_l``.

    Token encoders: :class:`~composer.configs.almt.ALMTTransformerConfig`'s layers (learned
    positions, pre-LN attention with ``heads`` of ``dim_head``, GELU feed-forward of ``mlp``). All
    inputs are fixed-length sequences of one width; ``n`` is the language's length.
    Parameters: ``n·d`` (H_p) ``+ (n + 1)·d + d + check_layers·layer + d·s + s + s + 1`` (``s``:
    ``score_hidden``) ``+ (2n + n_a + n_v)·d + n·d + proxy_layers·layer``.
    """

    type: Literal["dmc"] = "dmc"
    heads: int = Field(default=8, ge=1, description="Attention heads of both token encoders.")
    dim_head: int = Field(default=64, ge=1, description="Head width (the authors' default 64).")
    mlp: int | None = Field(default=None, ge=1, description="Feed-forward width of both token encoders (`hidden_dim`); default d.")
    check_layers: int = Field(default=2, ge=1, description="Layers of the completeness check's encoder (`completeness_check.depth`).")
    proxy_layers: int = Field(default=2, ge=1, description="Layers of the proxy generator (`proxy_dominant_feature_generator.depth`).")
    score_hidden: int | None = Field(default=None, ge=1, description="Hidden width of the completeness score (`hidden_dim / 2`); default d/2.")
    grl: float = Field(default=1.0, ge=0.0, description="Gradient reversal scale on the proxy (the authors' GRL alpha); 0 stops its gradient.")

    main_port = "dominant"

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        if set(inputs) != {"language", "audio", "vision"}:
            raise SpecError(f"needs inputs `language`, `audio` and `vision` (a mapping), got {sorted(inputs)}", field="in")
        for port in ("language", "audio", "vision"):
            fixed_length(port, inputs[port], "LNLN corrects the compact token representations")
        widths = {port: inputs[port].features for port in inputs}
        if len(set(widths.values())) != 1:
            raise SpecError(f"language, audio and vision need one width, got {widths}", field="in")
        language = inputs["language"]
        return {"dominant": language, "completeness": vector(1, batch=language.batch), "proxy": language}

    def score_width(self, d: int) -> int:
        return self.score_hidden or max(1, d // 2)

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        language = inputs["language"]
        d, n = int(language.features), int(language.time)
        mlp, s = self.mlp or d, self.score_width(d)
        joined = n + int(inputs["audio"].time) + int(inputs["vision"].time)
        return {
            "proxy_tokens": (1, n, d),
            **under("completeness_encoder", token_encoder(d, n, 1, self.check_layers, self.heads, self.dim_head, mlp)),
            **under("completeness_score.0", linear(d, s)),
            **under("completeness_score.2", linear(s, 1)),
            **under("proxy_generator", token_encoder(d, joined, n, self.proxy_layers, self.heads, self.dim_head, mlp)),
        }

    @classmethod
    def examples(cls):
        return [
            ({"heads": 2, "dim_head": 3, "mlp": 5, "check_layers": 1, "proxy_layers": 2},
             {"language": sequence(3, 8), "audio": sequence(2, 8), "vision": sequence(4, 8)}),
            ({"heads": 1, "dim_head": 6, "grl": 0.5, "score_hidden": 2},
             {"language": sequence(2, 6), "audio": sequence(2, 6), "vision": sequence(2, 6)}),
        ]
