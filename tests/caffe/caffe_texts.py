"""Caffe text files as Caffe's own examples and model zoo write them (shortened where
only the repetition is dropped), for the tests to write next to their data."""

# examples/mnist/lenet_train_test.prototxt, the sources being .npz files of MNIST's shape
LENET = """\
name: "LeNet"
layer {
  name: "mnist"
  type: "Data"
  top: "data"
  top: "label"
  include {
    phase: TRAIN
  }
  transform_param {
    scale: 0.00390625
  }
  data_param {
    source: "mnist_train.npz"
    batch_size: 64
    backend: LMDB
  }
}
layer {
  name: "mnist"
  type: "Data"
  top: "data"
  top: "label"
  include {
    phase: TEST
  }
  transform_param {
    scale: 0.00390625
  }
  data_param {
    source: "mnist_test.npz"
    batch_size: 100
    backend: LMDB
  }
}
layer {
  name: "conv1"
  type: "Convolution"
  bottom: "data"
  top: "conv1"
  param {
    lr_mult: 1
  }
  param {
    lr_mult: 2
  }
  convolution_param {
    num_output: 20
    kernel_size: 5
    stride: 1
    weight_filler {
      type: "xavier"
    }
    bias_filler {
      type: "constant"
    }
  }
}
layer {
  name: "pool1"
  type: "Pooling"
  bottom: "conv1"
  top: "pool1"
  pooling_param {
    pool: MAX
    kernel_size: 2
    stride: 2
  }
}
layer {
  name: "conv2"
  type: "Convolution"
  bottom: "pool1"
  top: "conv2"
  param {
    lr_mult: 1
  }
  param {
    lr_mult: 2
  }
  convolution_param {
    num_output: 50
    kernel_size: 5
    stride: 1
    weight_filler {
      type: "xavier"
    }
    bias_filler {
      type: "constant"
    }
  }
}
layer {
  name: "pool2"
  type: "Pooling"
  bottom: "conv2"
  top: "pool2"
  pooling_param {
    pool: MAX
    kernel_size: 2
    stride: 2
  }
}
layer {
  name: "ip1"
  type: "InnerProduct"
  bottom: "pool2"
  top: "ip1"
  param {
    lr_mult: 1
  }
  param {
    lr_mult: 2
  }
  inner_product_param {
    num_output: 500
    weight_filler {
      type: "xavier"
    }
    bias_filler {
      type: "constant"
    }
  }
}
layer {
  name: "relu1"
  type: "ReLU"
  bottom: "ip1"
  top: "ip1"
}
layer {
  name: "ip2"
  type: "InnerProduct"
  bottom: "ip1"
  top: "ip2"
  param {
    lr_mult: 1
  }
  param {
    lr_mult: 2
  }
  inner_product_param {
    num_output: 10
    weight_filler {
      type: "xavier"
    }
    bias_filler {
      type: "constant"
    }
  }
}
layer {
  name: "accuracy"
  type: "Accuracy"
  bottom: "ip2"
  bottom: "label"
  top: "accuracy"
  include {
    phase: TEST
  }
}
layer {
  name: "loss"
  type: "SoftmaxWithLoss"
  bottom: "ip2"
  bottom: "label"
  top: "loss"
}
"""

# examples/mnist/lenet_solver.prototxt (paths from Caffe's root, as Caffe's files give them)
LENET_SOLVER = """\
# The train/test net protocol buffer definition
net: "examples/mnist/lenet_train_test.prototxt"
# test_iter specifies how many forward passes the test should carry out.
# In the case of MNIST, we have test batch size 100 and 100 test iterations,
# covering the full 10,000 testing images.
test_iter: 100
# Carry out testing every 500 training iterations.
test_interval: 500
# The base learning rate, momentum and the weight decay of the network.
base_lr: 0.01
momentum: 0.9
weight_decay: 0.0005
# The learning rate policy
lr_policy: "inv"
gamma: 0.0001
power: 0.75
# Display every 100 iterations
display: 100
# The maximum number of iterations
max_iter: 10000
# snapshot intermediate results
snapshot: 5000
snapshot_prefix: "examples/mnist/lenet"
# solver mode: CPU or GPU
solver_mode: GPU
"""

# examples/cifar10/cifar10_quick_train_test.prototxt
CIFAR10_QUICK = """\
name: "CIFAR10_quick"
layer {
  name: "cifar"
  type: "Data"
  top: "data"
  top: "label"
  include {
    phase: TRAIN
  }
  transform_param {
    mean_file: "mean.binaryproto"
  }
  data_param {
    source: "cifar10_train.npz"
    batch_size: 100
    backend: LMDB
  }
}
layer {
  name: "cifar"
  type: "Data"
  top: "data"
  top: "label"
  include {
    phase: TEST
  }
  transform_param {
    mean_file: "mean.binaryproto"
  }
  data_param {
    source: "cifar10_test.npz"
    batch_size: 100
    backend: LMDB
  }
}
layer {
  name: "conv1"
  type: "Convolution"
  bottom: "data"
  top: "conv1"
  param {
    lr_mult: 1
  }
  param {
    lr_mult: 2
  }
  convolution_param {
    num_output: 32
    pad: 2
    kernel_size: 5
    stride: 1
    weight_filler {
      type: "gaussian"
      std: 0.0001
    }
    bias_filler {
      type: "constant"
    }
  }
}
layer {
  name: "pool1"
  type: "Pooling"
  bottom: "conv1"
  top: "pool1"
  pooling_param {
    pool: MAX
    kernel_size: 3
    stride: 2
  }
}
layer {
  name: "relu1"
  type: "ReLU"
  bottom: "pool1"
  top: "pool1"
}
layer {
  name: "conv2"
  type: "Convolution"
  bottom: "pool1"
  top: "conv2"
  param {
    lr_mult: 1
  }
  param {
    lr_mult: 2
  }
  convolution_param {
    num_output: 32
    pad: 2
    kernel_size: 5
    stride: 1
    weight_filler {
      type: "gaussian"
      std: 0.01
    }
    bias_filler {
      type: "constant"
    }
  }
}
layer {
  name: "relu2"
  type: "ReLU"
  bottom: "conv2"
  top: "conv2"
}
layer {
  name: "pool2"
  type: "Pooling"
  bottom: "conv2"
  top: "pool2"
  pooling_param {
    pool: AVE
    kernel_size: 3
    stride: 2
  }
}
layer {
  name: "conv3"
  type: "Convolution"
  bottom: "pool2"
  top: "conv3"
  param {
    lr_mult: 1
  }
  param {
    lr_mult: 2
  }
  convolution_param {
    num_output: 64
    pad: 2
    kernel_size: 5
    stride: 1
    weight_filler {
      type: "gaussian"
      std: 0.01
    }
    bias_filler {
      type: "constant"
    }
  }
}
layer {
  name: "relu3"
  type: "ReLU"
  bottom: "conv3"
  top: "conv3"
}
layer {
  name: "pool3"
  type: "Pooling"
  bottom: "conv3"
  top: "pool3"
  pooling_param {
    pool: AVE
    kernel_size: 3
    stride: 2
  }
}
layer {
  name: "ip1"
  type: "InnerProduct"
  bottom: "pool3"
  top: "ip1"
  param {
    lr_mult: 1
  }
  param {
    lr_mult: 2
  }
  inner_product_param {
    num_output: 64
    weight_filler {
      type: "gaussian"
      std: 0.1
    }
    bias_filler {
      type: "constant"
    }
  }
}
layer {
  name: "ip2"
  type: "InnerProduct"
  bottom: "ip1"
  top: "ip2"
  param {
    lr_mult: 1
  }
  param {
    lr_mult: 2
  }
  inner_product_param {
    num_output: 10
    weight_filler {
      type: "gaussian"
      std: 0.1
    }
    bias_filler {
      type: "constant"
    }
  }
}
layer {
  name: "accuracy"
  type: "Accuracy"
  bottom: "ip2"
  bottom: "label"
  top: "accuracy"
  include {
    phase: TEST
  }
}
layer {
  name: "loss"
  type: "SoftmaxWithLoss"
  bottom: "ip2"
  bottom: "label"
  top: "loss"
}
"""

# examples/cifar10/cifar10_quick_solver.prototxt
CIFAR10_QUICK_SOLVER = """\
# reduce the learning rate after 8 epochs (4000 iters) by a factor of 10
net: "cifar10_quick_train_test.prototxt"
test_iter: 100
test_interval: 500
base_lr: 0.001
momentum: 0.9
weight_decay: 0.004
lr_policy: "fixed"
display: 100
max_iter: 4000
snapshot: 4000
snapshot_format: HDF5
snapshot_prefix: "examples/cifar10/cifar10_quick"
solver_mode: GPU
"""


def _conv(name, bottom, num, kernel, stride=1, pad=0, group=1, top=None):
    extra = (f" pad: {pad}" if pad else "") + (f" group: {group}" if group > 1 else "") + (
        f" stride: {stride}" if stride > 1 else "")
    return f"""\
layer {{
  name: "{name}"
  type: "Convolution"
  bottom: "{bottom}"
  top: "{top or name}"
  param {{ lr_mult: 1 decay_mult: 1 }}
  param {{ lr_mult: 2 decay_mult: 0 }}
  convolution_param {{
    num_output: {num}
    kernel_size: {kernel}{extra}
    weight_filler {{ type: "gaussian" std: 0.01 }}
    bias_filler {{ type: "constant" value: 0.1 }}
  }}
}}
layer {{ name: "relu_{name}" type: "ReLU" bottom: "{top or name}" top: "{top or name}" }}
"""


def _lrn(name, bottom):
    return f"""\
layer {{
  name: "{name}"
  type: "LRN"
  bottom: "{bottom}"
  top: "{name}"
  lrn_param {{
    local_size: 5
    alpha: 0.0001
    beta: 0.75
  }}
}}
"""


def _pool(name, bottom, kernel, stride, method="MAX", pad=0):
    extra = f"\n    pad: {pad}" if pad else ""
    return f"""\
layer {{
  name: "{name}"
  type: "Pooling"
  bottom: "{bottom}"
  top: "{name}"
  pooling_param {{
    pool: {method}
    kernel_size: {kernel}
    stride: {stride}{extra}
  }}
}}
"""


def _fc(name, bottom, num, dropout=True):
    text = f"""\
layer {{
  name: "{name}"
  type: "InnerProduct"
  bottom: "{bottom}"
  top: "{name}"
  param {{ lr_mult: 1 decay_mult: 1 }}
  param {{ lr_mult: 2 decay_mult: 0 }}
  inner_product_param {{
    num_output: {num}
    weight_filler {{ type: "gaussian" std: 0.005 }}
    bias_filler {{ type: "constant" value: 0.1 }}
  }}
}}
"""
    if dropout:
        text += f"""\
layer {{ name: "relu_{name}" type: "ReLU" bottom: "{name}" top: "{name}" }}
layer {{
  name: "drop_{name}"
  type: "Dropout"
  bottom: "{name}"
  top: "{name}"
  dropout_param {{
    dropout_ratio: 0.5
  }}
}}
"""
    return text


# models/bvlc_alexnet/deploy.prototxt: grouped convolutions, LRN, prob 10 x 1000
ALEXNET_DEPLOY = (
    'name: "AlexNet"\n'
    'layer {\n  name: "data"\n  type: "Input"\n  top: "data"\n'
    '  input_param { shape: { dim: 10 dim: 3 dim: 227 dim: 227 } }\n}\n'
    + _conv("conv1", "data", 96, 11, stride=4) + _lrn("norm1", "conv1")
    + _pool("pool1", "norm1", 3, 2)
    + _conv("conv2", "pool1", 256, 5, pad=2, group=2) + _lrn("norm2", "conv2")
    + _pool("pool2", "norm2", 3, 2)
    + _conv("conv3", "pool2", 384, 3, pad=1)
    + _conv("conv4", "conv3", 384, 3, pad=1, group=2)
    + _conv("conv5", "conv4", 256, 3, pad=1, group=2)
    + _pool("pool5", "conv5", 3, 2)
    + _fc("fc6", "pool5", 4096) + _fc("fc7", "fc6", 4096) + _fc("fc8", "fc7", 1000, False)
    + 'layer {\n  name: "prob"\n  type: "Softmax"\n  bottom: "fc8"\n  top: "prob"\n}\n')

# models/bvlc_googlenet: inception_3a (four branches joined by Concat) and an AVE pooling
# whose output size needs Caffe's ceil rounding (28 -> 9 with kernel 5, stride 3)
INCEPTION = (
    'name: "GoogleNet"\n'
    'input: "data"\ninput_shape { dim: 10 dim: 192 dim: 28 dim: 28 }\n'
    + _conv("inception_3a/1x1", "data", 64, 1)
    + _conv("inception_3a/3x3_reduce", "data", 96, 1)
    + _conv("inception_3a/3x3", "inception_3a/3x3_reduce", 128, 3, pad=1)
    + _conv("inception_3a/5x5_reduce", "data", 16, 1)
    + _conv("inception_3a/5x5", "inception_3a/5x5_reduce", 32, 5, pad=2)
    + _pool("inception_3a/pool", "data", 3, 1, pad=1)
    + _conv("inception_3a/pool_proj", "inception_3a/pool", 32, 1)
    + """\
layer {
  name: "inception_3a/output"
  type: "Concat"
  bottom: "inception_3a/1x1"
  bottom: "inception_3a/3x3"
  bottom: "inception_3a/5x5"
  bottom: "inception_3a/pool_proj"
  top: "inception_3a/output"
}
"""
    + _pool("loss1/ave_pool", "inception_3a/output", 5, 3, method="AVE")
    + _fc("loss1/classifier", "loss1/ave_pool", 1000, False)
    + 'layer { name: "prob" type: "Softmax" bottom: "loss1/classifier" top: "prob" }\n')

# an old (V1) LeNet: enum types, blobs_lr / weight_decay, net-level input_dim
LENET_V1 = """\
name: "LeNet"
input: "data"
input_dim: 64
input_dim: 1
input_dim: 28
input_dim: 28
input: "label"
input_dim: 64
input_dim: 1
input_dim: 1
input_dim: 1
layers {
  name: "conv1"
  type: CONVOLUTION
  bottom: "data"
  top: "conv1"
  blobs_lr: 1
  blobs_lr: 2
  weight_decay: 1
  weight_decay: 0
  convolution_param {
    num_output: 20
    kernel_size: 5
    weight_filler {
      type: "xavier"
    }
  }
}
layers {
  name: "pool1"
  type: POOLING
  bottom: "conv1"
  top: "pool1"
  pooling_param {
    pool: MAX
    kernel_size: 2
    stride: 2
  }
}
layers {
  name: "ip1"
  type: INNER_PRODUCT
  bottom: "pool1"
  top: "ip1"
  blobs_lr: 1
  blobs_lr: 2
  inner_product_param {
    num_output: 500
    weight_filler {
      type: "gaussian"
      std: 0.01
      sparse: 15
    }
  }
}
layers { name: "relu1" type: RELU bottom: "ip1" top: "ip1" }
layers {
  name: "ip2"
  type: INNER_PRODUCT
  bottom: "ip1"
  top: "ip2"
  inner_product_param { num_output: 10 }
}
layers {
  name: "loss"
  type: SOFTMAX_LOSS
  bottom: "ip2"
  bottom: "label"
  top: "loss"
}
"""

# a solver embedding V1 nets: one train net and two test nets (stages choose a layer)
V1_NET_TEMPLATE = """\
    name: "{name}"
    layers {{
      name: "data"
      type: DUMMY_DATA
      top: "data"
      top: "label"
      dummy_data_param {{
        num: {batch} channels: 1 height: 28 width: 28
        num: {batch} channels: 1 height: 1 width: 1
        data_filler {{ type: "gaussian" std: 1 }}
        data_filler {{ type: "constant" value: 1 }}
      }}
    }}
    layers {{
      name: "ip1"
      type: INNER_PRODUCT
      bottom: "data"
      top: "ip1"
      blobs_lr: 1
      blobs_lr: 2
      inner_product_param {{ num_output: 10 weight_filler {{ type: "xavier" }} }}
    }}
    layers {{
      name: "loss"
      type: SOFTMAX_LOSS
      bottom: "ip1"
      bottom: "label"
      top: "loss"
    }}
    layers {{
      name: "accuracy"
      type: ACCURACY
      bottom: "ip1"
      bottom: "label"
      top: "accuracy"
      include {{ phase: TEST stage: "val" }}
    }}
"""

SOLVER_V1_TWO_TESTS = (
    "train_net_param {\n" + V1_NET_TEMPLATE.format(name="train", batch=16) + "}\n"
    "test_net_param {\n" + V1_NET_TEMPLATE.format(name="test_a", batch=8) + "}\n"
    "test_net_param {\n" + V1_NET_TEMPLATE.format(name="test_b", batch=4) + "}\n"
    """\
test_iter: 2
test_iter: 3
test_state { stage: "val" }
test_state { stage: "other" level: 1 }
train_state { phase: TRAIN }
test_interval: 10
test_compute_loss: true
base_lr: 0.01
lr_policy: "step"
gamma: 0.1
stepsize: 100
power: 0.75
max_iter: 20
momentum: 0.9
solver_type: NESTEROV
device_id: 0
""")
