"""Data sources (npz, npy, MNIST IDX, CIFAR-10, CSV, HDF5, built-in digits, arrays; image
files and Caffe LMDBs, read a batch at a time), Caffe's transforms, and the prefetching
batch feeder the ``Data`` layers run on."""

from .feeder import BatchFeeder, Position
from .sources import (
           FORMATS,
           Dataset,
           Samples,
           check_labels,
           load_source,
           read_idx_file,
           resolve_paths,
)
from .transform import Transform, load_mean_file

__all__ = ["FORMATS", "BatchFeeder", "Dataset", "Position", "Samples", "Transform", "check_labels",
           "load_mean_file", "load_source", "read_idx_file", "resolve_paths"]
