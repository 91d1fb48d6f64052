"""The callback example of SPEC §14, as a user writes it in a plugin module: a callback
registered from outside the package, named in a solver spec's ``callbacks:``."""

from solverkit import Callback, register_callback


@register_callback("CountTests")                    # solver spec: callbacks: [{type: CountTests}]
class CountTests(Callback):
    class Params(Callback.Params):                   # this callback's own fields
        every: int = 1

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)            # self.params: the validated Params
        self.count = 0

    def on_test_end(self, it, outputs):
        self.count += 1

    def get_state(self):                             # saved in every solver state
        return {"count": self.count}

    def set_state(self, state):                      # restored on --resume
        self.count = state["count"]


@register_callback("RecordHooks")
class RecordHooks(Callback):
    """Writes every hook call, in order, to ``path`` (one line each): what the loop calls."""

    class Params(Callback.Params):
        path: str

    def _write(self, *words):
        with open(self.params.path, "a") as f:
            f.write(" ".join(map(str, words)) + "\n")

    def on_train_start(self):
        self._write("on_train_start")

    def on_iteration_start(self, it):
        self._write("on_iteration_start", it)

    def on_gradients_ready(self, it, step):
        self._write("on_gradients_ready", it, sorted(step.outputs), step.signal)

    def before_update(self, it):
        self._write("before_update", it, self.solver.iter)

    def on_step_end(self, it, outputs):
        self._write("on_step_end", it, sorted(outputs), self.solver.iter)

    def on_test_end(self, it, outputs):
        self._write("on_test_end", it)

    def before_snapshot(self, it, reason):
        self._write("before_snapshot", it, reason)

    def on_snapshot(self, path):
        self._write("on_snapshot", path.name)

    def on_restore(self, path):
        self._write("on_restore", path.name)

    def on_net_built(self, net):
        self._write("on_net_built", net.phase)

    def on_train_end(self):
        self._write("on_train_end")
