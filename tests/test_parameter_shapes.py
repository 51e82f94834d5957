"""Every config says what parameters its module holds, without building it.

``parameter_shapes`` is what ``composer validate`` counts and what ``share:`` is checked
against, so it must equal ``named_parameters()`` of the built module, name for name and shape
for shape: for every example of every registered block, and for every block and loss of
every shipped blueprint.
"""

import pytest
import torch

from composer.blueprint.load import load_blueprint
from composer.graph.plan import plan
from composer.registry import list_blocks
from composer.testing import make_config
from shipped import EXAMPLES, PRESETS

CASES = [
    pytest.param(entry, fields, inputs, id=f"{entry.name}-{i}")
    for entry in list_blocks()
    for i, (fields, inputs) in enumerate(entry.config.examples())
]


def built_shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(p.shape) for name, p in module.named_parameters()}


@pytest.mark.parametrize("entry,fields,inputs", CASES)
def test_block_example_parameter_shapes(entry, fields, inputs):
    config = make_config(entry.name, fields, list(inputs))
    declared = config.parameter_shapes(inputs)
    assert declared is not None, f"{entry.name}: a built-in config must declare its parameter shapes"
    with torch.device("meta"):
        module = entry.impl(config, inputs)
    assert declared == built_shapes(module)


@pytest.mark.parametrize("path", PRESETS + EXAMPLES, ids=lambda p: p.stem)
def test_blueprint_parameter_shapes(path):
    the_plan = load_blueprint(path, []).plan
    with torch.device("meta"):
        for node in the_plan.nodes:
            if node.config.share is None:
                assert node.config.parameter_shapes(node.in_specs) == built_shapes(node.entry.impl(node.config, node.in_specs)), node.id
        for loss in the_plan.losses:
            assert loss.config.parameter_shapes(loss.specs) == built_shapes(loss.entry.impl(loss.config, loss.specs)), loss.name
