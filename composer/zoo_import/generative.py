"""Name maps of MMSA's generative / translation baselines (MFM, MCTN: ``models/singleTask``).

MFM keeps a whole MFN (``mfn_encoder``) and reads only its last state ``'L'``: the MFN's own output
layers (``mfn_encoder.out_fc1``, ``out_fc2``) are built, counted and saved by MMSA but never read
by ``MFM.forward``, so they get no gradient and nothing in Composer corresponds to them
(``UNUSED``: the import checks they are there and drops them).
"""

from __future__ import annotations

from composer.zoo_import._pieces import NameMap, linear, lstm_cell, mlp_linears
from composer.zoo_import.classic import mfn_names

__all__ = ["NAME_MAPS", "UNUSED", "mfm_names"]

_MODALITIES = (("l", "text"), ("a", "audio"), ("v", "vision"))


def _factor(model, mmsa_name: str, use: str) -> NameMap:
    """MMSA's ``<mmsa_name>_fc1``, ``_fc2`` -> the Linear layers of the ``factor`` template in ``use``."""
    first, second = (p.replace("/", ".") for p in mlp_linears(model, f"{use}/factor/layers"))
    return {**linear(f"{mmsa_name}_fc1", first), **linear(f"{mmsa_name}_fc2", second)}


def mfm_names(model) -> NameMap:
    names: NameMap = {}
    for m, modality in _MODALITIES:  # encoderLSTM (LSTMCell, fc1), z*_to_f*, decoderLSTM (LSTMCell, fc1)
        factor = f"{modality}_factor"
        cell = lstm_cell(f"encoder_{m}.lstm", f"{factor}.lstm.rnn")  # an LSTMCell's tensors are nn.LSTM's layer 0
        names.update({k: f"{v}_l0" for k, v in cell.items()})
        names.update(linear(f"encoder_{m}.fc1", f"{factor}.z.linear"))
        names.update(_factor(model, f"z{m}_to_f{m}", factor))
        names.update(lstm_cell(f"decoder_{m}.lstm", f"{modality}_decoder.decoder.cell"))
        names.update(linear(f"decoder_{m}.fc1", f"{modality}_decoder.decoder.out"))
    mfn = {f"mfn_encoder.{k}": v for k, v in mfn_names(model).items() if not k.startswith("out_fc")}
    unused = {f"mfn_encoder.{k}": None for k in (*linear("out_fc1", "_"), *linear("out_fc2", "_"))}
    names.update({**mfn, **unused, **linear("last_to_zy_fc1", "discriminative.z.linear")})
    names.update(_factor(model, "zy_to_fy", "discriminative"))
    first, second = mlp_linears(model, "head")
    return {**names, **linear("fy_to_y_fc1", first), **linear("fy_to_y_fc2", second)}


NAME_MAPS = {"mfm": mfm_names}

#: MMSA tensors (mapped to None) that MMSA saves but its forward never reads: present in every file, dropped.
UNUSED = {"mfm": ("mfn_encoder.out_fc1.", "mfn_encoder.out_fc2.")}
