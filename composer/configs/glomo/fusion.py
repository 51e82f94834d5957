"""GLoMo global-guided fusion (§3.5, eqs. 8-13) and the fusion ablations of Table 4.

Block ``glomo_fusion``: inputs named ``global_<m>`` and ``local_<m>`` (vectors ``(B, d)``, one
pair per modality m, in the order given) -> ``out (B, out)`` [, ``weights (B, M)``].

``strategy: global_guided`` (the paper):

* eq. 8: the ``2M`` vectors ``[g_1..g_M, l_1..l_M]`` form tokens ``(B, 2M, d)`` for a
  ``layers``-layer transformer encoder without positions (PyTorch's post-LN
  ``TransformerEncoderLayer``: ``heads`` heads, feed-forward ``ff_dim``, ReLU, ``dropout``);
* eq. 9: ``Z_m = MLP_m([Z_m^g; Z_m^l])`` per modality, ``MLP = Linear(2d → d) → ReLU``
  (``mlp_activation: false``: a bare Linear, as the authors' code has it, also for eq. 11);
* eq. 10: ``W_r, Z_r = ATTN_r([Z_1^r..Z_M^r])`` for ``r ∈ {g, l}``, where ATTN is
  ``Linear(M·d → d) → Dropout → ReLU → Linear(d → M)``, scaled by ``d^-1/2``, softmax over
  the M modalities, and ``Z_r = Σ_m W_r[m] Z_m^r``;
* eq. 11: ``Z_1 = MLP([Z_g; Z_l])``;
* eq. 12 (MIXUP): ``Z_2 = Σ_m W_g[m] Z_m``;
* eq. 13: ``ŷ = Linear([Z_1; Z_2])``.

Ablations (Table 4), as fields:

* ``mixup`` (§5.2.5) replaces eq. 12: ``global`` (W_g, the paper), ``local`` (W_l: ReAt_G),
  ``attention`` (a third ATTN over ``Z_1..Z_M``: ATTN_G), ``mlp`` (``Linear(M·d → d) → ReLU``
  on ``[Z_1; ..; Z_M]``: MLP_G). ``weights`` outputs the mixing weights of ``global`` / ``local``.
* ``strategy`` (§5.2.4) replaces eqs. 9-13 after the encoder, on its 2M outputs ``Z``:
  ``sum`` (``Linear(Σ Z)``: SUM), ``concat`` (``Linear(d → out)(ReLU(Linear(2M·d → d)([Z..])))``: CON),
  ``attention`` (``Linear(ATTN(Z))``: ATTN_F), ``product`` (``Linear(Π Z)``: MUL).
* Global-only / Local-only (§5.2.3): give only ``global_*`` or only ``local_*`` inputs; eqs.
  9 and 11 then read one representation (``Linear(d → d) → ReLU``), MIXUP uses the
  available kind's weights (set ``mixup: local`` for Local-only).

Parameters (M modalities, both kinds): ``layers·(4d² + 4d + 2·d·ff + ff + d + 4d)``
``+ M·(2d² + d) + 2·(M·d² + d + d·M + M) + (2d² + d) + 2d·out + out``.
Modules: :mod:`composer.blocks.glomo.fusion`.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from composer.configs._base import BlockConfig, Shapes, SpecError, shared_vector_width
from composer.configs._shapes import linear, torch_encoder_layer, under
from composer.registry import block_type
from composer.spec import Spec, vector

__all__ = ["GLoMoFusionConfig", "AttentionPoolConfig", "KINDS", "parse_ports", "modality_attention"]

MODULES = "composer.blocks.glomo.fusion"

KINDS = ("global", "local")


def modality_attention(count: int, dim: int) -> Shapes:
    """Parameters of GLoMo's ATTN over ``count`` vectors of width ``dim`` (the block module's
    ``ModalityAttention``): ``score.0`` a Linear ``count·d -> d``, ``score.3`` a Linear ``d -> count``."""
    return {**under("score.0", linear(count * dim, dim)), **under("score.3", linear(dim, count))}


def _mlp(width_in: int, width_out: int) -> Shapes:
    """Parameters of GLoMo's fusion MLP ``Linear -> ReLU`` (or bare ``Linear``): ``0`` a Linear."""
    return under("0", linear(width_in, width_out))


def parse_ports(inputs: dict[str, Spec]) -> tuple[list[str], list[str]]:
    """Modality names and the kinds present, from ports ``global_<m>`` / ``local_<m>``."""
    modalities: list[str] = []
    kinds: dict[str, list[str]] = {}
    for port in inputs:
        kind, _, name = port.partition("_")
        if kind not in KINDS or not name:
            raise SpecError(f"input port '{port}' must be named global_<modality> or local_<modality>", field="in")
        kinds.setdefault(kind, []).append(name)
        if name not in modalities:
            modalities.append(name)
    present = [k for k in KINDS if k in kinds]
    for kind in present:
        missing = [m for m in modalities if m not in kinds[kind]]
        if missing:
            raise SpecError(
                f"modalit{'ies' if len(missing) > 1 else 'y'} {', '.join(missing)} lack{'' if len(missing) > 1 else 's'} "
                f"a {kind}_<modality> input (give both kinds for every modality, or only one kind)",
                field="in",
            )
    return modalities, present


@block_type("fusion", implementation=f"{MODULES}:GLoMoFusion")
class GLoMoFusionConfig(BlockConfig):
    """GLoMo global-guided fusion (eqs. 8-13): ``{global_m, local_m: (B, d)} -> out (B, out), weights (B, M)``.

    Transformer encoder over the global and local tokens (eq. 8), per-modality MLP (eq. 9),
    ATTN pooling of globals and locals (eq. 10), MLP of the pooled pair (eq. 11), MIXUP of the
    modality representations with the global attention weights W_g (eq. 12), final Linear
    (eq. 13). ``strategy`` and ``mixup`` select the ablations of Table 4; ``weights`` (the MIXUP
    weights) exists for ``strategy: global_guided`` with ``mixup: global`` or ``local``.
    The templates ``glomo_global_guided_fusion`` (strategy global_guided; mixup global, local,
    attention; ``mlp_activation: false``) and ``glomo_token_fusion`` (strategies sum, product,
    attention, concat) of blueprints/templates/glomo.yaml say the same network with primitives
    (``post_ln_transformer``, ``attention_pool``, ``weighted_sum``, ``product``) for three
    modalities with both kinds (tests/test_templates_glomo_fusion.py).
    This block remains for what a template cannot say: a template has a fixed list of input
    ports and a fixed set of blocks (a use may change an inner block's settings or type, never
    drop one or add one), so another number of modalities, Global-only / Local-only (one kind),
    ``layers: 0`` (no encoder block) and ``mixup: mlp`` (MLP_G is a concat and a Linear where
    the template has the single block ``mix``) stay built-in.
    """

    type: Literal["glomo_fusion"] = "glomo_fusion"
    out: int = Field(ge=1, description="Prediction width (1 for regression, the number of classes otherwise).")
    layers: int = Field(default=2, ge=0, description="Transformer encoder layers over the 2M tokens (eq. 8); 0: none.")
    heads: int = Field(default=4, ge=1, description="Attention heads of the encoder (divide d).")
    ff_dim: int = Field(default=2048, ge=1, description="Feed-forward width of the encoder (PyTorch's default 2048).")
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0, description="Dropout inside the encoder layers.")
    attn_dropout: float = Field(default=0.1, ge=0.0, lt=1.0, description="Dropout inside the ATTN modules (eq. 10).")
    strategy: Literal["global_guided", "sum", "concat", "attention", "product"] = Field(
        default="global_guided",
        description="global_guided: eqs. 9-13 (paper); sum / concat / attention / product: Table 4 SUM / CON / ATTN_F / MUL.",
    )
    mixup: Literal["global", "local", "attention", "mlp"] = Field(
        default="global",
        description="Eq. 12: global = W_g (paper); local = W_l (ReAt_G); attention = ATTN_G; mlp = MLP_G.",
    )
    mlp_activation: bool = Field(
        default=True,
        description=(
            "The MLPs of eqs. 9 and 11 as Linear -> ReLU (true: an MLP, as the paper writes) or a bare Linear "
            "(false: the authors' code, YetZzzzzz/GLoMo)."
        ),
    )

    main_port: ClassVar[str | None] = "out"  # a bare reference to the block means this output

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        modalities, kinds = parse_ports(inputs)
        dim = shared_vector_width(inputs, "all inputs")
        if self.layers and int(dim) % self.heads:
            raise SpecError(f"width {dim} is not divisible by heads={self.heads}", field="heads")
        out = {"out": vector(self.out)}
        if self.strategy == "global_guided":
            wanted = {"global": "global", "local": "local"}.get(self.mixup)
            if wanted is not None and wanted not in kinds:
                raise SpecError(f"mixup: {self.mixup} needs {wanted}_<modality> inputs (only {kinds[0]} given)", field="mixup")
            if wanted is not None:
                out["weights"] = vector(len(modalities))
        return out

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        modalities, kinds = parse_ports(inputs)
        dim = int(next(iter(inputs.values())).features)
        M, K = len(modalities), len(kinds)
        shapes: Shapes = {}
        for k in range(self.layers):  # eq. 8: nn.TransformerEncoder's layers
            shapes.update(under(f"encoder.layers.{k}", torch_encoder_layer(dim, self.ff_dim)))
        if self.strategy == "global_guided":
            for i in range(M):  # eq. 9
                shapes.update(under(f"modality_mlps.{i}", _mlp(K * dim, dim)))
            for kind in kinds:  # eq. 10
                shapes.update(under(f"attention.{kind}", modality_attention(M, dim)))
            shapes.update(under("pair_mlp", _mlp(K * dim, dim)))  # eq. 11
            if self.mixup == "attention":
                shapes.update(under("mix", modality_attention(M, dim)))
            elif self.mixup == "mlp":
                shapes.update(under("mix", _mlp(M * dim, dim)))
            shapes.update(under("predict", linear(2 * dim, self.out)))  # eq. 13
        elif self.strategy == "concat":
            shapes.update(under("merge", _mlp(K * M * dim, dim)))
            shapes.update(under("predict", linear(dim, self.out)))
        else:
            if self.strategy == "attention":
                shapes.update(under("merge", modality_attention(K * M, dim)))
            shapes.update(under("predict", linear(dim, self.out)))
        return shapes

    @classmethod
    def examples(cls):
        three = {f"{k}_{m}": vector(4) for k in KINDS for m in ("t", "a", "v")}
        return [
            ({"out": 1, "heads": 2, "ff_dim": 8}, three),
            ({"out": 3, "heads": 2, "ff_dim": 8, "mixup": "attention"}, three),
            ({"out": 1, "heads": 2, "ff_dim": 8, "mixup": "mlp", "layers": 1}, three),
            ({"out": 1, "layers": 0, "mixup": "local"}, three),
            ({"out": 2, "heads": 2, "ff_dim": 8, "strategy": "concat"}, three),
            ({"out": 1, "heads": 2, "ff_dim": 8, "strategy": "attention"}, three),
            ({"out": 1, "layers": 0, "strategy": "sum"}, three),
            ({"out": 1, "layers": 0, "strategy": "product"}, three),
            ({"out": 1, "heads": 2, "ff_dim": 8}, {f"global_{m}": vector(4) for m in ("t", "a")}),
            ({"out": 1, "heads": 2, "ff_dim": 8, "mixup": "local"}, {f"local_{m}": vector(4) for m in ("t", "a")}),
        ]


@block_type("pooling", implementation=f"{MODULES}:AttentionPool")
class AttentionPoolConfig(BlockConfig):
    """GLoMo's ATTN (eq. 10) as a block: ``M`` vectors ``(B, d)`` -> ``out (B, d)``, ``weights (B, M)``.

    ``w = softmax(Linear(d → M)(ReLU(Dropout(Linear(M·d → d)([x_1; ...; x_M])))) / √d)`` and
    ``out = Σ_m w_m x_m``: attention over modalities (or any set of same-width codes), the
    operator ``glomo_fusion`` uses for its global and local sets. Parameters ``M·d·d + d + d·M + M``.
    """

    type: Literal["attention_pool"] = "attention_pool"
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout inside the scoring MLP (GLoMo's ATTN dropout).")

    main_port: ClassVar[str | None] = "out"

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        if len(inputs) < 2:
            raise SpecError(f"expected at least 2 inputs to weigh, got {len(inputs)}", field="in")
        return {"out": vector(shared_vector_width(inputs)), "weights": vector(len(inputs))}

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        return under("attention", modality_attention(len(inputs), int(next(iter(inputs.values())).features)))

    @classmethod
    def examples(cls):
        return [({}, {"text": vector(4), "audio": vector(4), "vision": vector(4)}), ({"dropout": 0.1}, {"0": vector(3), "1": vector(3)})]
