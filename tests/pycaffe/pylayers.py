"""Python layers the pycaffe tests put in nets (found as Caffe finds a layer's module)."""

import numpy as np

import caffe


class ChannelScale(caffe.Layer):
    """y[n, c] = x[n, c] · w[c]: one learnable factor per feature, starting at param_str."""

    def setup(self, bottom, top):
        if len(bottom) != 1:
            raise Exception("ChannelScale takes one bottom")
        self.blobs.add_blob(bottom[0].data.shape[1])
        self.blobs[0].data[...] = float(self.param_str or 1)

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data * self.blobs[0].data

    def backward(self, top, propagate_down, bottom):
        self.blobs[0].diff[...] += (top[0].diff * bottom[0].data).sum(axis=0)
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff * self.blobs[0].data


class PhaseTimes(caffe.Layer):
    """y = x · (1 in TRAIN, 2 in TEST): shows the layer sees its phase."""

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].shape)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data * (1 if self.phase == caffe.TRAIN else 2)


class FailsInSetup(caffe.Layer):
    def setup(self, bottom, top):
        raise ValueError("setup refused: " + self.param_str)
