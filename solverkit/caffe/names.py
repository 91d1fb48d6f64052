"""How Caffe's layer messages map onto solverkit's flat layer fields, both ways.

A Caffe layer keeps its type's settings in nested messages (``convolution_param { }``,
``loss_param { }``, ``transform_param { }``); solverkit keeps them flat in the layer
entry (``transform`` stays one nested field). :func:`blocks_of` says which messages a
type takes and :func:`block_of_field` where each of our fields goes back to.
"""

from __future__ import annotations

import re

# V1LayerParameter.LayerType -> the type string of today's LayerParameter
V1_TYPES = {
    "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution",
    "DATA": "Data", "DECONVOLUTION": "Deconvolution", "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData", "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise",
    "EXP": "Exp", "FLATTEN": "Flatten", "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col", "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN",
    "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence",
    "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice",
    "TANH": "TanH", "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
}
# the numbers of the same enum (a V1 file may give ``type: 4``)
V1_TYPE_NUMBERS = {
    35: "ABSVAL", 1: "ACCURACY", 30: "ARGMAX", 2: "BNLL", 3: "CONCAT", 37: "CONTRASTIVE_LOSS",
    4: "CONVOLUTION", 5: "DATA", 39: "DECONVOLUTION", 6: "DROPOUT", 32: "DUMMY_DATA",
    7: "EUCLIDEAN_LOSS", 25: "ELTWISE", 38: "EXP", 8: "FLATTEN", 9: "HDF5_DATA",
    10: "HDF5_OUTPUT", 28: "HINGE_LOSS", 11: "IM2COL", 12: "IMAGE_DATA", 13: "INFOGAIN_LOSS",
    14: "INNER_PRODUCT", 15: "LRN", 29: "MEMORY_DATA", 16: "MULTINOMIAL_LOGISTIC_LOSS",
    34: "MVN", 17: "POOLING", 26: "POWER", 18: "RELU", 19: "SIGMOID",
    27: "SIGMOID_CROSS_ENTROPY_LOSS", 36: "SILENCE", 20: "SOFTMAX", 21: "SOFTMAX_LOSS",
    22: "SPLIT", 33: "SLICE", 23: "TANH", 24: "WINDOW_DATA", 31: "THRESHOLD",
}

# SolverParameter.SolverType -> the type string
SOLVER_TYPES = {"SGD": "SGD", "NESTEROV": "Nesterov", "ADAGRAD": "AdaGrad",
                "RMSPROP": "RMSProp", "ADADELTA": "AdaDelta", "ADAM": "Adam"}
SOLVER_TYPE_NUMBERS = {0: "SGD", 1: "NESTEROV", 2: "ADAGRAD", 3: "RMSPROP", 4: "ADADELTA",
                       5: "ADAM"}

# enum fields given by number in a file: field name -> {number: name}
ENUM_NUMBERS = {
    "phase": {0: "TRAIN", 1: "TEST"},
    "pool": {0: "MAX", 1: "AVE", 2: "STOCHASTIC"},
    "norm_region": {0: "ACROSS_CHANNELS", 1: "WITHIN_CHANNEL"},
    "normalization": {0: "FULL", 1: "VALID", 2: "BATCH_SIZE", 3: "NONE"},
    "variance_norm": {0: "FAN_IN", 1: "FAN_OUT", 2: "AVERAGE"},
    "norm": {1: "L1", 2: "L2"},
    "backend": {0: "LEVELDB", 1: "LMDB"},
    "round_mode": {0: "CEIL", 1: "FLOOR"},
    "snapshot_format": {0: "HDF5", 1: "BINARYPROTO"},
    "solver_mode": {0: "CPU", 1: "GPU"},
    "code_type": {1: "CORNER", 2: "CENTER_SIZE", 3: "CORNER_SIZE"},
}
# enums whose numbers differ per message
ENUM_NUMBERS_BY_BLOCK = {
    ("eltwise_param", "operation"): {0: "PROD", 1: "SUM", 2: "MAX"},
    ("reduction_param", "operation"): {1: "SUM", 2: "ASUM", 3: "SUMSQ", 4: "MEAN"},
}

LOSS_FIELDS = ("ignore_label", "normalization", "normalize")
# Each layer type's own message in Caffe's LayerParameter (BVLC's caffe.proto, and the
# forks' for their types): the one table both the prototxt reader and the writer use.
# Types absent here have no message of their own in Caffe (AbsVal, Split, ...).
CAFFE_BLOCKS = {
    "Accuracy": "accuracy_param", "ArgMax": "argmax_param", "BatchNorm": "batch_norm_param",
    "Bias": "bias_param", "Clip": "clip_param", "Concat": "concat_param",
    "ContrastiveLoss": "contrastive_loss_param", "Convolution": "convolution_param",
    "Crop": "crop_param", "Data": "data_param", "Deconvolution": "convolution_param",
    "Dropout": "dropout_param", "DummyData": "dummy_data_param", "Eltwise": "eltwise_param",
    "ELU": "elu_param", "Embed": "embed_param", "Exp": "exp_param", "Flatten": "flatten_param",
    "HDF5Data": "hdf5_data_param", "HDF5Output": "hdf5_output_param",
    "HingeLoss": "hinge_loss_param", "Im2col": "convolution_param",
    "ImageData": "image_data_param", "InfogainLoss": "infogain_loss_param",
    "InnerProduct": "inner_product_param", "Input": "input_param", "Log": "log_param",
    "LRN": "lrn_param", "LSTM": "recurrent_param", "MemoryData": "memory_data_param",
    "MVN": "mvn_param", "Parameter": "parameter_param", "Pooling": "pooling_param",
    "Power": "power_param", "PReLU": "prelu_param", "Python": "python_param",
    "Reduction": "reduction_param", "ReLU": "relu_param", "Reshape": "reshape_param",
    "RNN": "recurrent_param", "Scale": "scale_param", "Sigmoid": "sigmoid_param",
    "Softmax": "softmax_param", "SoftmaxWithLoss": "softmax_param", "SPP": "spp_param",
    "Slice": "slice_param", "Swish": "swish_param", "TanH": "tanh_param",
    "Threshold": "threshold_param", "Tile": "tile_param", "WindowData": "window_data_param",
    # the SSD fork (weiliu89/caffe)
    "DetectionOutput": "detection_output_param", "Normalize": "norm_param",
    "Permute": "permute_param", "PriorBox": "prior_box_param",
    # other forks: SegNet, ShuffleNet, the depthwise fork, Faster R-CNN
    "Upsample": "upsample_param", "ShuffleChannel": "shuffle_channel_param",
    "DepthwiseConvolution": "convolution_param", "ROIPooling": "roi_pooling_param",
}
# fields of ``data_param`` that Caffe moves to ``transform_param`` (its old home)
DATA_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")


def block_name(type_name: str) -> str:
    """The ``*_param`` message of ``type_name``: Caffe's (:data:`CAFFE_BLOCKS`), or for a
    type Caffe does not have (ours, a plugin's) the type in snake case: ``L1Loss`` ->
    ``l1_loss_param``."""
    if type_name in CAFFE_BLOCKS:
        return CAFFE_BLOCKS[type_name]
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", type_name).lower() + "_param"


def blocks_of(type_name: str) -> list[str]:
    """Every ``*_param`` message a layer of ``type_name`` takes (its own first)."""
    blocks = [block_name(type_name)]
    if type_name.endswith("Loss"):
        blocks.append("loss_param")
    if type_name == "HDF5Data":
        return ["hdf5_data_param"]
    if type_name in ("Data", "ImageData", "MemoryData", "WindowData"):
        blocks.append("transform_param")
    return blocks


def block_of_field(type_name: str, field: str) -> str | None:
    """The message our flat ``field`` of ``type_name`` belongs in (``None``: a top-level field)."""
    if field == "transform":
        return "transform_param"
    if type_name.endswith("Loss") and field in LOSS_FIELDS:
        return "loss_param"
    return block_name(type_name)
