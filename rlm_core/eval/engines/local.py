"""The local engine: tasks on ``concurrency`` threads of this process."""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, wait

from rlm_core.eval.engines import Plan, Sink, run_with_retries
from rlm_core.eval.ratelimit import LocalLimiter, TokenBucket, install
from rlm_core.eval.results import TaskResult
from rlm_core.threads import DaemonThreadPool


class LocalEngine:
    """Runs tasks on daemon threads (Ctrl+C ends the run at once; finished results are
    already stored). Rate limits are token buckets shared by the threads."""

    name = "local"

    def __init__(self) -> None:
        self.buckets: dict[str, TokenBucket] = {}

    def run(self, plan: Plan, sink: Sink) -> None:
        """Run ``plan``'s jobs; call ``sink`` with each result as it finishes."""
        self.buckets = {key: TokenBucket(rate, burst) for key, (rate, burst) in plan.rates.items()}
        install({key: LocalLimiter(bucket) for key, bucket in self.buckets.items()})
        pool = DaemonThreadPool(max_workers=plan.concurrency, thread_name_prefix="rlm-eval")
        jobs = iter(plan.jobs)
        pending: set[Future[TaskResult]] = set()
        try:
            while True:
                while len(pending) < 2 * plan.concurrency:
                    job = next(jobs, None)
                    if job is None:
                        break
                    task, config = job
                    pending.add(
                        pool.submit(run_with_retries, task, config, plan.log_dir, plan.retries)
                    )
                if not pending:
                    return
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    sink(future.result())
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def limiter_stats(self) -> dict[str, dict[str, float]]:
        """Reservations per provider in the last run."""
        return {key: bucket.stats() for key, bucket in self.buckets.items()}
