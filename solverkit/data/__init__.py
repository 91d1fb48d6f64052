"""Data sources (arrays, the built-in digits, npz, npy, MNIST IDX, CIFAR-10, CSV, HDF5; image
files and Caffe LMDBs, read a batch at a time) as registered formats, Caffe's transforms,
and the prefetching batch feeder the ``Data`` layers run on."""

from .feeder import BatchFeeder, Position
from .formats import SourceFormat, open_source, register_source_format, source_formats
from .paths import resolve_existing, resolve_paths
from .samples import Dataset, Samples, check_labels
from .sources import load_source, read_idx_file
from .transform import Transform, load_mean_file

from . import image_sources, lmdb_source  # noqa: F401  isort: skip  (registers their formats)

__all__ = ["BatchFeeder", "Dataset", "Position", "Samples", "SourceFormat", "Transform",
           "check_labels", "load_mean_file", "load_source", "open_source", "read_idx_file",
           "register_source_format", "resolve_existing", "resolve_paths", "source_formats"]
