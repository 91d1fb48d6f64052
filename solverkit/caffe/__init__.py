"""Caffe's file formats: binary messages, prototxt nets and solvers, ``.caffemodel`` weights."""

from .export import export_caffe, net_to_prototxt
from .prototxt import is_prototxt
from .weights import is_caffemodel, read_caffemodel

__all__ = ["export_caffe", "is_caffemodel", "is_prototxt", "net_to_prototxt",
           "read_caffemodel"]
