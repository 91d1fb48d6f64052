"""Caffe's file formats: binary messages, prototxt nets and solvers, ``.caffemodel`` weights."""
