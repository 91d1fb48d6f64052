"""Solver test scaffolding: the ``FixedData`` plugin layer and small nets that read it.

``FixedData`` yields batches in order, wrapping around, from an ``.npz`` with ``x`` and
``y``; deliberately plain (no shuffling, no threads) so a test knows exactly which
samples each iteration sees. Net specs list it under ``plugins: [solver_data]``.
"""

from pathlib import Path

import numpy as np

from solverkit import DataLayer, LayerParams, register_layer


@register_layer("FixedData")
class FixedData(DataLayer):
    class Params(LayerParams):
        source: str
        batch_size: int

    max_bottoms = 0
    min_tops = 1
    max_tops = 2
    has_backward = False

    def setup(self, bottom, top):
        with np.load(Path(self.base_dir) / self.params.source, allow_pickle=False) as arrays:
            self.x = arrays["x"].astype(self.dtype)
            self.y = arrays["y"].astype(self.dtype)
        self.cursor = 0
        self.closed = False

    @property
    def batches_per_epoch(self):
        return len(self.x) / self.params.batch_size

    def reshape(self, bottom, top):
        top[0].reshape((self.params.batch_size, *self.x.shape[1:]))
        if len(top) > 1:
            top[1].reshape((self.params.batch_size, *self.y.shape[1:]))

    def forward(self, bottom, top):
        index = (self.cursor + np.arange(self.params.batch_size)) % len(self.x)
        self.cursor = int((self.cursor + self.params.batch_size) % len(self.x))
        top[0].data[...] = self.x[index]
        if len(top) > 1:
            top[1].data[...] = self.y[index]

    def get_state(self):
        return {"cursor": np.array(self.cursor)}

    def set_state(self, state):
        self.cursor = int(state["cursor"])

    def close(self):
        self.closed = True


def write_arrays(path, x, y) -> str:
    """Save ``x``, ``y`` as an ``.npz`` FixedData source; returns the path as text."""
    np.savez(path, x=x, y=y)
    return str(path)


def regression_net(source: str, batch_size: int, *, ip1_param=None, ip2_param=None,
                   dtype: str = "float64") -> dict:
    """x (N, 4) -> ip1 (3) -> ip2 (2) -> EuclideanLoss against y (N, 2): linear, so a test
    can write the gradients by hand."""
    def ip(name, bottom, num_output, param):
        layer = {"name": name, "type": "InnerProduct", "bottom": bottom, "top": name,
                 "num_output": num_output, "weight_filler": {"type": "gaussian", "std": 0.5},
                 "bias_filler": {"type": "gaussian", "std": 0.5}}
        if param is not None:
            layer["param"] = param
        return layer

    return {"name": "regression", "dtype": dtype, "plugins": ["solver_data"], "layers": [
        {"name": "data", "type": "FixedData", "top": ["data", "target"], "source": source,
         "batch_size": batch_size},
        ip("ip1", "data", 3, ip1_param),
        ip("ip2", "ip1", 2, ip2_param),
        {"name": "loss", "type": "EuclideanLoss", "bottom": ["ip2", "target"], "top": "loss"},
    ]}


def classifier_net(train_source, test_source, batch_size: int) -> dict:
    """Data (npz; shuffled in TRAIN) -> ip1 (16) -> ReLU -> ip2 (3) -> SoftmaxWithLoss;
    Accuracy in TEST."""
    return {"name": "classifier", "layers": [
        {"name": "data", "type": "Data", "top": ["data", "label"], "source": train_source,
         "batch_size": batch_size, "shuffle": True, "include": {"phase": "TRAIN"}},
        {"name": "data", "type": "Data", "top": ["data", "label"], "source": test_source,
         "batch_size": batch_size, "include": {"phase": "TEST"}},
        {"name": "ip1", "type": "InnerProduct", "bottom": "data", "top": "ip1",
         "num_output": 16, "weight_filler": {"type": "xavier"}},
        {"name": "relu1", "type": "ReLU", "bottom": "ip1", "top": "ip1"},
        {"name": "ip2", "type": "InnerProduct", "bottom": "ip1", "top": "ip2",
         "num_output": 3, "weight_filler": {"type": "xavier"}},
        {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["ip2", "label"], "top": "loss"},
        {"name": "accuracy", "type": "Accuracy", "bottom": ["ip2", "label"], "top": "accuracy",
         "include": {"phase": "TEST"}},
    ]}


def blobs_classification(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three Gaussian clusters in 4-D: an easy problem every solver type can make progress on."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=2.0, size=(3, 4))
    y = rng.integers(0, 3, size=n)
    x = centers[y] + rng.normal(size=(n, 4))
    return x, y
