"""pycaffe's API on solverkit: ``import caffe`` for Caffe-era scripts and notebooks (CPU only).

``caffe.Net``, the solvers, ``caffe.Layer`` (the base of a ``Python`` layer's class),
``caffe.io``, ``caffe.proto.caffe_pb2``, ``caffe.net_spec``, ``caffe.coord_map``,
``caffe.draw``, ``caffe.classifier`` and ``caffe.detector``, as BVLC Caffe's Python
package has them; see docs/pycaffe.md for what differs.
"""

from solverkit import __version__
from solverkit.layers.python import PythonLayer as Layer

from ._runtime import (
    NCCL,
    TEST,
    TRAIN,
    Timer,
    has_nccl,
    init_log,
    layer_type_list,
    log,
    set_device,
    set_mode_cpu,
    set_mode_gpu,
    set_multiprocess,
    set_random_seed,
    set_solver_count,
    set_solver_rank,
    solver_count,
    solver_rank,
)
from .pycaffe import (
    AdaDeltaSolver,
    AdaGradSolver,
    AdamSolver,
    Net,
    NesterovSolver,
    RMSPropSolver,
    SGDSolver,
    get_solver,
)
from . import io
from .proto import caffe_pb2 as _caffe_pb2  # noqa: F401  (caffe.proto.caffe_pb2 is importable)
from .net_spec import NetSpec, layers, params, to_proto
from .classifier import Classifier
from .detector import Detector
from . import coord_map, draw  # noqa: E402  (caffe.coord_map, caffe.draw)
