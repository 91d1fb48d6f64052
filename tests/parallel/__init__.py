"""Tests of data-parallel training over MPI."""
