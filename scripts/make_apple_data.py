"""Write configs/apple/apples.csv, the data of the apple example (a linear score function).

Each row is one apple: two features x = (x1, x2) and its score y = x . theta + noise with
theta = (-3, 2) and Gaussian noise of standard deviation 0.1; 100 rows, no header. The
example fits f(x) = x . theta with the absolute-error (L1) loss and should recover theta.

    python scripts/make_apple_data.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "configs" / "apple" / "apples.csv"
THETA = np.array([-3.0, 2.0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=OUT)
    parser.add_argument("--rows", type=int, default=100)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.uniform(-2.0, 2.0, size=(args.rows, 2))
    y = x @ THETA + rng.normal(0.0, 0.1, size=args.rows)
    np.savetxt(args.output, np.column_stack([x, y]), fmt="%.4f", delimiter=",")
    print(f"wrote {args.output}: {args.rows} apples, theta = {THETA.tolist()}")


if __name__ == "__main__":
    main()
