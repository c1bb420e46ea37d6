"""The Ray engine: each task a Ray task, results streamed back to the driver.

* **Cluster**: the Ray runtime this process is already connected to, else
  ``ray.init(address)`` (``None`` starts a local one), shut down afterwards if started here.
* **Per-node concurrency**: when nodes declare the custom resource :data:`SLOT_RESOURCE`
  (``ray start --resources='{"rlm_eval_slots": 16}'``), each task takes one slot, so a
  node runs as many tasks at once as it has slots. Otherwise each task asks for
  ``CPUs of the smallest node / concurrency`` CPUs: at most ``concurrency`` tasks per node
  (exactly that many on nodes of that size).
* **Shared rate limits**: one :class:`~rlm_core.eval.ratelimit.TokenBucket` actor per
  provider, named ``rlm-eval-limit:<provider>`` in namespace ``rlm-eval``; every worker's
  LM calls reserve their slots from it.
* **Retries**: a task whose failure is retryable runs again inside its Ray task (the same
  rule as the local engine); a worker or node that dies is handled by Ray's own
  ``max_retries``.
* **Streaming**: the driver keeps a bounded window of tasks in flight and hands each
  result to the sink as ``ray.wait`` reports it, so the store is written as tasks finish.

Ray is an optional dependency: ``pip install 'rlm-core[ray]'``.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from rlm_core.eval.config import RunConfig
from rlm_core.eval.engines import Job, Plan, Sink, run_with_retries
from rlm_core.eval.execute import failed_result
from rlm_core.eval.ratelimit import TokenBucket, install
from rlm_core.eval.results import TaskResult
from rlm_core.eval.tasks import Task
from rlm_core.exceptions import ConfigurationError

SLOT_RESOURCE = "rlm_eval_slots"
NAMESPACE = "rlm-eval"
LIMITER_PREFIX = "rlm-eval-limit:"


def import_ray() -> Any:
    """The ``ray`` module, or :class:`ConfigurationError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigurationError("the ray engine needs Ray: pip install 'rlm-core[ray]'") from None
    return ray


class RayLimiter:
    """A worker's view of a provider's token-bucket actor."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    def acquire(self) -> None:
        """Reserve a slot from the actor and sleep until it comes."""
        import ray

        delay = float(ray.get(self.handle.reserve.remote()))
        if delay > 0:
            time.sleep(delay)


def run_on_worker(
    task: Task, config: RunConfig, log_dir: str | None, retries: int, limiters: dict[str, Any]
) -> TaskResult:
    """The body of each Ray task."""
    install({key: RayLimiter(handle) for key, handle in limiters.items()})
    return run_with_retries(task, config, log_dir, retries)


def failed(job: Job, exc: BaseException) -> TaskResult:
    """The result of a Ray task that Ray could not run (e.g. its worker kept dying)."""
    task, config = job
    return failed_result(task, config, exc, retryable=True)


class RayEngine:
    """Runs tasks on a Ray cluster (see the module docstring)."""

    name = "ray"

    def __init__(self, address: str | None = None, init_kwargs: dict[str, Any] | None = None):
        self.address = address
        self.init_kwargs = dict(init_kwargs or {})
        self.stats: dict[str, dict[str, float]] = {}

    def _task_options(self, ray: Any, concurrency: int) -> dict[str, Any]:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        if any(SLOT_RESOURCE in n.get("Resources", {}) for n in nodes):
            return {"num_cpus": 0, "resources": {SLOT_RESOURCE: 1}}
        cpus = min((n.get("Resources", {}).get("CPU", 1.0) for n in nodes), default=1.0)
        share = max(cpus, 1.0) / concurrency
        return {"num_cpus": max(0.0001, int(share * 10_000) / 10_000)}  # Ray's precision

    def _window(self, ray: Any, concurrency: int) -> int:
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        return max(8, 2 * concurrency * max(1, nodes))

    def run(self, plan: Plan, sink: Sink) -> None:
        """Run ``plan``'s jobs on the cluster; call ``sink`` with each result as it arrives."""
        ray = import_ray()
        started = False
        if not ray.is_initialized():
            options = {"include_dashboard": False, "log_to_driver": False, **self.init_kwargs}
            ray.init(address=self.address, **options)
            started = True
        try:
            self._run(ray, plan, sink)
        finally:
            if started:
                ray.shutdown()

    def _run(self, ray: Any, plan: Plan, sink: Sink) -> None:
        limiters, created = self._limiters(ray, plan)
        remote = ray.remote(run_on_worker).options(
            max_retries=plan.retries, **self._task_options(ray, plan.concurrency)
        )
        shared: tuple[str, Any] = ("", None)  # the current task, put once for its configs
        in_flight: dict[Any, Job] = {}
        jobs = iter(plan.jobs)
        window = self._window(ray, plan.concurrency)
        try:
            while True:
                while len(in_flight) < window:
                    job = next(jobs, None)
                    if job is None:
                        break
                    task, config = job
                    if shared[0] != task.id:
                        shared = (task.id, ray.put(task))
                    ref = remote.remote(shared[1], config, plan.log_dir, plan.retries, limiters)
                    in_flight[ref] = job
                if not in_flight:
                    break
                ready, rest = ray.wait(list(in_flight), num_returns=1)
                if rest:
                    ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
                for ref in ready:
                    job = in_flight.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        result = failed(job, exc)
                    sink(result)
        except BaseException:
            for ref in in_flight:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
            raise
        self.stats = {key: ray.get(handle.stats.remote()) for key, handle in limiters.items()}
        for handle in created:
            with contextlib.suppress(Exception):
                ray.kill(handle)

    def _limiters(self, ray: Any, plan: Plan) -> tuple[dict[str, Any], list[Any]]:
        """One bucket actor per provider: an existing one (another driver's run on this
        cluster) is shared; the ones created here are returned too, to be ended here."""
        bucket_actor = ray.remote(num_cpus=0)(TokenBucket)
        limiters: dict[str, Any] = {}
        created: list[Any] = []
        for key, (rate, burst) in plan.rates.items():
            name = LIMITER_PREFIX + key
            try:
                limiters[key] = ray.get_actor(name, namespace=NAMESPACE)
            except ValueError:
                limiters[key] = bucket_actor.options(
                    name=name, namespace=NAMESPACE, get_if_exists=True
                ).remote(rate, burst)
                created.append(limiters[key])
        return limiters, created

    def limiter_stats(self) -> dict[str, dict[str, float]]:
        """Reservations per provider in the last run (read from the actors)."""
        return self.stats
