"""Is the Cloud Scheduler job behind the snapshots there and enabled?"""

from __future__ import annotations


def job_enabled(job_name: str) -> bool | None:
    """True/False for the job's state; None when the job does not exist."""
    from google.api_core import exceptions
    from google.cloud import scheduler_v1

    try:
        job = scheduler_v1.CloudSchedulerClient().get_job(name=job_name)
    except exceptions.NotFound:
        return None
    return job.state == scheduler_v1.Job.State.ENABLED


def snapshot_job_state(job_name: str, is_production: bool) -> bool | None:
    """The configured job's state. Without a configured job, production reports it
    missing; the local stack's own scheduler stands in for it."""
    if job_name:
        return job_enabled(job_name)
    return None if is_production else True
