"""Self-MM's unimodal label generation module: the config and its equations are in
:mod:`composer.configs.ulgm`."""

from __future__ import annotations

import torch

from composer.blocks._base import Block, Context
from composer.configs.ulgm import ULGMConfig
from composer.errors import DataError

__all__ = ["ULGM"]

EPS = 1e-8  # MMSA's MIN


class ULGM(Block):
    """State: ``features_<port>`` ``(N, D_port)`` for ``fusion`` and each modality,
    ``labels_<m>`` ``(N,)`` per modality, ``labels_fusion`` ``(N,)`` and ``epoch`` (1-based, moved
    on by the trainer's ``composer_epoch_end`` hook). All are buffers: checkpoints keep them."""

    config: ULGMConfig

    def __init__(self, config: ULGMConfig, inputs):
        super().__init__(config, inputs)
        self.modalities = config.modality_ports(inputs)
        n = config.samples
        for port in ["fusion", *self.modalities]:
            self.register_buffer(f"features_{port}", torch.zeros(n, int(inputs[port].features)))
        for port in ["fusion", *self.modalities]:
            self.register_buffer(f"labels_{port}", torch.zeros(n))
        self.register_buffer("epoch", torch.ones((), dtype=torch.long))

    def _labels(self, port: str) -> torch.Tensor:
        return getattr(self, f"labels_{port}")

    def _features(self, port: str) -> torch.Tensor:
        return getattr(self, f"features_{port}")

    def _centres(self, port: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean stored representation of the samples with positive / negative stored labels
        (update_centers), as masked sums: no boolean indexing, so no read back from the device
        (an empty class gives NaN, as the mean of nothing does)."""
        y, f = self._labels(port), self._features(port)
        positive = y > 0 if self.config.exclude_zero else y >= 0
        centres = []
        for chosen in (positive, y < 0):
            weight = chosen.to(f.dtype)  # (N,)
            centres.append((weight @ f) / weight.sum())  # (D,)
        return centres[0], centres[1]

    def _relative_distance(self, x: torch.Tensor, port: str) -> torch.Tensor:
        """``δ = (d_n - d_p) / (d_p + ε)`` of each sample to its port's class centres."""
        pos, neg = self._centres(port)
        d_p = torch.norm(x - pos, dim=-1)
        d_n = torch.norm(x - neg, dim=-1)
        return (d_n - d_p) / (d_p + EPS)

    def forward(self, inputs: dict[str, torch.Tensor], ctx: Context) -> dict[str, torch.Tensor]:
        y_f = inputs["label"].reshape(-1).float()
        if not self.training:  # the validation loss: no state change, unimodal terms weigh nothing
            out = {"fusion": y_f}
            for m in self.modalities:
                out[m], out[f"weight_{m}"] = y_f, torch.zeros_like(y_f)
            return out
        index = inputs["index"].reshape(-1).to(y_f.device).long()
        if index.device.type == "cpu" and int(index.max()) >= self.config.samples:  # free on the host; on a device
            # an index past the state fails in index_put, and the train split's size is known when it loads
            raise DataError(f"ulgm: sample index {int(index.max())} is outside its {self.config.samples} rows; "
                             "set the block's `samples` to the train split's size")
        # the epoch stays a tensor: both branches are computed and selected, so a step reads nothing back
        n = self.epoch.to(y_f.dtype)
        first, later = self.epoch == 1, self.epoch > 1
        with torch.no_grad():
            for port in ["fusion", *self.modalities]:  # init_labels (epoch 1): every label starts as the multimodal one
                self._labels(port)[index] = torch.where(first, y_f, self._labels(port)[index])
            stored_f = self._labels("fusion")[index]
            out = {"fusion": stored_f.clone()}
            for m in self.modalities:
                stored = self._labels(m)[index]
                out[m] = stored.clone()
                out[f"weight_{m}"] = torch.tanh(torch.abs(stored - stored_f))
            feats = {port: inputs[port].detach().float() for port in ["fusion", *self.modalities]}
            # update_labels (from epoch 2), with the centres of the stored state
            delta_f = self._relative_distance(feats["fusion"], "fusion")
            for m in self.modalities:
                delta_s = self._relative_distance(feats[m], m)
                alpha = delta_s / (delta_f + EPS)
                new = 0.5 * alpha * stored_f + 0.5 * (stored_f + delta_s - delta_f)
                new = torch.clamp(new, min=-self.config.bound, max=self.config.bound)
                old = self._labels(m)[index]
                # an empty class (no stored label of one sign) has no centre: MMSA's labels turn NaN; these stay
                self._labels(m)[index] = torch.where(later & new.isfinite(), (n - 1) / (n + 1) * old + 2 / (n + 1) * new, old)
            for port, f in feats.items():  # update_features
                self._features(port)[index] = f
        return out

    def composer_epoch_end(self, epoch: int) -> None:
        """The trainer's hook after each epoch: the next batches belong to epoch ``epoch + 1``."""
        self.epoch.fill_(epoch + 1)
        return None
