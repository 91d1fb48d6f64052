"""Small nets for the tools' tests, written as YAML files (the tools read files)."""

import pytest

MLP = """\
name: tiny_mlp
layers:
  - {name: input, type: Input, top: [data, label], shape: [[8, 1, 4, 4], [8]]}
  - name: ip1
    type: InnerProduct
    bottom: data
    top: ip1
    num_output: 16
    weight_filler: {type: xavier}
  - {name: relu1, type: ReLU, bottom: ip1, top: ip1}
  - {name: ip2, type: InnerProduct, bottom: ip1, top: ip2, num_output: 3}
  - {name: loss, type: SoftmaxWithLoss, bottom: [ip2, label], top: loss}
  - {name: accuracy, type: Accuracy, bottom: [ip2, label], top: accuracy, include: {phase: TEST}}
"""

# a fan-out (ip1 read by two layers), shared weights and a sum: the graph has a diamond
SHARED = """\
name: siamese
layers:
  - {name: input, type: Input, top: [a, b, target], shape: [[4, 6], [4, 6], [4, 5]]}
  - {name: left, type: InnerProduct, bottom: a, top: left, num_output: 5, param: [{name: w}, {name: bias}]}
  - {name: right, type: InnerProduct, bottom: b, top: right, num_output: 5, param: [{name: w}, {name: bias}]}
  - {name: sum, type: Eltwise, bottom: [left, right], top: sum}
  - {name: act, type: TanH, bottom: sum, top: act}
  - {name: loss, type: EuclideanLoss, bottom: [act, target], top: loss}
  - {name: l1, type: L1Loss, bottom: [act, target], top: l1, loss_weight: 0.5}
"""


@pytest.fixture
def mlp_file(tmp_path):
    path = tmp_path / "mlp_net.yaml"
    path.write_text(MLP)
    return path


@pytest.fixture
def shared_file(tmp_path):
    path = tmp_path / "shared_net.yaml"
    path.write_text(SHARED)
    return path
