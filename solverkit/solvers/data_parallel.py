"""Data-parallel training over MPI as a callback of the loop (as Caffe's NCCL is a
``Solver::Callback``): the loop itself knows nothing of ranks.

The world, the broadcasts and the one Allreduce per step are in ``solverkit.parallel``;
this callback calls them at the loop's hooks. ``Solver`` adds it first, when it runs on
K > 1 ranks.
"""

from __future__ import annotations

import logging

from ..layers.base import DataLayer
from ..parallel import GradientAllreduce, World, decorrelate_generators, shard_data
from .callbacks import Callback, StepResult

logger = logging.getLogger("solverkit")


class DataParallel(Callback):
    """What K > 1 ranks do differently, hook by hook:

    - built (``DataParallel(world, net, iter_size)``, with the TRAIN net) and
      ``on_net_built(net)`` for each TEST net: every ``Data`` layer serves this rank's
      slice of a K-times larger batch drawn from the one seeded stream (``shard_data``),
      and the other layers' generators get per-rank streams (``decorrelate_generators``);
    - ``on_train_start`` and ``on_restore``: rank 0's parameters and solver state,
      broadcast in a fixed order (so weights loaded on rank 0 reach every rank); after a
      restore the random streams are derived afresh as below;
    - ``on_gradients_ready``: one Allreduce averaging the summed diffs, the loss, the
      TRAIN outputs, and agreeing on a signal: one seen by any rank is the step's signal
      on every rank, so all act after the same iteration and none waits in a collective
      the others left;
    - ``before_snapshot``: ranks other than 0 derive their random streams afresh from rank
      0's (which the snapshot holds), so a resumed run draws what this run draws next.

    Ranks other than 0 log errors only (``parallel.world``); only rank 0 shows progress and
    writes the CSV log and snapshots.
    """

    def __init__(self, world: World, net, iter_size: int = 1):
        super().__init__()
        assert world.distributed
        self.world = world
        self.net = net
        self.on_net_built(net)
        params = net.learnable_params
        self._blobs = [p.blob for p in params if p.lr_mult != 0]
        # parameters the solver never updates but layers change in forward (BatchNorm's
        # running statistics): their data is averaged so that every rank keeps one model
        self._state_blobs = [p.blob for p in params
                             if p.index in net.layer(p.layer).fixed_params]
        self._reduce: GradientAllreduce | None = None
        self._output_names: list[str] | None = None
        batches = [layer.batch_size for layer in net.layers
                   if isinstance(layer, DataLayer) and layer.batch_size is not None]
        per_rank = "/".join(str(b) for b in batches) or "as fed"
        effective = "/".join(str(b * world.size * iter_size) for b in batches) or "K x fed"
        logger.info("Data-parallel training on %d ranks: batch %s per rank, effective batch "
                    "%s (ranks x batch_size x iter_size)", world.size, per_rank, effective)

    def on_net_built(self, net):
        """Shard the net's data layers; give its random layers this rank's streams."""
        shard_data(net, self.world)
        self._decorrelate(net)

    def _decorrelate(self, net) -> None:
        """Per-rank streams for every layer but the data layers (they share one stream)."""
        decorrelate_generators([layer.rng for layer in net.layers
                                if not isinstance(layer, DataLayer)], self.world.rank)

    def _rekey(self) -> None:
        """Every rank's generators from rank 0's states, then per-rank streams again."""
        nets = self.solver.nets()
        states = self.world.broadcast([{name: generator.bit_generator.state
                                        for name, generator in net.random_generators().items()}
                                       for net in nets])
        if self.world.is_root:
            return
        for net, saved in zip(nets, states):
            for name, generator in net.random_generators().items():
                generator.bit_generator.state = saved[name]
            self._decorrelate(net)

    def _synchronize(self) -> None:
        """Overwrite every rank's parameters and solver state with rank 0's (in list order)."""
        solver = self.solver
        self.world.broadcast_arrays([p.blob.data for p in solver.net.learnable_params]
                                    + list(solver.updater.state_arrays().values()),
                                    "parameters and solver state")

    def on_train_start(self):
        self._synchronize()

    def on_restore(self, path):
        self._synchronize()
        self._rekey()

    def before_snapshot(self, it, reason):
        self._rekey()

    def on_gradients_ready(self, it, step: StepResult):
        """Average the diffs (summed over ``iter_size``), the loss and the outputs over the
        ranks; the step's signal becomes the one some rank received (if any did)."""
        names = list(step.outputs)
        if self._reduce is None:
            self._output_names = names
            self._reduce = GradientAllreduce(self.world, self._blobs, self._state_blobs,
                                             num_extra=3 + len(names))
        assert names == self._output_names, (names, self._output_names)
        signum = step.signal
        averaged = self._reduce([float(signum is not None), float(signum or 0), step.loss,
                                 *step.outputs.values()])
        if averaged[0] > 0:     # mean signal number over the ranks that got one
            step.signal = signum if signum is not None else round(averaged[1] / averaged[0])
        step.loss = float(averaged[2])
        step.outputs = dict(zip(names, map(float, averaged[3:])))
