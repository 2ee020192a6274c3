"""``requeue``: put a service's stuck jobs back in its queue.

TopChef accepts any status change on any job and cannot make one conditional, so
the care is taken here: only jobs of the service named, only WORKING ones unless
``--force`` (a finished job run again keeps its old results until a worker replaces
them), and each job is read again just before it is changed, so that a job a worker
finished while the operator read the prompt is left alone.  A worker that finishes
a job between that read and the change still has it put back: TopChef offers no way
to close that gap.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import attrs

from ._cli_admin import SERVICE_HELP, describe, find_service
from ._cli_common import FAILED, OK, UsageError, job_id, open_client, url_option
from ._client import TopChefClient
from ._models import JobStatus, ServiceSummary
from .exceptions import JobNotFoundError

__all__ = ["add_requeue_command"]


@attrs.frozen(kw_only=True)
class Verdict:
    """What becomes of one job: requeued or not, and why.

    ``status`` is the job's status when it was judged (None for a job that is not
    the service's), so that a change since then can be noticed before acting.
    """

    job_id: str
    status: JobStatus | None
    requeue: bool
    reason: str = ""


def judge(jid: str, status: JobStatus, *, force: bool) -> Verdict:
    """The verdict on a job of the service named, from its status."""
    if status is JobStatus.WORKING:
        return Verdict(job_id=jid, status=status, requeue=True)
    if status is JobStatus.REGISTERED:
        return Verdict(job_id=jid, status=status, requeue=False, reason="already queued")
    if force:
        reason = f"was {status.value}; its old results stay on the server until it runs again"
        return Verdict(job_id=jid, status=status, requeue=True, reason=reason)
    reason = f"{status.value}; add --force to run a finished job again"
    return Verdict(job_id=jid, status=status, requeue=False, reason=reason)


def stranger(client: TopChefClient, jid: str, service: ServiceSummary) -> Verdict:
    """The verdict on a job id the service does not list: never requeued."""
    try:
        client.job(jid)
    except JobNotFoundError:
        return Verdict(job_id=jid, status=None, requeue=False, reason="no such job")
    reason = f"not a job of {describe(service)}"
    return Verdict(job_id=jid, status=None, requeue=False, reason=reason)


def confirm(count: int, service: ServiceSummary) -> bool:
    answer = input(f"Put {count} job(s) of {describe(service)} back to REGISTERED? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def requeue(client: TopChefClient, verdict: Verdict) -> bool:
    """Put the job back, unless its status changed since it was judged."""
    now = client.job(verdict.job_id).status
    if now is not verdict.status:
        was = "?" if verdict.status is None else verdict.status.value
        print(f"{verdict.job_id}  skipped: was {was}, now {now.value}")
        return False
    client.update_job(verdict.job_id, status=JobStatus.REGISTERED)
    print(f"{verdict.job_id}  REGISTERED" + (f"  ({verdict.reason})" if verdict.reason else ""))
    return True


def jobs_word(count: int) -> str:
    return f"{count} job" if count == 1 else f"{count} jobs"


def cmd_requeue(args: argparse.Namespace) -> int:
    if args.force and args.all_working:
        raise UsageError("--force goes with --job: --all-working requeues WORKING jobs only")
    if not args.yes and not sys.stdin.isatty():
        raise UsageError("refusing to requeue without confirmation: add --yes")
    with open_client(args) as client:
        service = find_service(client, args.service)
        statuses = {job.id: job.status for job in client.jobs(service.id)}
        if args.all_working:
            verdicts = [
                judge(jid, status, force=False)
                for jid, status in statuses.items()
                if status is JobStatus.WORKING
            ]
            if not verdicts:
                print(f"no WORKING jobs of {describe(service)} to requeue")
                return OK
        else:
            verdicts = [
                judge(jid, statuses[jid], force=args.force)
                if jid in statuses
                else stranger(client, jid, service)
                for jid in dict.fromkeys(args.job)
            ]
        for verdict in verdicts:
            if not verdict.requeue:
                print(f"{verdict.job_id}  skipped: {verdict.reason}")
        chosen = [verdict for verdict in verdicts if verdict.requeue]
        if chosen and not args.yes and not confirm(len(chosen), service):
            print("nothing changed")
            return OK
        done = sum(requeue(client, verdict) for verdict in chosen)
    skipped = len(verdicts) - done
    print(
        f"requeued {done} of {jobs_word(len(verdicts))} of {describe(service)}; {skipped} skipped"
    )
    return OK if args.all_working or skipped == 0 else FAILED


def add_requeue_command(commands: argparse._SubParsersAction[Any]) -> None:
    requeue_parser = commands.add_parser(
        "requeue",
        help="put stuck WORKING jobs back in the queue",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Put jobs of SERVICE back to REGISTERED, so that a worker runs them "
        "again.\nOnly WORKING jobs are requeued; with --force, COMPLETED and ERROR jobs "
        "too\n(their old results stay on the server until the job runs again).  A job "
        "of\nanother service is never touched.  Each job left alone gets a line saying "
        "why.\nExit code 1 when a job named with --job was left alone or not found.",
        epilog="examples:\n"
        "  topchef-worker requeue Adder --all-working\n"
        "  topchef-worker requeue SERVICE_ID --job JOB_ID JOB_ID --yes\n"
        "  topchef-worker requeue SERVICE_ID --job JOB_ID --force --yes",
    )
    requeue_parser.add_argument("service", metavar="SERVICE", help=SERVICE_HELP)
    which = requeue_parser.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--job",
        action="extend",
        nargs="+",
        type=job_id,
        metavar="JOB_ID",
        help="these jobs (repeatable)",
    )
    which.add_argument("--all-working", action="store_true", help="every WORKING job")
    requeue_parser.add_argument(
        "--force", action="store_true", help="with --job: requeue COMPLETED and ERROR jobs too"
    )
    requeue_parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    url_option(requeue_parser)
    requeue_parser.set_defaults(handler=cmd_requeue)
