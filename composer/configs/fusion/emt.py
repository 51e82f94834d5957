"""EMT: Efficient Multimodal Transformer (Sun et al., EMT-DLFR, §3.3, eqs. 4-9).

Block ``emt``. Inputs (a mapping): every ``sequence (B, T_m, d)`` port is a modality's local
feature sequence ``H_m`` (in declaration order); every ``vector (B, d)`` port is one token of
the global multimodal context ``G⁰ = [h_l; h_a; h_v]`` (in declaration order; read by
``oagl`` only). All inputs share one width ``d``. Outputs:

* ``global``: ``vector (B, K·d)`` — the final global context ``G^[L]`` flattened over its
  ``K`` tokens (``g`` of §3.4, ready for ``concat`` with the utterance vectors). For the
  local-local strategies, which have no global context, it is the masked time-mean of each
  final local sequence, concatenated (``(B, M·d)``; Composer's choice, the paper is silent);
* one port per local sequence, named like its input port: the promoted ``H_m^[L]``
  ``(B, T_m, d)`` on the input's time symbol (padded steps zeroed), e.g. for LLFR (eq. 11).

Strategies (§3.3.3), each layer ``i`` built from :class:`~composer.blocks.mpu.PromotionUnit`
(directional MPU, eq. 5):

* ``oagl`` (eq. 8, EMT's default): for each modality ``m``:
  ``H_m ← MPU_{g→m}(H_m, G)`` and ``G_m = MPU_{m→g}(G, H_m)`` (both read the layer's
  inputs — the parallel form), then ``G ← Pool(G_l, G_a, G_v)`` (eq. 9). Cost linear in M.
* ``oall`` (eq. 7, after PMR): a common message ``C⁰ = concat_time(H_l, H_a, H_v)`` takes
  the place of ``G``; ``C ← Pool(C_l, C_a, C_v)`` position-wise. Cost quadratic in M.
* ``ooll`` (eq. 6, after MulT): one MPU per modality pair; each ``H_m`` pools the
  ``M-1`` sequences promoted towards it, position-wise. Cost quadratic in M.

Local sequences get fixed sinusoidal positions (``positions``, then ``embed_dropout``);
``G`` does not. Pooling (eq. 9) ``attention``: ``softmax_k(vᵀ act(W x_k + b)) · x_k`` over
the candidates ``x_k`` — for ``oagl`` each candidate is a whole context flattened to
``K·d`` (as the authors' code), for the others one score per position and candidate;
``avg``: mean of the candidates; ``mlp``: ``Linear(#candidates·width → width)`` on the
concatenated candidates.

Hierarchical sharing (§3.3.4), independent flags: ``share_directions`` (the two
directional sub-MPUs of an MPU), ``share_modalities`` (the MPUs of the modalities, or of
the pairs for ``ooll``; also the per-modality pools of ``ooll``), ``share_layers`` (MPUs and
pools across layers). Shared parts are the same module objects, so ``parameters()`` counts
them once. Unique sub-MPUs: ``(L or 1)·(G or 1)·(2 or 1)``, ``G`` = M (pairs for ooll).

Paper vs. authors' code: eq. 5 names the Transformer FFN (``ffn: relu``, the default); the
authors' code uses a GEGLU FFN (``ffn: geglu``), which is what reproduces the parameter
counts of Table 9 (see ``docs/emt_dlfr.md``). Attention projections have no bias on Q/K/V
(authors' code; ``qkv_bias: true`` adds them).

Modules: :mod:`composer.blocks.fusion.emt`.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import Field

from composer.configs._base import BlockConfig, Shapes, SpecError
from composer.configs._shapes import linear, under
from composer.configs.mpu import FFNKind, promotion_unit
from composer.registry import block_type
from composer.spec import Spec, sequence, vector

__all__ = ["EMTConfig", "GLOBAL_PORT", "split_ports", "candidate_pool"]

MODULES = "composer.blocks.fusion.emt"

GLOBAL_PORT = "global"


def split_ports(inputs: dict[str, Spec]) -> tuple[list[str], list[str]]:
    """(sequence ports, vector ports) in declaration order."""
    return [p for p, s in inputs.items() if s.kind == "sequence"], [p for p, s in inputs.items() if s.kind == "vector"]


def candidate_pool(kind: str, dim: int, tokens: int | None, candidates: int) -> Shapes:
    """Parameters of :class:`composer.blocks.fusion.emt.CandidatePool`: for ``attention`` a scorer
    ``score.0 w -> w``, ``score.2 w -> 1``; for ``mlp`` ``merge K·w -> w``; none for ``avg``
    (``w = dim·tokens`` when whole contexts are scored, else ``dim``)."""
    width = dim * (tokens or 1)
    if kind == "attention":
        return {**under("score.0", linear(width, width)), **under("score.2", linear(width, 1))}
    if kind == "mlp":
        return under("merge", linear(candidates * width, width))
    return {}


@block_type("fusion", implementation=f"{MODULES}:EMT")
class EMTConfig(BlockConfig):
    """Efficient Multimodal Transformer (EMT-DLFR eqs. 4-9): global-local mutual promotion.

    ``{m: sequence (B, T_m, d), …, u: vector (B, d), …} -> global (B, K·d), m (B, T_m, d), …``
    (see the module docstring for strategies, pooling and the sharing flags).
    A built-in and not a template because primitives say only ``strategy: oagl`` with
    ``positions: false`` (template ``emt_layer``, blueprints/templates/emt.yaml) and cannot say
    the sinusoidal positions added to the local sequences, oall's message (padded sequences
    joined along time), the position-wise attention and avg pools of oall / ooll,
    ``pool_activation: relu``, or ``share_layers`` together with another sharing flag.
    """

    main_port: ClassVar[str | None] = "global"  # a bare reference to the block means this output

    type: Literal["emt"] = "emt"
    strategy: Literal["oagl", "oall", "ooll"] = Field(
        default="oagl",
        description="oagl: one-to-all global-local (eq. 8, EMT); oall: one-to-all local-local (eq. 7); ooll: one-to-one local-local (eq. 6).",
    )
    update: Literal["parallel", "serial"] = Field(
        default="parallel",
        description=(
            "oagl / oall: parallel (the paper's choice): the global (common) side is promoted by the layer's input H_m; "
            "serial (§5.2.1, Fig. 7): by the promoted H_m of the same layer."
        ),
    )
    layers: int = Field(default=3, ge=1, description="Stacked fusion layers L.")
    heads: int = Field(default=4, ge=1, description="Attention heads (divide the width d).")
    ffn_expansion: int = Field(default=4, ge=1, description="FFN hidden width = ffn_expansion · d.")
    ffn: FFNKind = Field(default="relu", description="FFN: relu/gelu (Transformer FFN, eq. 5) or geglu (authors' code).")
    attn_dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout on attention weights.")
    ffn_dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout on the FFN output.")
    embed_dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout after adding positions to local sequences.")
    positions: bool = Field(default=True, description="Add fixed sinusoidal positions to the local sequences.")
    pooling: Literal["attention", "avg", "mlp"] = Field(default="attention", description="How promoted candidates are merged (eq. 9).")
    pool_activation: Literal["tanh", "relu"] = Field(default="tanh", description="Activation inside attention pooling.")
    share_directions: bool = Field(default=False, description="MPU-level sharing: both directions of an MPU use one sub-MPU.")
    share_modalities: bool = Field(default=False, description="Modality-level sharing: one MPU for all modalities (pairs for ooll).")
    share_layers: bool = Field(default=False, description="Layer-level sharing: one set of MPUs and pools for all layers.")
    qkv_bias: bool = Field(default=False, description="Bias on the Q/K/V projections (authors' code: none).")

    def infer(self, inputs: dict[str, Spec]) -> dict[str, Spec]:
        seq_ports, vec_ports = split_ports(inputs)
        other = [p for p, s in inputs.items() if s.kind not in ("sequence", "vector")]
        if other:
            raise SpecError(f"inputs {other} must be local sequences (B, T, d) or utterance vectors (B, d)", field="in")
        if len(seq_ports) < 2:
            raise SpecError(f"emt needs at least two local sequences (one per modality), got {len(seq_ports)}", field="in")
        if GLOBAL_PORT in seq_ports:
            raise SpecError(f"'{GLOBAL_PORT}' is the name of EMT's global output; name the sequence port otherwise", field="in")
        if self.update == "serial" and self.strategy == "ooll":
            raise SpecError("update: serial is a variant of oagl and oall (§5.2.1); ooll has no global or common side", field="update")
        if self.strategy == "oagl" and not vec_ports:
            raise SpecError("strategy oagl needs utterance vectors (B, d) as the global context G⁰, e.g. in: {text: ..., text_utt: ...}", field="in")
        widths = {p: inputs[p].features for p in seq_ports + vec_ports}
        d = widths[seq_ports[0]]
        if not isinstance(d, int) or any(w != d for w in widths.values()):
            raise SpecError(f"all inputs need one width d (project them first); got {widths}", field="in")
        if d % self.heads:
            raise SpecError(f"width {d} is not divisible by {self.heads} heads", field="heads")
        tokens = len(vec_ports) if self.strategy == "oagl" else len(seq_ports)
        return {GLOBAL_PORT: vector(tokens * d), **{p: inputs[p] for p in seq_ports}}

    def unit_count(self, modalities: int) -> int:
        """Unique sub-MPUs for ``modalities`` local sequences: ``(L or 1)·(G or 1)·(2 or 1)``."""
        groups = math.comb(modalities, 2) if self.strategy == "ooll" else modalities
        return (
            (1 if self.share_layers else self.layers)
            * (1 if self.share_modalities else groups)
            * (1 if self.share_directions else 2)
        )

    def pool_count(self, modalities: int) -> int:
        """Unique pools: one per layer (unless ``share_layers``) and target (``M`` for ooll unless ``share_modalities``)."""
        targets = modalities if self.strategy == "ooll" else 1
        return (1 if self.share_layers else self.layers) * (1 if self.share_modalities else targets)

    def parameter_shapes(self, inputs: dict[str, Spec]) -> Shapes:
        seq_ports, vec_ports = split_ports(inputs)
        d, M = int(inputs[seq_ports[0]].features), len(seq_ports)
        shapes: Shapes = {}
        unit = promotion_unit(d, self.ffn_expansion, self.ffn, self.qkv_bias)
        for k in range(self.unit_count(M)):
            shapes.update(under(f"units.{k}", unit))
        if self.strategy == "oagl":
            tokens, candidates = len(vec_ports), M
        else:
            tokens, candidates = None, (M if self.strategy == "oall" else M - 1)
        pool = candidate_pool(self.pooling, d, tokens, candidates)
        for k in range(self.pool_count(M)):
            shapes.update(under(f"pools.{k}", pool))
        return shapes

    @classmethod
    def examples(cls):
        ins = {"a": sequence("T_a", 8), "b": sequence("T_b", 8), "a_utt": vector(8), "b_utt": vector(8)}
        return [
            ({"layers": 2, "heads": 2, "ffn_expansion": 2}, ins),
            ({"layers": 2, "heads": 2, "ffn": "geglu", "share_directions": True, "share_modalities": True, "share_layers": True}, ins),
            ({"strategy": "oall", "layers": 1, "heads": 2, "pooling": "mlp"}, {"a": sequence("T_a", 8), "b": sequence("T_b", 8), "c": sequence(4, 8)}),
            ({"layers": 2, "heads": 2, "update": "serial"}, ins),
            ({"strategy": "ooll", "layers": 2, "heads": 2, "pooling": "avg", "share_modalities": True}, {"a": sequence("T_a", 8), "b": sequence("T_b", 8), "c": sequence(4, 8)}),
        ]
