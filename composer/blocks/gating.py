"""Modality gating of HCT-MG (§4, §5, §5.3.2): learn which modality is the primary one.

:class:`ModalityGate` is a layer used by fusion blocks (``hierarchical_crossmodal``) and by the
``modality_gate`` block (the gate alone, for hybrids; config: :mod:`composer.configs.gating`): one
trainable weight per modality, normalised by a softmax so the weights sum to 1; the
modality with the largest weight is the *primary* for the current batch, the others are
auxiliaries. Since the argmax is not differentiable, the weights learn through the scaling
of the representations by their weights (the owning block multiplies each modality's
representation by its weight, as a co-author's public bimodal version does).

Training history: every training-mode call of :meth:`ModalityGate.select` records the
weights and the chosen primary; :meth:`ModalityGate.composer_epoch_end` (called by the
trainer on every submodule that defines it; the returned dict goes to ``block_logs.jsonl``)
returns and clears that history — the data of the paper's Figs. 6-7.

Freezing (§5: "MG will become obsolete once the primary modality selection converges, we
freeze it"): :meth:`ModalityGate.freeze` fixes the primary and stops the weights from
learning; with ``freeze_after = n`` the gate freezes itself at the end of the epoch that
completes ``n`` consecutive epochs without a change of primary. The frozen primary and the
epoch counters are buffers, so they are saved with the weights (a resumed run keeps counting).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from composer.blocks._base import Block, Context
from composer.configs.gating import GATED, ModalityGateConfig
from composer.spec import Spec

__all__ = ["ModalityGate", "ModalityGateBlock"]


class ModalityGate(nn.Module):
    """Softmax-normalised per-modality weights; the largest one names the primary modality.

    ``modalities``: names in port order. ``primary``: ``"gated"`` (learned, the default) or a
    modality name (fixed primary, no gate parameters: the paper's Table 4 ablation without MG).
    ``tie_break``: which modality is primary while weights tie (at initialisation they all do):
    ``"first"`` (port order) or a modality name.
    Parameters: ``M`` logits (gated) or none.
    """

    def __init__(self, modalities: list[str], primary: str = GATED, freeze_after: int | None = None, *, tie_break: str = "first"):
        super().__init__()
        if tie_break != "first" and tie_break not in modalities:
            raise ValueError(f"tie_break must be 'first' or one of {modalities}, got {tie_break!r}")
        self.preferred = 0 if tie_break == "first" else modalities.index(tie_break)
        if primary != GATED and primary not in modalities:
            raise ValueError(f"primary must be '{GATED}' or one of {modalities}, got {primary!r}")
        self.modalities = list(modalities)
        self.gated = primary == GATED
        self.freeze_after = freeze_after
        if self.gated:
            # Equal weights 1/M at the start; the softmax keeps them positive and summing to 1.
            self.logits = nn.Parameter(torch.zeros(len(modalities)))
            self.register_buffer("frozen_primary", torch.tensor(-1, dtype=torch.long))
        else:
            self.register_buffer("frozen_primary", torch.tensor(modalities.index(primary), dtype=torch.long))
        # Epoch-level state, buffers so that a resumed run continues the count.
        self.register_buffer("last_primary", torch.tensor(-1, dtype=torch.long))
        self.register_buffer("stable_epochs", torch.tensor(0, dtype=torch.long))
        self._history: list[dict[str, Any]] = []
        # a host copy of frozen_primary (kept in step with the buffer), so a training step of a
        # fixed or frozen gate reads nothing back from the device
        self._frozen_index = -1 if self.gated else modalities.index(primary)

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        if self.frozen_primary.device.type != "meta":
            self._frozen_index = int(self.frozen_primary)

    # -- state ---------------------------------------------------------------------
    @property
    def frozen(self) -> bool:
        """True when the primary can no longer change (fixed primary or frozen gate)."""
        return self._frozen_index >= 0

    def weights(self) -> torch.Tensor | None:
        """``(M,)`` weights summing to 1 (None for a fixed primary). Detached once frozen."""
        if not self.gated:
            return None
        logits = self.logits.detach() if self.frozen else self.logits
        return logits.softmax(dim=0)

    def primary_index(self) -> int:
        """Index of the current primary: the frozen/fixed one, else the argmax of the weights.

        A gated, unfrozen gate reads one number back from the device per call: which branch
        runs depends on it (the roles' inputs have their own time axes), so it cannot stay on
        the device. A fixed or frozen gate reads nothing."""
        if self.frozen:
            return self._frozen_index
        logits = self.logits.detach()
        tied = logits == logits.max()  # ties (all at initialisation) go to the preferred modality, else the first tied
        first = tied.to(torch.uint8).argmax()
        return int(torch.where(tied[self.preferred], torch.full_like(first, self.preferred), first))

    def select(self) -> tuple[int, torch.Tensor | None]:
        """The primary for this batch and the weights; recorded in the history while training."""
        weights = self.weights()
        index = self.primary_index()
        if self.training:  # kept on the device; read back once per epoch (no host copy per batch)
            self._history.append((index, None if weights is None else weights.detach().clone()))
        return index, weights

    def _read_history(self, history: list) -> list[dict[str, Any]]:
        """The epoch's ``(index, weights tensor)`` records as rows, with one device-to-host copy."""
        tensors = [w for _, w in history if w is not None]
        values = torch.stack(tensors).float().cpu().tolist() if tensors else []
        rows, k = [], 0
        for index, w in history:
            row: dict[str, Any] = {"primary": self.modalities[index]}
            if w is not None:
                row["weights"] = [round(v, 6) for v in values[k]]
                k += 1
            rows.append(row)
        return rows

    def freeze(self) -> str:
        """Fix the current primary and stop the weights from learning; returns the primary's name."""
        if self.gated and not self.frozen:
            self._frozen_index = self.primary_index()
            self.frozen_primary.fill_(self._frozen_index)
            self.logits.requires_grad_(False)
        return self.modalities[self.primary_index()]

    # -- trainer hook --------------------------------------------------------------
    def composer_epoch_end(self, epoch: int) -> dict[str, Any] | None:
        """Return this epoch's gate history (per training batch) and apply automatic freezing.

        The dict holds ``modalities``, ``batches`` (``[{weights, primary}, ...]`` in order),
        ``mean_weights`` over the epoch's batches, ``primary_counts``, the ``primary`` at the
        end of the epoch, ``stable_epochs`` (consecutive epochs with that primary), and
        ``frozen`` / ``froze_now``. None when nothing was recorded and nothing changed.
        """
        history, self._history = self._read_history(self._history), []
        if not history and not self.gated:
            return None
        primary = self.primary_index()
        if primary == int(self.last_primary):
            self.stable_epochs += 1
        else:
            self.stable_epochs.zero_()
        self.last_primary.fill_(primary)
        stable = int(self.stable_epochs)
        froze_now = False
        if self.gated and not self.frozen and self.freeze_after is not None and stable >= self.freeze_after:
            self.freeze()
            froze_now = True
        counts = {name: 0 for name in self.modalities}
        for row in history:
            counts[row["primary"]] += 1
        log: dict[str, Any] = {
            "epoch": epoch,
            "modalities": self.modalities,
            "primary": self.modalities[primary],
            "primary_counts": counts,
            "stable_epochs": stable,
            "frozen": self.frozen,
            "froze_now": froze_now,
            "batches": history,
        }
        rows = [row["weights"] for row in history if "weights" in row]
        if rows:
            log["mean_weights"] = dict(zip(self.modalities, torch.tensor(rows).mean(dim=0).tolist()))
        if self.gated:
            log["weights"] = dict(zip(self.modalities, self.weights().detach().float().cpu().tolist()))
        return log

    def extra_repr(self) -> str:
        mode = "gated" if self.gated else f"fixed primary={self.modalities[self._frozen_index]}"
        return f"modalities={self.modalities}, {mode}"


# -- the `modality_gate` block ----------------------------------------------------------------


class ModalityGateBlock(Block):
    """The modality gate as a block: route three inputs by their weights (:class:`~composer.configs.gating.ModalityGateConfig`)."""

    def __init__(self, config: ModalityGateConfig, inputs: dict[str, Spec]):
        super().__init__(config, inputs)
        self.ports = list(inputs)
        self.gate = ModalityGate(self.ports, config.primary, config.freeze_after, tie_break=config.tie_break)

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> dict[str, torch.Tensor]:
        p, weights = self.gate.select()
        a1, a2 = (i for i in range(3) if i != p)
        xs = [inputs[port] for port in self.ports]
        first = xs[0]
        if weights is None:
            weights = torch.zeros(3, dtype=first.dtype, device=first.device).index_fill(0, torch.tensor([p], device=first.device), 1.0)
        factors = weights * 3 if self.config.scale == "relative" else weights
        if self.config.scale != "none":
            xs = [f * x for f, x in zip(factors, xs)]
        return {"primary": xs[p], "aux1": xs[a1], "aux2": xs[a2], "weights": weights.expand(first.shape[0], 3)}
