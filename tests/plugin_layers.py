"""A custom layer for the plugin test: ``y = factor · x``, listed under ``plugins:``."""

from solverkit import Layer, LayerParams, register_layer


@register_layer("TestScale")
class TestScale(Layer):
    """``y = factor · x``; ``dx = factor · dy``."""

    class Params(LayerParams):
        factor: float = 2.0

    min_bottoms = max_bottoms = 1
    min_tops = max_tops = 1

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        top[0].data[...] = self.params.factor * bottom[0].data

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = self.params.factor * top[0].diff
