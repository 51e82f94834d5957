"""Parameter shapes of the PyTorch layers blocks are made of, without PyTorch.

Each function returns ``{name: shape}`` in the order ``named_parameters()`` lists the layer's
parameters, so a block config can say what its module holds (see
:meth:`~composer.configs._base.BlockConfig.parameter_shapes`) and ``composer validate`` can
count parameters and check ``share:`` without building anything. The registry-wide test
compares every formula with the module it describes (``tests/test_parameter_shapes.py``).
"""

from __future__ import annotations

from composer.configs._base import Shapes

__all__ = [
    "under",
    "count",
    "linear",
    "layer_norm",
    "batch_norm",
    "conv1d",
    "embedding",
    "rnn",
    "lstm_cell",
    "attention",
    "mult_layer",
    "mult_encoder",
    "torch_encoder_layer",
    "mlp",
]


def under(prefix: str, shapes: Shapes) -> Shapes:
    """The shapes of a submodule named ``prefix`` (``"fc." + name`` for each)."""
    return {f"{prefix}.{name}": shape for name, shape in shapes.items()}


def count(shapes: Shapes) -> int:
    """Number of parameters the shapes hold."""
    total = 0
    for shape in shapes.values():
        n = 1
        for d in shape:
            n *= d
        total += n
    return total


def linear(d_in: int, d_out: int, bias: bool = True) -> Shapes:
    """``nn.Linear(d_in, d_out)``: weight ``(d_out, d_in)``, bias ``(d_out,)``."""
    return {"weight": (d_out, d_in), **({"bias": (d_out,)} if bias else {})}


def layer_norm(d: int) -> Shapes:
    """``nn.LayerNorm(d)``: weight and bias ``(d,)``."""
    return {"weight": (d,), "bias": (d,)}


batch_norm = layer_norm  # ``nn.BatchNorm1d(d)``: the same affine parameters (running stats are buffers)


def conv1d(d_in: int, d_out: int, kernel: int, bias: bool = True) -> Shapes:
    """``nn.Conv1d(d_in, d_out, kernel)``: weight ``(d_out, d_in, kernel)``, bias ``(d_out,)``."""
    return {"weight": (d_out, d_in, kernel), **({"bias": (d_out,)} if bias else {})}


def embedding(n: int, d: int) -> Shapes:
    """``nn.Embedding(n, d)``: weight ``(n, d)``."""
    return {"weight": (n, d)}


GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def rnn(kind: str, d_in: int, hidden: int, layers: int = 1, bidirectional: bool = False, bias: bool = True) -> Shapes:
    """``nn.LSTM`` / ``nn.GRU``: per layer and direction ``weight_ih_l{k}[_reverse]`` ``(g·H, D_k)``,
    ``weight_hh_l{k}`` ``(g·H, H)`` and two biases ``(g·H,)``; ``g`` = 4 (LSTM) or 3 (GRU),
    ``D_0 = d_in``, ``D_k = H·dirs`` above."""
    g, dirs = GATES[kind] * hidden, 2 if bidirectional else 1
    out: Shapes = {}
    for k in range(layers):
        width = d_in if k == 0 else hidden * dirs
        for suffix in ("", "_reverse")[:dirs]:
            out[f"weight_ih_l{k}{suffix}"] = (g, width)
            out[f"weight_hh_l{k}{suffix}"] = (g, hidden)
            if bias:
                out[f"bias_ih_l{k}{suffix}"] = (g,)
                out[f"bias_hh_l{k}{suffix}"] = (g,)
    return out


def lstm_cell(d_in: int, hidden: int) -> Shapes:
    """``nn.LSTMCell(d_in, hidden)``."""
    return {"weight_ih": (4 * hidden, d_in), "weight_hh": (4 * hidden, hidden), "bias_ih": (4 * hidden,), "bias_hh": (4 * hidden,)}


def attention(d: int) -> Shapes:
    """:class:`composer.layers.attention.Attention` (and ``nn.MultiheadAttention``) of width ``d``:
    ``in_proj_weight (3d, d)``, ``in_proj_bias (3d,)``, ``out_proj`` a Linear ``d -> d``."""
    return {"in_proj_weight": (3 * d, d), "in_proj_bias": (3 * d,), **under("out_proj", linear(d, d))}


def mult_layer(d: int) -> Shapes:
    """:class:`composer.layers.mult.MulTLayer`: attention, ``fc1 d -> 4d``, ``fc2 4d -> d``, two LayerNorms."""
    return {
        **under("attn", attention(d)),
        **under("fc1", linear(d, 4 * d)),
        **under("fc2", linear(4 * d, d)),
        **under("norms.0", layer_norm(d)),
        **under("norms.1", layer_norm(d)),
    }


def mult_encoder(d: int, layers: int) -> Shapes:
    """:class:`composer.layers.mult.MulTEncoder`: ``layers`` MulT layers and a final LayerNorm."""
    out: Shapes = {}
    for k in range(layers):
        out.update(under(f"layers.{k}", mult_layer(d)))
    return {**out, **under("norm", layer_norm(d))}


def torch_encoder_layer(d: int, ffn: int) -> Shapes:
    """``nn.TransformerEncoderLayer(d, heads, ffn)``: ``self_attn``, ``linear1 d -> ffn``,
    ``linear2 ffn -> d``, ``norm1``, ``norm2``."""
    return {
        **under("self_attn", attention(d)),
        **under("linear1", linear(d, ffn)),
        **under("linear2", linear(ffn, d)),
        **under("norm1", layer_norm(d)),
        **under("norm2", layer_norm(d)),
    }


def mlp(d_in: int, hidden: list[int], d_out: int, *, dropout: bool = False, bias: bool = True) -> Shapes:
    """:func:`composer.blocks.heads.make_mlp`: a Sequential of ``Linear -> act [-> Dropout]`` per
    hidden width, then a Linear; indices count the parameter-free layers too."""
    out: Shapes = {}
    index, width = 0, d_in
    for h in hidden:
        out.update(under(str(index), linear(width, h, bias)))
        index += 3 if dropout else 2
        width = h
    return {**out, **under(str(index), linear(width, d_out, bias))}
