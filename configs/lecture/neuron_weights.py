"""Write neuron.model.npz, the lecture's weights for neuron_net.yaml: w = [2, -3], bias -3.

    python configs/lecture/neuron_weights.py [-o OUT.model.npz]
"""

import argparse
from pathlib import Path

import numpy as np

import solverkit as sk

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default=str(HERE / "neuron.model.npz"))
    args = parser.parse_args()
    net = sk.Net(HERE / "neuron_net.yaml", phase="TEST")
    weight, bias = net.params["neuron"]
    weight.data[...] = np.array([[2.0, -3.0]])
    bias.data[...] = np.array([-3.0])
    net.save(args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
