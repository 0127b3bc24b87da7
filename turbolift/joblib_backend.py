"""A joblib backend, so that ``n_jobs`` work (scikit-learn's too) runs on a turbolift cluster::

    import joblib
    import turbolift.joblib_backend   # registers the "turbolift" backend

    with joblib.parallel_config(backend="turbolift"):           # the default cluster
        results = joblib.Parallel(n_jobs=-1)(joblib.delayed(f)(x) for x in data)
    with joblib.parallel_config(backend="turbolift", cluster="grpc://h1:50051,h2:50051?token_file=t"):
        ...

Each batch of joblib's tasks is one call on a worker (joblib sizes the
batches from their measured duration, as for its process backend).
``n_jobs=-1`` means every worker of the cluster. Inside a worker, a nested
``Parallel`` runs sequentially, as joblib's own process backends do. The
cluster stays up between ``Parallel`` calls and stops when the program
exits. Needs joblib (``pip install 'turbolift[joblib]'``).
"""
from __future__ import annotations

from typing import Any, Optional

from joblib import register_parallel_backend
from joblib._parallel_backends import AutoBatchingMixin, ParallelBackendBase, SequentialBackend

from .executor import Executor

NAME = "turbolift"


class TurboliftBackend(AutoBatchingMixin, ParallelBackendBase):
    """joblib's tasks, in batches, as calls of a :class:`turbolift.Executor`."""

    supports_retrieve_callback = True
    supports_timeout = True
    supports_return_generator = True
    uses_threads = False

    def __init__(self, cluster: Any = None, nesting_level: Optional[int] = None,
                 **backend_kwargs: Any) -> None:
        super().__init__(nesting_level=nesting_level, **backend_kwargs)
        self.cluster = cluster
        self._executor: Optional[Executor] = None
        self._pending: set = set()

    @property
    def executor(self) -> Executor:
        if self._executor is None:
            self._executor = Executor(self.cluster)
        return self._executor

    def effective_n_jobs(self, n_jobs: Optional[int]) -> int:
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None or n_jobs < 0:
            return max(1, self.executor.workers())
        return n_jobs

    def configure(self, n_jobs: int = 1, parallel: Any = None, **backend_kwargs: Any) -> int:
        self.parallel = parallel
        return self.effective_n_jobs(n_jobs)

    def submit(self, func: Any, callback: Any = None) -> Any:
        future = self.executor.submit(func)
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def retrieve_result_callback(self, out: Any) -> Any:
        return out.result()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        for future in list(self._pending):
            future.cancel()

    def __reduce__(self) -> Any:
        # joblib ships the backend with each batch (for nested Parallel calls): on a worker those
        # run sequentially rather than start a cluster of their own.
        return SequentialBackend, ((self.nesting_level or 0) + 1,)


def register() -> None:
    """Make ``backend="turbolift"`` known to joblib (done when this module is imported)."""
    register_parallel_backend(NAME, TurboliftBackend)


register()
