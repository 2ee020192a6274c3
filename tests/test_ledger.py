"""The journal and the outbox on real files: locking, damage, permissions, full disks."""

from __future__ import annotations

import errno
import json
import logging
import os
import pickle
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from topchef_worker import JobStatus
from topchef_worker._ledger import (
    Journal,
    LedgerError,
    LedgerLockedError,
    Outbox,
    Outcome,
)
from topchef_worker.exceptions import ConfigurationError, TopChefError

Ledger = Journal | Outbox

SERVICE = "5a1b2f7e-0c4d-4e8a-9b6f-3d2c1e0f9a87"
A = "00000000-0000-4000-8000-00000000000a"
B = "00000000-0000-4000-8000-00000000000b"
C = "00000000-0000-4000-8000-00000000000c"
D = "00000000-0000-4000-8000-00000000000d"

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="needs fcntl and signals")


def outcome(job_id: str, total: int = 3) -> Outcome:
    return Outcome(
        job_id=job_id, service_id=SERVICE, status=JobStatus.COMPLETED, results={"sum": total}
    )


def claim_line(job_id: str) -> bytes:
    return (json.dumps({"claimed": job_id, "service_id": SERVICE}) + "\n").encode()


def done_line(job_id: str) -> bytes:
    return (json.dumps({"done": job_id}) + "\n").encode()


def make(kind: str, path: Path) -> Ledger:
    return Journal(path) if kind == "journal" else Outbox(path)


def run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run *code* in a fresh interpreter; it must succeed."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60
    )
    assert 0 == done.returncode, done.stderr
    return done


@pytest.fixture(params=["journal", "outbox"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    ledger = Journal(tmp_path / "journal.jsonl")
    yield ledger
    ledger.close()


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    ledger = Outbox(tmp_path / "outbox.jsonl")
    yield ledger
    ledger.close()


# -- round trips ------------------------------------------------------------------------


def test_journal_round_trip(journal: Journal) -> None:
    """Claims not settled before close() are what the next open() returns."""
    journal.open()
    journal.claimed(A, SERVICE)
    journal.claimed(B, "other")
    journal.done(A)
    journal.close()

    assert {B: "other"} == journal.open()


def test_outbox_round_trip(outbox: Outbox) -> None:
    """The latest outcome of each job not discarded is what the next open() returns."""
    outbox.open()
    outbox.put(outcome(A, 1))
    outbox.put(outcome(B))
    outbox.put(outcome(A, 2))
    outbox.discard(B)
    outbox.close()

    assert [outcome(A, 2)] == outbox.open()
    assert [outcome(A, 2)] == outbox.pending()


def test_a_compacted_outbox_is_one_outcome_per_line(outbox: Outbox) -> None:
    """After close() the outbox holds the outcomes only, each as Outcome.to_json()."""
    outbox.open()
    outbox.put(outcome(A))
    outbox.put(outcome(B))
    outbox.discard(A)
    outbox.close()

    assert outcome(B).to_json() == outbox.path.read_text()


def test_changes_survive_a_crash(tmp_path: Path, kind: str) -> None:
    """What was written before a process died without close() is read back."""
    path = tmp_path / f"{kind}.jsonl"
    code = """
import os, sys
from topchef_worker import JobStatus
from topchef_worker._ledger import Journal, Outbox, Outcome
kind, path, a, b, service = sys.argv[1:]
if kind == "journal":
    ledger = Journal(path); ledger.open()
    ledger.claimed(a, service); ledger.claimed(b, service); ledger.done(a)
else:
    ledger = Outbox(path); ledger.open()
    for job_id in (a, b):
        ledger.put(Outcome(job_id=job_id, service_id=service,
                           status=JobStatus.COMPLETED, results={"sum": 3}))
    ledger.discard(a)
os._exit(0)
"""
    run_python(code, kind, str(path), A, B, SERVICE)

    expected = {B: SERVICE} if kind == "journal" else [outcome(B)]
    ledger = make(kind, path)
    assert expected == ledger.open()
    ledger.close()


def test_a_torn_last_line_is_ignored_with_a_warning(
    tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A last line cut short by a crash is skipped with a WARNING, and the next change
    starts on a line of its own."""
    path = tmp_path / f"{kind}.jsonl"
    if kind == "journal":
        path.write_bytes(claim_line(A) + claim_line(B)[:20])
    else:
        path.write_bytes(outcome(A).to_json().encode() + outcome(B).to_json().encode()[:20])
    ledger = make(kind, path)

    with caplog.at_level(logging.WARNING, logger="topchef_worker"):
        first = ledger.open()
    if isinstance(ledger, Journal):
        ledger.claimed(C, SERVICE)
    else:
        ledger.put(outcome(C))
    ledger.close()

    if kind == "journal":
        assert ({A: SERVICE}, {A: SERVICE, C: SERVICE}) == (first, ledger.open())
    else:
        assert ([outcome(A)], [outcome(A), outcome(C)]) == (first, ledger.open())
    ledger.close()
    assert [(logging.WARNING, f"{kind} {path} line 2 is incomplete")] == [
        (record.levelno, record.getMessage().partition(",")[0]) for record in caplog.records
    ]


def test_discard_of_an_unknown_job_writes_nothing(outbox: Outbox) -> None:
    """Discarding an outcome the outbox does not hold changes neither it nor the file."""
    outbox.open()
    outbox.put(outcome(A))
    before = outbox.path.read_bytes()

    outbox.discard(B)

    assert ([outcome(A)], before) == (outbox.pending(), outbox.path.read_bytes())


def test_done_of_an_unclaimed_job_writes_nothing(journal: Journal) -> None:
    """Settling a job the journal does not hold as claimed writes nothing."""
    journal.open()
    journal.claimed(A, SERVICE)
    before = journal.path.read_bytes()

    journal.done(B)

    assert before == journal.path.read_bytes()


def test_put_keeps_a_copy(outbox: Outbox) -> None:
    """Changing the results dict after put() changes neither pending() nor the file."""
    outbox.open()
    results = {"sum": 3}
    outbox.put(Outcome(job_id=A, service_id=SERVICE, status=JobStatus.COMPLETED, results=results))

    results["sum"] = 4
    outbox.close()

    assert ([outcome(A, 3)], [outcome(A, 3)]) == (outbox.pending(), outbox.open())


def test_outcomes_are_keyed_by_canonical_job_id(outbox: Outbox) -> None:
    """An id in another spelling names the same job, as it does for the server."""
    outbox.open()
    outbox.put(outcome(A.upper()))
    outbox.put(outcome(B))

    outbox.discard(A.replace("-", ""))
    outbox.put(outcome(C.upper()))

    assert [outcome(B), outcome(C)] == outbox.pending()


@pytest.mark.parametrize(
    ("job_id", "results"),
    [("not-a-uuid", {"sum": 3}), (A, {"sum": float("nan")}), (A, {"sum": object()})],
)
def test_an_outcome_that_cannot_be_read_back_is_refused(
    outbox: Outbox, job_id: str, results: dict[str, Any]
) -> None:
    """put() refuses an outcome the next start could not read, and keeps nothing."""
    outbox.open()
    bad = Outcome(job_id=job_id, service_id=SERVICE, status=JobStatus.ERROR, results=results)

    with pytest.raises(LedgerError, match=f"^outbox {outbox.path}: the outcome of job"):
        outbox.put(bad)
    assert [] == outbox.pending()


def test_compaction_keeps_the_file_to_what_is_open(tmp_path: Path) -> None:
    """Past COMPACT_AFTER_BYTES the journal is rewritten to its open claims."""
    journal = Journal(tmp_path / "journal.jsonl")
    journal.COMPACT_AFTER_BYTES = 200
    journal.open()
    for number in range(100):
        job_id = f"job-{number}"
        journal.claimed(job_id, SERVICE)
        if number != 42:
            journal.done(job_id)

    assert journal.path.stat().st_size < 400
    journal.close()
    assert claim_line("job-42") == journal.path.read_bytes()


def test_several_threads_share_a_journal_and_an_outbox(tmp_path: Path) -> None:
    """Concurrent changes from many threads, with compactions among them, all land."""
    journal, outbox = Journal(tmp_path / "journal"), Outbox(tmp_path / "outbox")
    journal.COMPACT_AFTER_BYTES = outbox.COMPACT_AFTER_BYTES = 500
    journal.open()
    outbox.open()
    ids = [f"00000000-0000-4000-8000-{number:012x}" for number in range(400)]

    def job(job_id: str) -> None:
        journal.claimed(job_id, SERVICE)
        outbox.put(outcome(job_id))
        if int(job_id[-3:], 16) % 4:
            journal.done(job_id)
            outbox.discard(job_id)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(job, ids))
    journal.close()
    outbox.close()

    kept = [job_id for job_id in ids if int(job_id[-3:], 16) % 4 == 0]
    assert dict.fromkeys(kept, SERVICE) == journal.open()
    assert sorted(kept) == sorted(result.job_id for result in outbox.open())
    journal.close()
    outbox.close()


# -- open, close and the calls around them ------------------------------------------------


def test_close_is_idempotent(journal: Journal, outbox: Outbox) -> None:
    """close() twice, or before open(), is harmless; an empty outbox leaves no file."""
    outbox.close()
    journal.open()
    outbox.open()
    journal.claimed(A, SERVICE)
    outbox.put(outcome(A))
    outbox.discard(A)

    journal.close()
    journal.close()
    outbox.close()
    outbox.close()

    assert ["journal.jsonl"] == sorted(path.name for path in journal.path.parent.iterdir())


def test_after_close_settling_is_a_no_op_and_recording_is_an_error(
    journal: Journal, outbox: Outbox
) -> None:
    """done() and discard() after close() do nothing; claimed() and put() raise."""
    journal.open()
    outbox.open()
    journal.claimed(A, SERVICE)
    outbox.put(outcome(A))
    journal.close()
    outbox.close()
    files = {path: path.read_bytes() for path in (journal.path, outbox.path)}

    journal.done(A)
    outbox.discard(A)
    with pytest.raises(LedgerError, match=f"^journal {journal.path} is not open$"):
        journal.claimed(B, SERVICE)
    with pytest.raises(LedgerError, match=f"^outbox {outbox.path} is not open$"):
        outbox.put(outcome(B))

    assert files == {path: path.read_bytes() for path in files}


def test_open_twice_is_an_error(journal: Journal) -> None:
    """A second open() of the same object refuses and leaves the first one working."""
    journal.open()
    journal.claimed(A, SERVICE)

    with pytest.raises(LedgerError, match="is already open"):
        journal.open()
    journal.claimed(B, SERVICE)
    journal.close()

    assert {A: SERVICE, B: SERVICE} == journal.open()


def test_a_missing_directory_fails_open_with_a_clear_message(tmp_path: Path, kind: str) -> None:
    """open() in a directory that does not exist names it, for a fast failure at start."""
    path = tmp_path / "nowhere" / f"{kind}.jsonl"

    with pytest.raises(LedgerError) as raised:
        make(kind, path).open()

    assert (
        f"cannot open {kind} {path}: the directory {path.parent} does not exist",
        path,
        FileNotFoundError,
    ) == (str(raised.value), raised.value.path, type(raised.value.__cause__))


def test_an_unreadable_file_fails_open_with_a_clear_message(tmp_path: Path, kind: str) -> None:
    """A ledger path that cannot be read (here a directory) is a LedgerError naming it."""
    path = tmp_path / kind
    path.mkdir()

    with pytest.raises(LedgerError) as raised:
        make(kind, path).open()

    assert (f"cannot read {kind} {path}: Is a directory (EISDIR)", IsADirectoryError) == (
        str(raised.value),
        type(raised.value.__cause__),
    )


def test_a_lock_file_that_cannot_be_made_fails_open_with_a_clear_message(
    tmp_path: Path, kind: str
) -> None:
    """When the sidecar lock file cannot be created, open() says which file and why."""
    path = tmp_path / kind
    (tmp_path / f"{kind}.lock").mkdir()

    with pytest.raises(LedgerError) as raised:
        make(kind, path).open()

    assert (
        f"cannot open {kind} {path}: cannot create the lock file {path}.lock: "
        "Is a directory (EISDIR)"
    ) == str(raised.value)


def test_ledger_errors_sit_in_the_exception_tree_and_pickle() -> None:
    """A locked ledger is a configuration error; both errors keep their path in a pickle."""
    error = LedgerLockedError("journal j is in use", path="j")

    copy = pickle.loads(pickle.dumps(error))

    assert (True, True, True) == (
        isinstance(copy, LedgerError),
        isinstance(copy, ConfigurationError),
        isinstance(copy, TopChefError),
    )
    assert ("journal j is in use", Path("j")) == (str(copy), copy.path)


# -- locking ---------------------------------------------------------------------------

HOLD = """
import sys
from topchef_worker._ledger import Journal, Outbox
ledger = (Journal if sys.argv[1] == "journal" else Outbox)(sys.argv[2])
ledger.open()
print("open", flush=True)
sys.stdin.read()
"""

TRY_TO_OPEN = """
import sys
from topchef_worker._ledger import Journal, LedgerLockedError, Outbox
ledger = (Journal if sys.argv[1] == "journal" else Outbox)(sys.argv[2])
try:
    ledger.open()
except LedgerLockedError as error:
    print(error)
else:
    print("opened")
"""


@posix_only
def test_one_process_at_a_time_and_the_lock_dies_with_it(tmp_path: Path, kind: str) -> None:
    """A second process cannot open a ledger in use, and says why; once the first is
    killed with SIGKILL the ledger opens again."""
    path = tmp_path / f"{kind}.jsonl"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, kind, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert "open\n" == holder.stdout.readline()

        refused = run_python(TRY_TO_OPEN, kind, str(path)).stdout
        holder.kill()
        holder.wait(timeout=60)
        after = run_python(TRY_TO_OPEN, kind, str(path)).stdout
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.communicate()

    assert (
        (
            f"{kind} {path} is in use by another process (pid {holder.pid}): two workers "
            f"cannot share one {kind}; stop the other one or give each its own file\n"
        ),
        -signal.SIGKILL,
        "opened\n",
    ) == (refused, holder.returncode, after)


def test_two_objects_in_one_process_exclude_each_other(tmp_path: Path, kind: str) -> None:
    """The lock is per open file, so a second ledger on the same path in the same
    process is refused too."""
    first, second = make(kind, tmp_path / "ledger"), make(kind, tmp_path / "ledger")
    first.open()
    try:
        with pytest.raises(LedgerLockedError, match="is in use by another process"):
            second.open()
    finally:
        first.close()

    second.open()
    second.close()


def test_close_removes_the_lock_file(tmp_path: Path, kind: str) -> None:
    """The sidecar lock file exists while the ledger is open, and not after."""
    ledger = make(kind, tmp_path / "ledger")
    lock = tmp_path / "ledger.lock"

    ledger.open()
    while_open = lock.exists()
    ledger.close()

    assert (True, False) == (while_open, lock.exists())


# -- damage ----------------------------------------------------------------------------


def test_unreadable_lines_in_a_journal_are_skipped_and_logged(
    journal: Journal, caplog: pytest.LogCaptureFixture
) -> None:
    """Invalid UTF-8 and garbage lines are logged at ERROR with file and line number,
    and every other line is read."""
    journal.path.write_bytes(
        claim_line(A)
        + b'{"claimed": "\xff\xfe", "service_id": "x"}\n'
        + b"garbage\n"
        + b'["claimed", "not an object"]\n'
        + b'{"requeued": "a record of no known kind"}\n'
        + claim_line(B)
        + done_line(A)
    )

    with caplog.at_level(logging.WARNING, logger="topchef_worker"):
        claims = journal.open()

    assert {B: SERVICE} == claims
    assert [(logging.ERROR, f"journal {journal.path} line {n}") for n in (2, 3, 4, 5)] == [
        (record.levelno, record.getMessage().partition(" is unreadable")[0])
        for record in caplog.records
    ]


def test_unreadable_lines_in_an_outbox_are_skipped_and_logged(
    outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    """Invalid UTF-8, garbage and records that are no outcome are logged at ERROR with
    file and line number, and every other line is read."""
    outbox.path.write_bytes(
        outcome(A).to_json().encode()
        + b"\xc3\x28 not utf-8\n"
        + b"{garbage\n"
        + b'{"job_id": "not-a-uuid", "status": "COMPLETED"}\n'
        + b'{"discard": 7}\n'
        + b"[1, 2]\n"
        + f'{{"job_id": "{C}", "status": "COMPLETED", "results": [3]}}\n'.encode()
        + f'{{"job_id": "{D}", "status": "DONE"}}\n'.encode()
        + outcome(B).to_json().encode()
    )

    with caplog.at_level(logging.WARNING, logger="topchef_worker"):
        outcomes = outbox.open()

    assert [outcome(A), outcome(B)] == outcomes
    assert [(logging.ERROR, f"outbox {outbox.path} line {n}") for n in range(2, 9)] == [
        (record.levelno, record.getMessage().partition(" is unreadable")[0])
        for record in caplog.records
    ]


def test_open_rewrites_a_damaged_file_clean(journal: Journal) -> None:
    """After open() the file holds the open claims only, so the damage is logged once."""
    journal.path.write_bytes(claim_line(A) + b"\xff\n" + claim_line(B) + done_line(B))

    journal.open()

    assert claim_line(A) == journal.path.read_bytes()


# -- permissions -----------------------------------------------------------------------


@posix_only
def test_files_are_created_private(tmp_path: Path) -> None:
    """The ledgers, their lock files and the rewrites that replace them are mode 0600,
    whatever the umask allows."""
    journal, outbox = Journal(tmp_path / "journal"), Outbox(tmp_path / "outbox")
    journal.COMPACT_AFTER_BYTES = outbox.COMPACT_AFTER_BYTES = 1  # rewrite at every change
    previous = os.umask(0)
    try:
        journal.open()
        outbox.open()
        journal.claimed(A, SERVICE)
        outbox.put(outcome(A))
        modes = {
            path.name: stat.S_IMODE(path.stat().st_mode) for path in sorted(tmp_path.iterdir())
        }
        journal.close()
        outbox.close()
    finally:
        os.umask(previous)

    assert dict.fromkeys(("journal", "journal.lock", "outbox", "outbox.lock"), 0o600) == modes


# -- full disks ------------------------------------------------------------------------

WRITE_ON_A_FULL_DISK = """
import json, logging, os, resource, signal, sys
from topchef_worker import JobStatus
from topchef_worker._ledger import Journal, LedgerError, Outbox, Outcome

journal_path, outbox_path, a, b, c, service = sys.argv[1:]
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")

def outcome(job_id):
    return Outcome(job_id=job_id, service_id=service, status=JobStatus.COMPLETED,
                   results={"sum": 3})

# Past RLIMIT_FSIZE a write fails with EFBIG, as on a full disk, once SIGXFSZ is ignored.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
_, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
journal, outbox = Journal(journal_path), Outbox(outbox_path)
journal.open()
outbox.open()
journal.claimed(a, service)
outbox.put(outcome(a))
report = []
for ledger, write in ((journal, lambda: journal.claimed(b, service)),
                      (outbox, lambda: outbox.put(outcome(b)))):
    before = ledger.path.read_bytes()
    # Room for a few bytes: the write starts, then fails part way.
    resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) + 5, hard))
    try:
        write()
    except LedgerError as error:
        report.append([str(error), type(error.__cause__).__name__, error.__cause__.errno,
                       ledger.path.read_bytes() == before])
    # Still full: the rewrite that would catch up fails, and so does the append.
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, hard))
    try:
        write()
    except LedgerError as error:
        report.append([str(error), ledger.path.read_bytes() == before])
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # space is freed
journal.claimed(c, service)
outbox.put(outcome(c))
print(json.dumps(report), flush=True)
os._exit(0)  # a crash: nothing is closed
"""


@posix_only
def test_a_write_on_a_full_disk_raises_and_the_next_one_catches_up(tmp_path: Path) -> None:
    """claimed() and put() on a full disk raise LedgerError naming the file and the OS
    error, leave no partial line, and the failed change reaches the file with the next
    write once there is room."""
    journal_path, outbox_path = tmp_path / "journal", tmp_path / "outbox"

    done = run_python(WRITE_ON_A_FULL_DISK, str(journal_path), str(outbox_path), A, B, C, SERVICE)

    efbig = "File too large (EFBIG)"
    assert [
        [f"cannot write journal {journal_path}: {efbig}", "OSError", errno.EFBIG, True],
        [f"cannot write journal {journal_path}: {efbig}", True],
        [f"cannot write outbox {outbox_path}: {efbig}", "OSError", errno.EFBIG, True],
        [f"cannot write outbox {outbox_path}: {efbig}", True],
    ] == json.loads(done.stdout)
    assert [
        f"ERROR {kind} {path} could not be compacted ({efbig}); appending to it as it is, "
        "although it misses changes that failed to be written"
        for kind, path in (("journal", journal_path), ("outbox", outbox_path))
    ] == done.stderr.splitlines()
    journal, outbox = Journal(journal_path), Outbox(outbox_path)
    assert {A: SERVICE, B: SERVICE, C: SERVICE} == journal.open()
    assert [outcome(A), outcome(B), outcome(C)] == outbox.open()
    journal.close()
    outbox.close()


FAILED_COMPACTION = """
import json, logging, resource, signal, sys
from topchef_worker._ledger import Journal

path, x, y, service = sys.argv[1:]
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
_, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
journal = Journal(path)
journal.COMPACT_AFTER_BYTES = 1  # try to compact at every chance
resource.setrlimit(resource.RLIMIT_FSIZE, (0, hard))  # the disk is full...
claims = journal.open()  # ... so the compaction at open fails
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # and space is freed
journal.claimed(x, service)  # appended to the old file
after_x = journal.path.read_text()
journal.claimed(y, service)  # the compaction is tried again, and works
after_y = journal.path.read_text()
journal.done(x)
resource.setrlimit(resource.RLIMIT_FSIZE, (0, hard))  # full again
journal.close()  # the compaction fails, and close() says so, but does not raise
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # for coverage's data file, if any
print(json.dumps({"claims": claims, "after_x": after_x, "after_y": after_y}), flush=True)
"""


@posix_only
def test_a_failed_compaction_keeps_appending_to_the_old_file(tmp_path: Path) -> None:
    """When the rewrite fails, the old file (torn last line and all) takes the next
    append on a line of its own, and the rewrite is tried again later; close() only
    logs a failed rewrite, and the file it leaves is still right."""
    path = tmp_path / "journal"
    old = claim_line(A) + claim_line(B) + done_line(A) + claim_line(C)[:15]
    path.write_bytes(old)

    done = run_python(FAILED_COMPACTION, str(path), D, A, SERVICE)

    assert {
        "claims": {B: SERVICE},
        "after_x": (old + b"\n" + claim_line(D)).decode(),
        "after_y": (claim_line(B) + claim_line(D) + claim_line(A)).decode(),
    } == json.loads(done.stdout)
    assert [
        f"WARNING journal {path} line 4 is incomplete",
        (
            f"WARNING journal {path} could not be compacted (File too large (EFBIG)); "
            "appending to it as it is"
        ),
        f"ERROR journal {path} could not be compacted at close (File too large (EFBIG))",
    ] == [line.partition(",")[0] for line in done.stderr.splitlines()]
    journal = Journal(path)
    assert {B: SERVICE, A: SERVICE} == journal.open()
    journal.close()
