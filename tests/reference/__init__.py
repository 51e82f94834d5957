"""Plain-PyTorch references of the paper models (no Composer imports).

Each module is written from its paper's equations and the authors' documented behaviour and
exposes ``reference_for(model)``: a reference network with the sizes of a compiled Composer
model and a copy of its weights, whose ``forward(batch)`` returns the prediction ``[B, outputs]``.
The equivalence tests (``tests/test_reference_*.py``) and ``composer bench --reference`` use them.
"""
