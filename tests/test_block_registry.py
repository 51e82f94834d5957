"""Every registered block, automatically: inferred spec equals the real output shape,
forward, backward and YAML round-trip, for each of the block's examples."""

import pytest

from composer.registry import list_blocks
from composer.testing import check_block

CASES = [
    pytest.param(entry.name, fields, inputs, id=f"{entry.name}-{i}")
    for entry in list_blocks()
    for i, (fields, inputs) in enumerate(entry.config.examples())
]


def test_every_block_has_examples():
    missing = []
    for entry in list_blocks():
        try:
            if not entry.config.examples():
                missing.append(entry.name)
        except NotImplementedError:
            missing.append(entry.name)
    assert not missing, f"blocks without examples(): {missing}"


def test_every_block_has_a_docstring():
    assert [e.name for e in list_blocks() if not e.doc] == []


@pytest.mark.parametrize("type_name,fields,inputs", CASES)
def test_block_spec_forward_backward_round_trip(type_name, fields, inputs):
    check_block(type_name, fields, inputs)
