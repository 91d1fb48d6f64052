"""pycaffe's ``caffe.io``: arrays to and from Caffe's messages, images in, and the Transformer
that turns an image (H x W x K, floats in [0, 1]) into a net's input (K x H x W)."""

from __future__ import annotations

import numpy as np

from solverkit.files import require_regular

from .proto import caffe_pb2

# ---------------------------------------------------------------- messages and arrays


def blobproto_to_array(blob, return_diff=False) -> np.ndarray:
    """A ``BlobProto``'s data (or diff) in its shape: the legacy num/channels/height/width
    when any of them is set, else ``shape.dim``; float64, as pycaffe."""
    data = np.array(blob.diff if return_diff else blob.data)
    if any(blob.HasField(axis) for axis in ("num", "channels", "height", "width")):
        return data.reshape(blob.num, blob.channels, blob.height, blob.width)
    return data.reshape(blob.shape.dim)


def array_to_blobproto(arr, diff=None):
    """A ``BlobProto`` with ``shape.dim`` and the values (and ``diff`` when given)."""
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend(arr.shape)
    blob.data.extend(np.asarray(arr, dtype=float).flat)
    if diff is not None:
        blob.diff.extend(np.asarray(diff, dtype=float).flat)
    return blob


def arraylist_to_blobprotovector_str(arraylist) -> bytes:
    vector = caffe_pb2.BlobProtoVector()
    vector.blobs.extend([array_to_blobproto(arr) for arr in arraylist])
    return vector.SerializeToString()


def blobprotovector_str_to_arraylist(text: bytes) -> list[np.ndarray]:
    vector = caffe_pb2.BlobProtoVector()
    vector.ParseFromString(text)
    return [blobproto_to_array(blob) for blob in vector.blobs]


def array_to_datum(arr, label=None):
    """A ``Datum`` of a C x H x W array: uint8 as bytes in ``data``, else ``float_data``."""
    if arr.ndim != 3:
        raise ValueError("Incorrect array shape.")
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = arr.shape
    if arr.dtype == np.uint8:
        datum.data = arr.tobytes()
    else:
        datum.float_data.extend(arr.astype(float).flat)
    if label is not None:
        datum.label = label
    return datum


def datum_to_array(datum) -> np.ndarray:
    """A ``Datum``'s values as C x H x W: uint8 from ``data``, float64 from ``float_data``."""
    shape = (datum.channels, datum.height, datum.width)
    if len(datum.data):
        return np.frombuffer(datum.data, dtype=np.uint8).reshape(shape).copy()
    return np.array(datum.float_data).astype(float).reshape(shape)


# ---------------------------------------------------------------- images

# the luminance weights of scikit-image's rgb2gray, which pycaffe's load_image used
_GRAY = np.array([0.2125, 0.7154, 0.0721])


def load_image(filename, color=True) -> np.ndarray:
    """An image file as float32 in [0, 1]: H x W x 3 (RGB) when ``color``, else H x W x 1
    (an RGB file is converted to luminance). Alpha is dropped. Needs Pillow."""
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("caffe.io.load_image needs Pillow: pip install 'solverkit[image]'") \
            from None
    with Image.open(require_regular(filename, what="image")) as image:
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            img = np.asarray(image, dtype=np.float64) / 65535.0
        else:
            if image.mode not in ("L", "RGB", "RGBA"):
                image = image.convert("RGBA" if "A" in image.mode else "RGB")
            img = np.asarray(image, dtype=np.float64) / 255.0
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]
    if not color and img.ndim == 3:
        img = img @ _GRAY
    img = img.astype(np.float32)
    if img.ndim == 2:
        img = img[:, :, np.newaxis]
        if color:
            img = np.tile(img, (1, 1, 3))
    return img


def _axis_weights(size_in: int, size_out: int):
    """Source indices and weights of linear interpolation along one axis (pixel centres
    aligned: ``x_in = (x_out + 0.5) · size_in / size_out − 0.5``, clamped at the edges)."""
    coords = (np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5
    coords = np.clip(coords, 0, size_in - 1)
    low = np.floor(coords).astype(int)
    high = np.minimum(low + 1, size_in - 1)
    return low, high, (coords - low)


def resize_image(im, new_dims, interp_order=1) -> np.ndarray:
    """``im`` (H x W x K) resized to ``new_dims`` (height, width) as float32: linear
    interpolation (``interp_order=1``) or nearest (``0``)."""
    im = np.asarray(im)
    height, width = int(new_dims[0]), int(new_dims[1])
    if im.min() == im.max():        # a constant image stays that constant
        return np.full((height, width, im.shape[-1]), im.min(), dtype=np.float32)
    im = im.astype(np.float64)
    if interp_order == 0:
        rows = np.minimum((np.arange(height) * im.shape[0] / height).astype(int), im.shape[0] - 1)
        cols = np.minimum((np.arange(width) * im.shape[1] / width).astype(int), im.shape[1] - 1)
        return im[rows][:, cols].astype(np.float32)
    r0, r1, rw = _axis_weights(im.shape[0], height)
    c0, c1, cw = _axis_weights(im.shape[1], width)
    rows = im[r0] * (1 - rw)[:, None, None] + im[r1] * rw[:, None, None]
    out = rows[:, c0] * (1 - cw)[None, :, None] + rows[:, c1] * cw[None, :, None]
    return out.astype(np.float32)


def oversample(images, crop_dims) -> np.ndarray:
    """The four corner crops and the centre crop of every image, then the same ten mirrored:
    (10·N) x h x w x K for N images of H x W x K and ``crop_dims`` (h, w)."""
    im_shape = np.array(images[0].shape)
    crop_dims = np.array(crop_dims)
    center = im_shape[:2] / 2.0
    corners = [(i, j) for i in (0, im_shape[0] - crop_dims[0])
               for j in (0, im_shape[1] - crop_dims[1])]
    boxes = np.empty((5, 4), dtype=int)
    for k, (i, j) in enumerate(corners):
        boxes[k] = (i, j, i + crop_dims[0], j + crop_dims[1])
    boxes[4] = np.tile(center, (1, 2)) + np.concatenate([-crop_dims / 2.0, crop_dims / 2.0])
    boxes = np.tile(boxes, (2, 1))
    crops = np.empty((10 * len(images), crop_dims[0], crop_dims[1], im_shape[-1]),
                     dtype=np.float32)
    k = 0
    for im in images:
        for box in boxes:
            crops[k] = im[box[0]:box[2], box[1]:box[3], :]
            k += 1
        crops[k - 5:k] = crops[k - 5:k, :, ::-1, :]     # the second five are mirrored
    return crops


# ---------------------------------------------------------------- preprocessing


class Transformer:
    """Preprocessing for a net's inputs, ``Transformer({name: blob shape})``.

    ``preprocess(name, image)``: resize to the blob's H x W, then ``set_transpose``,
    ``set_channel_swap``, ``* raw_scale``, ``- mean``, ``* input_scale`` (each if set), in
    that order; ``deprocess`` undoes them in reverse.
    """

    def __init__(self, inputs):
        self.inputs = {name: tuple(shape) for name, shape in inputs.items()}
        self.transpose = {}
        self.channel_swap = {}
        self.raw_scale = {}
        self.mean = {}
        self.input_scale = {}

    def _check_input(self, in_):
        if in_ not in self.inputs:
            raise Exception(f"{in_} is not one of the net inputs: {self.inputs}")

    def preprocess(self, in_, data) -> np.ndarray:
        self._check_input(in_)
        caffe_in = np.asarray(data).astype(np.float32, copy=False)
        in_dims = self.inputs[in_][2:]
        if caffe_in.shape[:2] != in_dims:
            caffe_in = resize_image(caffe_in, in_dims)
        if in_ in self.transpose:
            caffe_in = caffe_in.transpose(self.transpose[in_])
        if in_ in self.channel_swap:
            caffe_in = caffe_in[list(self.channel_swap[in_]), :, :]
        if in_ in self.raw_scale:
            caffe_in = caffe_in * self.raw_scale[in_]
        if in_ in self.mean:
            caffe_in = caffe_in - self.mean[in_]
        if in_ in self.input_scale:
            caffe_in = caffe_in * self.input_scale[in_]
        return caffe_in

    def deprocess(self, in_, data) -> np.ndarray:
        self._check_input(in_)
        decaf_in = np.array(data, copy=True).squeeze()
        if in_ in self.input_scale:
            decaf_in /= self.input_scale[in_]
        if in_ in self.mean:
            decaf_in += self.mean[in_]
        if in_ in self.raw_scale:
            decaf_in /= self.raw_scale[in_]
        if in_ in self.channel_swap:
            decaf_in = decaf_in[np.argsort(self.channel_swap[in_]), :, :]
        if in_ in self.transpose:
            decaf_in = decaf_in.transpose(np.argsort(self.transpose[in_]))
        return decaf_in

    def set_transpose(self, in_, order):
        """The axis order taking the image to the blob's, e.g. (2, 0, 1): HxWxC -> CxHxW."""
        self._check_input(in_)
        if len(order) != len(self.inputs[in_]) - 1:
            raise Exception("Transpose order needs to have the same number of dimensions as "
                            "the input.")
        self.transpose[in_] = order

    def set_channel_swap(self, in_, order):
        """The channel order after transposing, e.g. (2, 1, 0): RGB -> BGR."""
        self._check_input(in_)
        if len(order) != self.inputs[in_][1]:
            raise Exception("Channel swap needs to have the same number of dimensions as the "
                            "input channels.")
        self.channel_swap[in_] = order

    def set_raw_scale(self, in_, scale):
        """Multiply the raw image (in [0, 1]) by ``scale`` (255 for models trained on bytes)."""
        self._check_input(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_, mean):
        """Subtract ``mean``: one value per channel (K,), or an image (K x H x W, resized to
        the blob's H x W when it differs)."""
        self._check_input(in_)
        mean = np.asarray(mean)
        shape = mean.shape
        if mean.ndim == 1:
            if shape[0] != self.inputs[in_][1]:
                raise ValueError("Mean channels incompatible with input.")
            mean = mean[:, np.newaxis, np.newaxis]
        else:
            if len(shape) == 2:
                shape = (1,) + shape
            if len(shape) != 3:
                raise ValueError("Mean shape invalid")
            if shape != self.inputs[in_][1:]:
                low, high = mean.min(), mean.max()
                normal = (mean - low) / (high - low)
                mean = resize_image(normal.transpose((1, 2, 0)), self.inputs[in_][2:]) \
                    .transpose((2, 0, 1)) * (high - low) + low
        self.mean[in_] = mean

    def set_input_scale(self, in_, scale):
        """Multiply the preprocessed input by ``scale`` (after the mean is subtracted)."""
        self._check_input(in_)
        self.input_scale[in_] = scale


def input_transformer(net, in_, mean=None, input_scale=None, raw_scale=None,
                      channel_swap=None) -> Transformer:
    """The ``Transformer`` of ``Classifier`` and ``Detector``: HxWxC images to the net's input
    blob ``in_`` (transposed to CxHxW), with the options each of them takes."""
    transformer = Transformer({in_: net.blobs[in_].data.shape})
    transformer.set_transpose(in_, (2, 0, 1))
    if mean is not None:
        transformer.set_mean(in_, mean)
    if input_scale is not None:
        transformer.set_input_scale(in_, input_scale)
    if raw_scale is not None:
        transformer.set_raw_scale(in_, raw_scale)
    if channel_swap is not None:
        transformer.set_channel_swap(in_, channel_swap)
    return transformer
