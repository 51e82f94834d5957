"""RMFN in plain PyTorch (Liang et al., "Multimodal Language Analysis with Recurrent Multistage
Fusion", EMNLP 2018, §3), written from the paper's equations.

There is no public code of RMFN, hence no authors' preset: the paper (and the reference card's
note on the public LSTHM cell) is the only specification. Where the paper leaves a choice
open, this reference takes the one docs/rmfn.md documents for Composer:

* LSTHM (eqs. 7-12), per modality ``m``, from ``x_{t+1} (B, D_m)``, ``h_t, c_t (B, H_m)`` and
  the cross-modal code ``z_t (B, Z)``::

      i = σ(W_i x + U_i h + V_i z + b_i)       (7)     f = σ(W_f x + U_f h + V_f z + b_f)   (8)
      o = σ(W_o x + U_o h + V_o z + b_o)       (9)     c̄ = W_c̄ x + U_c̄ h + V_c̄ z + b_c̄       (10)
      c_{t+1} = f ⊙ c_t + i ⊙ tanh(c̄)         (11)    h_{t+1} = o ⊙ tanh(c_{t+1})          (12)

  The gate rows are kept in the paper's order i, f, o, c̄ (Composer stores the public cell's
  f, i, o, c̄; the name map permutes them). Each of W, U, V has its own bias, as in the public
  LSTHM cell (the paper's single ``b`` per gate is their sum: same function, 2·4·H_m more
  parameters). σ is the hard sigmoid ``clip(0.2 x + 0.5, 0, 1)`` or the logistic sigmoid.
  ``f`` is the forget gate of step t+1 (eq. 11's ``f_t`` is read as a typo).
* MFP (eqs. 1-6) on ``h_t = [h^1_t; ...; h^M_t] (B, d)``, K stages: HIGHLIGHT is an LSTM cell
  ``d → d`` over the stages, initial output 0 and initial memory ``M(h_t)`` (eq. 2, an MLP
  with tanh hidden layers), input ``a^{k-1}`` (0 at k = 1); ``a^k = softmax(h_HIGHLIGHT^k)``
  over the d dimensions (eq. 3); ``h̃^k = h_t ⊙ a^k`` (eq. 4; ``d · h_t ⊙ a^k`` with the
  non-paper ``rescale``); without HIGHLIGHT, ``h̃^k = h_t``. FUSE is an LSTM cell ``d → s``
  over the stages (eq. 5), initial output 0 and a learned initial memory (orthogonal init);
  SUMMARIZE ``z_t = tanh(S([s^1; ...; s^K]))`` (eq. 6, or ``S(s^K)``), S an MLP with ReLU.
  Dropout follows the hidden layers of M and S.
* ``z_0`` is a learned vector; ``E = [h^1_T; ...; h^M_T; z_T]`` (eq. 13) -> MLP head.
  Without MFP the LSTHMs have no V and E holds the last states only.
* Padding (docs/masks.md): on a padded step ``h``, ``c`` and ``z`` keep their values, so E is
  each sample's state at its last valid step.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

__all__ = ["hard_sigmoid", "LSTHM", "MultistageFusionProcess", "RMFNetwork", "reference_for", "weight_map"]

Tensor = torch.Tensor
ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}
COMPOSER_GATES = ("f", "i", "o", "c")  # Composer's (the public cell's) order of the four row blocks
PAPER_GATES = ("i", "f", "o", "c")  # eqs. 7, 8, 9, 10


def hard_sigmoid(x: Tensor) -> Tensor:
    """Keras' hard sigmoid, ``clip(0.2 x + 0.5, 0, 1)`` (PyTorch's ``hardsigmoid`` has slope 1/6)."""
    return (0.2 * x + 0.5).clamp(0.0, 1.0)


def mlp(width: int, hidden: list[int], out: int, activation: str, dropout: float) -> nn.Sequential:
    """``[Linear -> activation -> Dropout] per hidden width -> Linear``."""
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(width, h), ACTIVATIONS[activation]()] + ([nn.Dropout(dropout)] if dropout else [])
        width = h
    return nn.Sequential(*layers, nn.Linear(width, out))


class LSTHM(nn.Module):
    """One LSTHM step (eqs. 7-12): ``x (B, D)``, ``h, c (B, H)``, ``z (B, Z)`` or None -> ``h', c'``."""

    def __init__(self, features: int, hidden: int, hybrid: int, gate: str):
        super().__init__()
        self.W = nn.Linear(features, 4 * hidden)  # rows: i, f, o, c̄
        self.U = nn.Linear(hidden, 4 * hidden)
        self.V = nn.Linear(hybrid, 4 * hidden) if hybrid else None
        self.sigma = {"hard_sigmoid": hard_sigmoid, "sigmoid": torch.sigmoid}[gate]

    def forward(self, x: Tensor, h: Tensor, c: Tensor, z: Tensor | None) -> tuple[Tensor, Tensor]:
        pre = self.W(x) + self.U(h) + (self.V(z) if self.V is not None else 0.0)  # (B, 4H)
        i, f, o, proposal = pre.chunk(4, dim=-1)
        c = self.sigma(f) * c + self.sigma(i) * torch.tanh(proposal)  # eqs. 7, 8, 10, 11
        h = self.sigma(o) * torch.tanh(c)  # eqs. 9, 12
        return h, c


class MultistageFusionProcess(nn.Module):
    """HIGHLIGHT, FUSE, SUMMARIZE over K stages (eqs. 1-6): ``h (B, d)`` -> ``z (B, out)``."""

    def __init__(self, width: int, stages: int, hidden: int, out: int, highlight: bool, rescale: bool,
                 memory_hidden: list[int], summarize_hidden: list[int], summarize_input: str, dropout: float):
        super().__init__()
        self.width, self.stages, self.rescale = width, stages, rescale
        self.all_stages = summarize_input == "all"
        if highlight:
            self.memory = mlp(width, memory_hidden, width, "tanh", dropout)  # M, eq. 2
            self.highlight = nn.LSTMCell(width, width)
        else:
            self.memory = self.highlight = None
        self.fuse = nn.LSTMCell(width, hidden)  # eq. 5
        self.fuse_memory = nn.Parameter(nn.init.orthogonal_(torch.empty(1, hidden)))
        self.summarize = mlp(hidden * (stages if self.all_stages else 1), summarize_hidden, out, "relu", dropout)  # S, eq. 6

    def forward(self, h: Tensor) -> Tensor:
        batch = h.shape[0]
        s, s_memory = h.new_zeros(batch, self.fuse.hidden_size), self.fuse_memory.expand(batch, -1)
        if self.highlight is not None:
            a, hl_out, hl_memory = h.new_zeros(batch, self.width), h.new_zeros(batch, self.width), self.memory(h)  # eq. 2
        states = []
        for _ in range(self.stages):
            if self.highlight is not None:
                hl_out, hl_memory = self.highlight(a, (hl_out, hl_memory))  # eq. 1: a^k from a^{k-1} and the memory
                a = hl_out.softmax(dim=-1)  # eq. 3
                highlighted = h * a * (self.width if self.rescale else 1.0)  # eq. 4
            else:
                highlighted = h
            s, s_memory = self.fuse(highlighted, (s, s_memory))  # eq. 5
            states.append(s)
        return torch.tanh(self.summarize(torch.cat(states, dim=-1) if self.all_stages else s))  # eq. 6


class RMFNetwork(nn.Module):
    """LSTHMs with the MFP fed back (§3.3), E (eq. 13), MLP head. ``forward(batch) -> (B, outputs)``.

    ``modalities``: ``[(batch key, features, hidden)]`` in the block's port order; ``lookup``:
    ``[(batch key, time symbol)]`` of every sequence modality in blueprint order, where the
    padding mask of the shared time symbol is looked up; ``mfp``: the MFP's settings or None.
    """

    def __init__(self, modalities: list[tuple[str, int, int]], lookup: list[tuple[str, str]], gate: str,
                 mfp: dict | None, head: dict):
        super().__init__()
        self.keys = [key for key, _, _ in modalities]
        self.symbol = dict(lookup)[self.keys[0]]
        self.lookup = lookup
        z = mfp["out"] if mfp is not None else 0
        self.lsthm = nn.ModuleList(LSTHM(d, h, z, gate) for _, d, h in modalities)
        self.mfp = MultistageFusionProcess(sum(h for _, _, h in modalities), **mfp) if mfp is not None else None
        self.z0 = nn.Parameter(torch.zeros(1, z)) if mfp is not None else None
        self.head = mlp(sum(h for _, _, h in modalities) + z, head["hidden"], head["out"], head["activation"], head["dropout"])

    def valid_steps(self, batch: dict[str, Tensor]) -> Tensor | None:
        """``(B, T)`` bool of the shared time symbol: the first modality on it with a mask or lengths."""
        for key, symbol in self.lookup:
            if symbol != self.symbol:
                continue
            if f"{key}_mask" in batch:
                return batch[f"{key}_mask"].bool()
            if f"{key}_lengths" in batch:
                steps = batch[key].shape[1]
                return torch.arange(steps, device=batch[key].device)[None, :] < batch[f"{key}_lengths"].to(batch[key].device)[:, None]
        return None

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        xs = [batch[k] for k in self.keys]  # (B, T, D_m)
        B, T = xs[0].shape[:2]
        valid = self.valid_steps(batch)
        h = [x.new_zeros(B, cell.U.in_features) for x, cell in zip(xs, self.lsthm)]
        c = [state.clone() for state in h]
        z = self.z0.expand(B, -1) if self.z0 is not None else None
        for t in range(T):
            keep = valid[:, t, None] if valid is not None else torch.ones(B, 1, dtype=torch.bool, device=xs[0].device)
            for m, cell in enumerate(self.lsthm):
                h_new, c_new = cell(xs[m][:, t], h[m], c[m], z)  # eqs. 7-12
                h[m], c[m] = torch.where(keep, h_new, h[m]), torch.where(keep, c_new, c[m])
            if self.mfp is not None:
                z = torch.where(keep, self.mfp(torch.cat(h, dim=-1)), z)  # z_{t+1}, eqs. 1-6
        final = torch.cat(h + ([z] if z is not None else []), dim=-1)  # E, eq. 13
        return self.head(final)  # (B, outputs)


# -- from a compiled Composer model --------------------------------------------------------


def _gates_to_paper_order(t: Tensor) -> Tensor:
    """Row blocks f, i, o, c̄ (Composer) -> i, f, o, c̄ (eqs. 7-10)."""
    blocks = dict(zip(COMPOSER_GATES, t.chunk(4, dim=0)))
    return torch.cat([blocks[g] for g in PAPER_GATES], dim=0)


def _same(name: str) -> Callable[[Tensor], dict[str, Tensor]]:
    return lambda t: {name: t}


def _linear_indices(hidden: list[int], dropout: float) -> list[int]:
    """Positions of the Linear layers in an ``mlp`` Sequential (Linear, act[, Dropout] per hidden layer)."""
    stride = 3 if dropout and hidden else 2
    return [stride * j for j in range(len(hidden) + 1)]


def _plan(bp) -> dict:
    """Wiring and sizes from the blueprint (attribute access only)."""
    ids = [b for b, cfg in bp.blocks.items() if cfg.type == "lsthm_system" and cfg.enabled]
    if len(ids) != 1:
        raise ValueError(f"the RMFN reference needs exactly one lsthm_system block, found {ids}")
    rmfn_id = ids[0]
    cfg = bp.blocks[rmfn_id]
    ports = cfg.input_map()
    for port, ref in ports.items():
        if ref not in bp.modalities or bp.modalities[ref].kind != "sequence":
            raise ValueError(f"port {port}: the reference steps through sequence modalities, got {ref!r}")
    widths = cfg.hidden if isinstance(cfg.hidden, list) else [cfg.hidden[p] for p in ports]
    modalities = [(ref, bp.modalities[ref].features, w) for ref, w in zip(ports.values(), widths)]
    lookup = [(name, m.time or f"T_{name}") for name, m in bp.modalities.items() if m.kind in ("sequence", "tokens")]
    mfp = None
    if cfg.fusion is not None:
        if cfg.fusion["type"] != "mfp":
            raise ValueError(f"the reference implements the MFP fusion, not {cfg.fusion['type']!r}")
        mfp = {k: cfg.fusion[k] for k in ("stages", "hidden", "out", "highlight", "rescale", "memory_hidden",
                                           "summarize_hidden", "summarize_input", "dropout")}
    heads = [b for b, c in bp.blocks.items() if set(c.input_map().values()) & {rmfn_id, f"{rmfn_id}.out"}]
    if len(heads) != 1 or bp.blocks[heads[0]].type != "mlp" or bp.blocks[heads[0]].residual:
        raise ValueError(f"the reference ends in one mlp head on {rmfn_id}, found {heads}")
    head_cfg = bp.blocks[heads[0]]
    head = {"hidden": list(head_cfg.hidden), "out": head_cfg.out, "activation": head_cfg.activation, "dropout": head_cfg.dropout}
    return {"rmfn_id": rmfn_id, "head_id": heads[0], "ports": list(ports), "modalities": modalities, "lookup": lookup,
            "gate": cfg.gate, "mfp": mfp, "head": head}


def weight_map(model) -> dict[str, Callable[[Tensor], dict[str, Tensor]]]:
    """Composer state-dict key -> function of its tensor giving the reference's tensor(s)."""
    plan = _plan(model.blueprint)
    rmfn, entries = plan["rmfn_id"], {}
    for i, port in enumerate(plan["ports"]):
        for lin in ("W", "U") + (("V",) if plan["mfp"] is not None else ()):
            for field in ("weight", "bias"):
                entries[f"{rmfn}.lsthm.{port}.{lin}.{field}"] = lambda t, r=f"lsthm.{i}.{lin}.{field}": {r: _gates_to_paper_order(t)}
    mfp = plan["mfp"]
    if mfp is not None:
        src = f"{rmfn}.fusion"
        entries[f"{src}.fuse_memory"] = _same("mfp.fuse_memory")
        entries[f"{rmfn}.feedback.initial"] = _same("z0")
        cells = ("fuse", "highlight") if mfp["highlight"] else ("fuse",)
        for cell in cells:
            for field in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                entries[f"{src}.{cell}.{field}"] = _same(f"mfp.{cell}.{field}")
        if mfp["highlight"]:
            for j in _linear_indices(mfp["memory_hidden"], mfp["dropout"]):
                for field in ("weight", "bias"):
                    entries[f"{src}.memory_init.{j}.{field}"] = _same(f"mfp.memory.{j}.{field}")
        for j in _linear_indices(mfp["summarize_hidden"], mfp["dropout"]):
            for field in ("weight", "bias"):
                entries[f"{src}.summarize.0.{j}.{field}"] = _same(f"mfp.summarize.{j}.{field}")
    for j in _linear_indices(plan["head"]["hidden"], plan["head"]["dropout"]):
        for field in ("weight", "bias"):
            entries[f"{plan['head_id']}.net.{j}.{field}"] = _same(f"head.{j}.{field}")
    return entries


def reference_for(model) -> RMFNetwork:
    """A reference with the compiled Composer ``model``'s sizes and a copy of its weights."""
    plan = _plan(model.blueprint)
    ref = RMFNetwork(plan["modalities"], plan["lookup"], plan["gate"], plan["mfp"], plan["head"])
    source, entries = model.state_dict(), weight_map(model)
    unmapped, missing = sorted(set(source) - set(entries)), sorted(set(entries) - set(source))
    if unmapped or missing:
        raise KeyError(f"RMFN name map: Composer keys without a mapping {unmapped}; mapped keys Composer lacks {missing}")
    target: dict[str, Tensor] = {}
    for key, convert in entries.items():
        for name, tensor in convert(source[key]).items():
            if name in target:
                raise KeyError(f"RMFN name map: reference key {name} filled twice")
            target[name] = tensor.clone()
    expected = ref.state_dict()
    if set(target) != set(expected):
        raise KeyError(f"RMFN name map: reference keys not filled {sorted(set(expected) - set(target))}, "
                       f"unknown {sorted(set(target) - set(expected))}")
    for name, tensor in expected.items():
        if tensor.shape != target[name].shape:
            raise ValueError(f"RMFN name map: {name} is {tuple(tensor.shape)}, Composer gives {tuple(target[name].shape)}")
    ref.load_state_dict(target)
    return ref.train(model.training)
