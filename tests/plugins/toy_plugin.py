"""A user block registered from outside the package (used by the plugin tests)."""

from typing import Literal

from composer import Block, BlockConfig, register_block


class ScaleConfig(BlockConfig):
    """Multiply the input by a constant: any spec -> the same spec."""

    type: Literal["toy_scale"] = "toy_scale"
    factor: float = 2.0

    def infer(self, inputs):
        return {"out": next(iter(inputs.values()))}

    @classmethod
    def examples(cls):
        from composer.spec import vector

        return [({"factor": 3.0}, {"in": vector(4)})]


@register_block(ScaleConfig, family="other")
class ToyScale(Block):
    """The module of ``toy_scale`` (no parameters; its size is read off a meta build)."""

    def forward(self, inputs, ctx):
        return next(iter(inputs.values())) * self.config.factor
