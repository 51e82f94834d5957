"""Name maps of MMSA's generative and translation baselines (MFM, MCTN: ``models/singleTask``).

MFM keeps a whole MFN (``mfn_encoder``) and reads only its last state ``'L'``: the MFN's own output
layers (``mfn_encoder.out_fc1``, ``out_fc2``) are built, counted and saved by MMSA but never read
by ``MFM.forward``, so they get no gradient and nothing in Composer corresponds to them
(``UNUSED``: the import checks they are there and drops them).
"""

from __future__ import annotations

from composer.zoo_import._pieces import NameMap, linear, lstm, lstm_cell, mlp_linears
from composer.zoo_import.classic import mfn_names

__all__ = ["NAME_MAPS", "UNUSED", "mfm_names", "mctn_names"]

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


#: MMSA tensors (mapped to None) that MMSA saves but its forward never reads: present in every file, dropped.
UNUSED = {"mfm": ("mfn_encoder.out_fc1.", "mfn_encoder.out_fc2.")}


def _translation(encoder: str, decoder: str, attention: str, use: str) -> NameMap:
    """MCTN's ``Encoder``, ``Decoder`` and ``Attention`` -> the ``translation`` template ``use``
    (its ``encoder`` and ``decoder`` blocks; the encoder's ``fc``, W_s, is the decoder's ``state``)."""
    return {
        **lstm(f"{encoder}.rnn", f"{use}.encoder.rnn", bidirectional=True), f"{encoder}.fc.weight": f"{use}.decoder.state.weight",
        **lstm(f"{decoder}.rnn", f"{use}.decoder.rnn", bidirectional=True), **linear(f"{decoder}.fc_out", f"{use}.decoder.out"),
        **{f"{attention}.{k}.weight": f"{use}.decoder.attention.{k}.weight" for k in ("attn", "v")},
    }


def mctn_names(model) -> NameMap:
    """MMSA's module holds each translation three times over (``encoder1``; ``decoder1`` with its
    ``attention``, which is ``attn1``; ``seq2seq1`` holding both): ``state_dict()`` lists every
    alias, ``parameters()`` each tensor once; every alias maps to the one Composer tensor. The
    cycle's second use (``cycle.back``) shares ``cycle.there``'s tensors."""
    names: NameMap = {}
    for i, use in ((1, "cycle.there"), (2, "second")):
        for encoder, decoder, attention in ((f"encoder{i}", f"decoder{i}", f"attn{i}"),
                                            (f"encoder{i}", f"decoder{i}", f"decoder{i}.attention"),
                                            (f"seq2seq{i}.encoder", f"seq2seq{i}.decoder", f"seq2seq{i}.decoder.attention")):
            names.update(_translation(encoder, decoder, attention, use))
    regression = {**lstm("regression.rnn", "head.rnn"), **linear("regression.linear", "head.score"), **linear("regression.linear2", "head.out")}
    return {**names, **regression}


NAME_MAPS = {"mfm": mfm_names, "mctn": mctn_names}
