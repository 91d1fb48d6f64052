"""``Classifier``: a deploy net with weights that turns images into class probabilities."""

from __future__ import annotations

import numpy as np

from . import io
from ._runtime import TEST
from .pycaffe import Net


class Classifier(Net):
    """``Classifier(model_file, pretrained_file, image_dims=None, mean=None,
    input_scale=None, raw_scale=None, channel_swap=None)``.

    Images (H x W x K, floats in [0, 1]) are resized to ``image_dims`` (default: the net's
    input size), cropped to the input size (the centre, or the ten crops of
    ``io.oversample``), preprocessed by ``self.transformer`` and run through the net.
    """

    def __init__(self, model_file, pretrained_file, image_dims=None, mean=None,
                 input_scale=None, raw_scale=None, channel_swap=None):
        super().__init__(model_file, TEST, weights=pretrained_file)
        in_ = self.inputs[0]
        self.transformer = io.input_transformer(self, in_, mean, input_scale, raw_scale,
                                                channel_swap)
        self.crop_dims = np.array(self.blobs[in_].data.shape[2:])
        self.image_dims = self.crop_dims if image_dims is None else image_dims

    def predict(self, inputs, oversample=True) -> np.ndarray:
        """(N x C) probabilities of N images; averaged over the ten crops when
        ``oversample``, else from the centre crop."""
        resized = np.zeros((len(inputs), self.image_dims[0], self.image_dims[1],
                            inputs[0].shape[2]), dtype=np.float32)
        for k, image in enumerate(inputs):
            resized[k] = io.resize_image(image, self.image_dims)
        if oversample:
            crops = io.oversample(resized, self.crop_dims)
        else:
            center = np.array(self.image_dims) / 2.0
            box = (np.tile(center, (1, 2))[0] + np.concatenate([-self.crop_dims / 2.0,
                                                                 self.crop_dims / 2.0]))
            box = box.astype(int)
            crops = resized[:, box[0]:box[2], box[1]:box[3], :]
        in_ = self.inputs[0]
        caffe_in = np.zeros(np.array(crops.shape)[[0, 3, 1, 2]], dtype=np.float32)
        for k, crop in enumerate(crops):
            caffe_in[k] = self.transformer.preprocess(in_, crop)
        predictions = self.forward_all(**{in_: caffe_in})[self.outputs[0]]
        if oversample:
            predictions = predictions.reshape((len(predictions) // 10, 10, -1)).mean(1)
        return predictions
