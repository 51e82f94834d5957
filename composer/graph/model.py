"""The compiled model: one ``nn.Module`` that runs a :class:`~composer.graph.plan.Plan`.

Blocks are registered as direct submodules under their ids, so parameter names read like
the blueprint (``fusion.cmt_a1.layers.0.fc1.weight``); a block with ``share:`` reuses its
owner's module and adds no parameters; a disabled block (``enabled: false``) passes its
input through and holds no weights (unless an enabled block shares them). ``forward(batch)`` walks the plan's nodes in
topological order; the per-step work is a dict lookup and a module call, which is what a
hand-written model does as well.

Batch layout (a dict): one tensor per modality (``(B, T, D)`` float, ``(B, T)`` token ids,
...), optionally ``<modality>_lengths`` ``(B,)`` or ``<modality>_mask`` ``(B, T)`` bool,
``<modality>_segment`` ``(B, T)`` token type ids, and ``label`` for training (with
``label_<name>`` for each ``training.data.extra_labels`` entry, read by losses as ``label.<name>``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from composer.blocks._base import Context, length_mask
from composer.errors import BlueprintError, ComposerError, Problem
from composer.graph.size import share_problem, weight_mismatches
from composer.ref import BATCH_REFS, MAIN_VIEW, SEPARATOR

__all__ = ["ComposedModel", "compile_blueprint", "build_context"]


def build_context(batch: dict[str, Any], modality_times: dict[str, str]) -> Context:
    """A forward pass's Context: padding masks (and given lengths) keyed by time symbol,
    from ``<m>_mask`` or ``<m>_lengths`` entries of the batch."""
    ctx = Context(batch=batch)
    for name, symbol in modality_times.items():
        if symbol in ctx.masks:
            continue
        mask = batch.get(f"{name}_mask")
        host = batch.get("host_lengths", {}).get(name)
        if mask is None:
            lengths = batch.get(f"{name}_lengths")
            x = batch.get(name)
            if lengths is not None and x is not None:
                mask = length_mask(lengths.to(x.device), x.shape[1])
                ctx.lengths[symbol] = lengths
                if host is not None:
                    ctx.host_lengths[symbol] = host
        elif host is not None:  # a token modality's mask, its lengths counted by the loader on the host
            ctx.host_lengths[symbol] = host
        if mask is not None:
            ctx.masks[symbol] = mask.bool()
    return ctx



SHARED_USES = "shared_uses"


class TemplateModules(nn.Module):
    """The blocks of one template use (``pair/ab`` lives at ``pair.ab``), so parameter names
    read like the nesting. It holds no computation: the model runs each inner block itself."""


class ComposedModel(nn.Module):
    """A blueprint compiled into one module. Use :func:`compile_blueprint` to make one.

    Weight sharing (``share: owner``): every *use* of a block is its own module built for its
    own inputs (time axes, masks, lengths), and a sharing use's parameters and persistent
    buffers *are* the owner's tensors. The uses live under ``shared_uses`` and are left out of
    the state dict, so the weights are saved once, under the owner's name.
    """

    def __init__(self, blueprint):
        super().__init__()
        if not hasattr(blueprint, "plan") or not hasattr(blueprint, "size"):
            raise ComposerError(
                f"a model is compiled from a checked blueprint (composer.load_blueprint), not a {type(blueprint).__name__}"
            )
        self.blueprint = blueprint  # a CheckedBlueprint: its plan and size estimate were made once, by the check
        self.plan = blueprint.plan
        self.size = blueprint.size
        # a disabled block holds no weights unless an enabled block shares them
        needed = {n.owner for n in self.plan.nodes if n.enabled}
        for node in self.plan.nodes:
            if node.config.share is None and node.id in needed:
                self._place(node.id, node.entry.impl(node.config, node.in_specs))
        uses = nn.ModuleDict()
        for node in self.plan.nodes:  # built after every owner, so owners initialise as before
            if node.config.share is not None and node.enabled:
                use = node.entry.impl(node.config, node.in_specs)
                _tie(use, self.block(node.owner), node, blueprint)
                uses[node.id] = use
        self.add_module(SHARED_USES, uses)
        self._register_state_dict_hook(_drop_shared_uses)
        self.register_load_state_dict_post_hook(_ignore_missing_shared_uses)
        # (block id, module, enabled, [(port, value key)], [(port, value key)], aux ports, training only)
        self._steps = [
            (
                node.id,
                node.id if node.config.share is not None else node.owner,
                node.enabled,
                [(port, ref.key) for port, ref in node.inputs.items()],
                [(port, node.value_key(port)) for port in node.out_specs],
                node.config.aux_ports(),
                node.id in self.plan.training_only,
            )
            for node in self.plan.nodes
        ]
        self._times = {
            name: m.time_symbol(name) for name, m in blueprint.modalities.items() if m.kind in ("sequence", "tokens")
        }
        self.losses = nn.ModuleList(ln.entry.impl(ln.config, ln.specs) for ln in self.plan.losses)

    def _place(self, block_id: str, module: nn.Module) -> None:
        """Register a block's module; the blocks of a template use ``pair/ab`` nest (``pair.ab``)."""
        *outer, leaf = block_id.split(SEPARATOR)
        parent: nn.Module = self
        for name in outer:
            if name not in parent._modules:
                parent.add_module(name, TemplateModules())
            parent = parent._modules[name]
        parent.add_module(leaf, module)

    def block(self, block_id: str) -> nn.Module:
        """The module that holds a block's weights (its own, or for ``share:`` its owner's)."""
        return self.get_submodule(block_id.replace(SEPARATOR, "."))

    def _module_for(self, module_id: str) -> nn.Module:
        uses = self._modules[SHARED_USES]
        return uses[module_id] if module_id in uses._modules else self.block(module_id)

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        for node in self.plan.nodes:  # moving or casting replaces buffers per module: tie them again
            if node.config.share is not None and node.enabled:
                _tie(self._modules[SHARED_USES][node.id], self.block(node.owner), node, self.blueprint, buffers_only=True)
        return self

    # -- running -------------------------------------------------------------------
    def forward(self, batch: dict[str, Any], training_branches: bool | None = None) -> dict[str, Any]:
        """Run the blocks on a batch; returns named outputs, ``aux_losses`` and all ``values``.

        ``training_branches``: also run the training-only blocks (those only losses read; see
        :attr:`Plan.training_only`); default: in training mode. Evaluation of the loss passes
        True; prediction and export leave them out."""
        ctx = build_context(batch, self._times)
        values: dict[str, torch.Tensor] = {name: batch[name] for name in self.plan.inputs}
        aux: dict[str, torch.Tensor] = {}
        branches = self.training if training_branches is None else training_branches
        if branches:  # what training-only blocks may read of the batch
            values.update((name, batch[name]) for name in BATCH_REFS if name in batch)
        for block_id, module_id, enabled, ins, outs, aux_ports, training_only in self._steps:
            if training_only and not branches:
                continue
            inputs = {port: values[key] for port, key in ins}
            if not enabled:
                if len(outs) == 1 and outs[0][0] == "out":
                    values[outs[0][1]] = inputs[ins[0][0]]
                else:
                    for port, key in outs:
                        values[key] = inputs[port]
                continue
            result = self._module_for(module_id)(inputs, ctx)
            if isinstance(result, dict):
                for port, key in outs:
                    values[key] = result[port]
                for port in aux_ports:
                    aux[f"{block_id}.{port}"] = result[port]
            else:
                values[outs[0][1]] = result
        out: dict[str, Any] = {name: values[key] for name, key in self.plan.outputs.items()}
        out["aux_losses"] = aux
        out["values"] = values
        return out

    def compute_loss(
        self, outputs: dict[str, dict[str, Any]], batches: dict[str, dict[str, Any]], terms: set[str] | None = None,
        epoch: int | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss and its named terms from per-view outputs and batches (``main`` at least).

        ``terms``: only these losses (by name), without the blocks' auxiliary losses (an update
        stage's objective, ``training.stages``). ``epoch``: the training epoch (from 1); a loss
        whose ``from_epoch`` is later is neither computed nor summed (None: every loss)."""
        parts: dict[str, torch.Tensor] = {}
        total = None
        ctx = build_context(batches[MAIN_VIEW], self._times)
        for node, module in zip(self.plan.losses, self.losses):
            if terms is not None and node.name not in terms:
                continue
            if epoch is not None and node.config.from_epoch > epoch:
                continue
            vals = {}
            for fname, (view, name, port) in node.refs.items():
                vals[fname] = self._resolve(outputs[view], batches[view], name, port)
            value = module(vals, ctx)
            parts[node.name] = value.detach()
            weight = node.config.weight
            if node.config.group is not None:
                weight = weight * self.blueprint.loss_groups[node.config.group]
            term = weight * value
            total = term if total is None else total + term
        aux_weight = self.blueprint.aux_loss_weight
        for view in self.blueprint.aux_loss_views if terms is None else ():  # which views' forward passes add their blocks' aux losses
            if view not in outputs:
                continue
            for key, value in outputs[view]["aux_losses"].items():
                name = key if view == MAIN_VIEW else f"{view}:{key}"
                parts[name] = value.detach()
                term = aux_weight * value
                total = term if total is None else total + term
        if total is None:
            raise ComposerError("the blueprint defines no loss: add one under `losses:`")
        return total, parts

    def _resolve(self, outputs: dict[str, Any], batch: dict[str, Any], name: str, port: str | None) -> torch.Tensor:
        if name == "label":  # label.<name>: an extra label (training.data.extra_labels)
            return batch["label" if port is None else f"label_{port}"]
        if name == "mask":
            return batch["view_masks"][port]
        key = name if port is None else f"{name}.{port}"
        return outputs["values"][key]

    # -- convenience ---------------------------------------------------------------
    def example_inputs(self, batch_size: int = 2, *, seed: int = 0, device: str | torch.device = "cpu", lengths: bool = True) -> dict[str, torch.Tensor]:
        """A valid random batch (modalities, lengths and labels) shaped by the blueprint."""
        gen = torch.Generator().manual_seed(seed)
        batch: dict[str, torch.Tensor] = {}
        shared_lengths: dict[str, torch.Tensor] = {}
        for name, m in self.blueprint.modalities.items():
            if m.kind == "tokens":
                ids = torch.randint(1000, m.vocab, (batch_size, m.length), generator=gen) if m.vocab > 1000 else torch.randint(3, m.vocab, (batch_size, m.length), generator=gen)
                ids[:, 0] = 101 if m.vocab > 102 else 1
                batch[name] = ids
                batch[f"{name}_mask"] = torch.ones(batch_size, m.length, dtype=torch.bool)
                batch[f"{name}_segment"] = torch.zeros(batch_size, m.length, dtype=torch.long)
                continue
            shape = tuple(batch_size if d == "B" else (m.length if isinstance(d, str) else d) for d in m.spec(name).shape)
            batch[name] = torch.randn(shape, generator=gen)
            if m.kind == "sequence" and lengths:
                symbol = m.time_symbol(name)
                if symbol not in shared_lengths:  # aligned modalities share their lengths
                    lens = torch.randint(max(1, m.length // 2), m.length + 1, (batch_size,), generator=gen)
                    lens[0] = m.length
                    shared_lengths[symbol] = lens
                batch[f"{name}_lengths"] = shared_lengths[symbol]
        task = self.blueprint.task
        if task.kind == "classification":
            batch["label"] = torch.randint(0, task.outputs, (batch_size,), generator=gen)
        elif task.kind == "multilabel":
            batch["label"] = torch.randint(0, 2, (batch_size, task.outputs), generator=gen).float()
        else:
            low, high = task.label_range
            shape = (batch_size,) if task.outputs == 1 else (batch_size, task.outputs)
            batch["label"] = torch.rand(shape, generator=gen) * (high - low) + low
        for extra in self.blueprint.training.data.extra_labels:  # label_<name>: a permutation of the label's values
            batch[f"label_{extra}"] = batch["label"][torch.randperm(batch_size, generator=gen)]
        return {k: v.to(device) for k, v in batch.items()}

    def parameter_summary(self) -> dict[str, int]:
        """``model``: parameters of the model at inference (shared ones once); ``training_only``:
        parameters used only in training: loss networks (e.g. DLFR's projectors and decoders) and
        training-only blocks (a decoder only a reconstruction loss reads, :attr:`Plan.training_only`);
        ``trainable``: model parameters that receive gradients. Paper figures compare with ``model``."""
        model = {}
        for _, module_id, enabled, *_, training_only in self._steps:
            if enabled and not training_only:
                model.update((id(p), p) for p in self._module_for(module_id).parameters())
        training = {id(p): p for p in self.parameters() if id(p) not in model}
        return {
            "model": sum(p.numel() for p in model.values()),
            "training_only": sum(p.numel() for p in training.values()),
            "trainable": sum(p.numel() for p in model.values() if p.requires_grad),
        }

    def training_only_prefixes(self) -> tuple[str, ...]:
        """State-dict name prefixes of what only training uses: the loss networks (``losses.``)
        and the modules of training-only blocks that no inference block shares."""
        owners = {n.owner for n in self.plan.nodes if n.id in self.plan.training_only} - self.plan.inference_owners
        return ("losses.", *sorted(b.replace(SEPARATOR, ".") + "." for b in owners))

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per owning block (shared blocks count once, under their owner); loss
        networks appear as ``losses.<i>`` (training-only, see :meth:`parameter_summary`)."""
        counts = {}
        built = {n.owner for n in self.plan.nodes if n.enabled}  # blocks with a module of their own
        for node in self.plan.nodes:
            owns = node.config.share is None and node.id in built
            counts[node.id] = sum(p.numel() for p in self.block(node.id).parameters()) if owns else 0
        for i, module in enumerate(self.losses):
            n = sum(p.numel() for p in module.parameters())
            if n:
                counts[f"losses.{i}"] = n
        return counts

    # -- persistence ---------------------------------------------------------------
    def save(self, path: str | Path, extra: dict[str, str] | None = None) -> Path:
        """Write the weights (safetensors) with the exact blueprint in the file's metadata
        (:func:`composer.load_model` rebuilds the model from it)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        metadata = {"composer.blueprint": self.blueprint.text(), "composer.format": "1"}
        metadata.update(extra or {})
        save_file(state, str(path), metadata=metadata)
        return path


def _located(blueprint, check, *args):
    """Run a blueprint check, filling ``file:line`` into its problems from the blueprint's source map."""
    try:
        return check(*args)
    except BlueprintError as exc:
        smap = getattr(blueprint, "source_map", None)
        if smap is None:
            raise
        raise BlueprintError([smap.locate(p) for p in exc.problems]) from None


def _weight_shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    """Parameters and persistent buffers of a module, name -> shape."""
    return {k: tuple(v.shape) for k, v in module.state_dict(keep_vars=True).items()}


def _tie(use: nn.Module, owner: nn.Module, node, blueprint, *, buffers_only: bool = False) -> None:
    """Make ``use``'s parameters and persistent buffers the very tensors of ``owner``."""
    if not buffers_only:
        wrong = weight_mismatches(_weight_shapes(owner), _weight_shapes(use))
        if wrong:
            _located(blueprint, _raise, share_problem(node, wrong))
    for name, tensor in owner.state_dict(keep_vars=True).items():
        prefix, _, leaf = name.rpartition(".")
        module = use.get_submodule(prefix) if prefix else use
        if leaf in module._parameters:
            if not buffers_only:
                module._parameters[leaf] = tensor
        elif leaf in module._buffers:
            module._buffers[leaf] = tensor


def _raise(problem: Problem) -> None:
    raise BlueprintError([problem])


def _drop_shared_uses(module, state_dict, prefix, local_metadata):
    """State-dict hook: the uses of shared blocks hold the owners' tensors; save them once."""
    for key in [k for k in state_dict if k.startswith(f"{prefix}{SHARED_USES}.")]:
        del state_dict[key]
    return state_dict


def _ignore_missing_shared_uses(module, incompatible_keys) -> None:
    """Load hook: the shared uses' entries are absent from a state dict by design (see above)."""
    keep = [k for k in incompatible_keys.missing_keys if not k.startswith(f"{SHARED_USES}.")]
    incompatible_keys.missing_keys[:] = keep


def compile_blueprint(blueprint) -> ComposedModel:
    """A checked blueprint (:func:`composer.load_blueprint`) -> :class:`ComposedModel`."""
    return ComposedModel(blueprint)


def summary_rows(model: ComposedModel) -> list[dict[str, Any]]:
    """Per-block rows for ``composer build``: id, type, inputs, outputs, parameters."""
    counts = model.parameter_counts()
    rows = []
    for node in model.plan.nodes:
        rows.append(
            {
                "id": node.id,
                "type": node.config.type,
                "family": node.entry.family,
                "inputs": {p: str(s) for p, s in node.in_specs.items()},
                "outputs": {p: str(s) for p, s in node.out_specs.items()},
                "params": counts[node.id],
                "shares": node.config.share,
                "enabled": node.enabled,
            }
        )
    return rows

