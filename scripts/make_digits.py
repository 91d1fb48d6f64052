"""Write solverkit/data/digits.npz, the built-in ``builtin:digits/train|test`` data set.

The 8x8 handwritten digits (1,797 images, classes 0-9, pixel values 0-16) are the test
part of the UCI "Optical Recognition of Handwritten Digits" data set (Alpaydin & Kaynak,
1998; CC BY 4.0), as shipped with scikit-learn (BSD-3-Clause) in
``sklearn.datasets.load_digits``. scikit-learn is needed only to run this script:

    pip install scikit-learn && python scripts/make_digits.py

The images are stored in scikit-learn's order permuted by
``numpy.random.default_rng(0).permutation(1797)``: the original order groups writers, so
a split of it would test on unseen writers only. solverkit uses the first 1,437 stored
images for training and the last 360 for testing. Arrays: ``x`` (1797, 1, 8, 8) uint8,
``y`` (1797,) uint8.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "solverkit" / "data" / "digits.npz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=OUT)
    args = parser.parse_args()
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.uint8)           # (1797, 8, 8), values 0..16
    assert np.array_equal(images, digits.images) and images.max() == 16
    labels = digits.target.astype(np.uint8)
    order = np.random.default_rng(0).permutation(len(images))
    np.savez_compressed(args.output, x=images[order][:, None], y=labels[order])
    print(f"wrote {args.output}: {len(images)} images, {args.output.stat().st_size} bytes")


if __name__ == "__main__":
    main()
