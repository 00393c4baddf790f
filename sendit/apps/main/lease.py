"""Who holds a batch's lease, and when a lease counts as abandoned. Plain functions, no Django.

A token is "<machine>:<pid>:<random>", where the machine fingerprint covers the host name,
the boot and the pid namespace, so a worker on the same machine can tell that a holder is a
dead process (SIGKILL, OOM) and take its lease over at once instead of waiting for it to
expire. A holder on another machine (or in another container) cannot be checked: its lease
is abandoned once it has expired, which a heartbeat prevents while the holder lives.

A hand-over token ("<machine>:<pid>:q<random>") holds a batch for a step that has just been
queued, by the step before it or by recovery: the queued step takes the lease over by naming
that token, so the batch is never free between two steps, and no other worker queues it again
meanwhile (exactly one re-queue, however many workers look). A hand-over is held by a message,
not a process: while the message waits in the broker, nothing is lost when a worker dies.

A reservation ("<machine>:<pid>:r<random of the hand-over>") is what a hand-over becomes when a
worker takes its message from the broker (Celery's task_received, in the worker's main
process). The message is then only in that worker, so the lease names that process: the
worker renews it while it holds the message, and it lapses like any lease when the worker
dies, which is how a message a dead worker had taken is found again.
"""

import hashlib
import os
import socket
import uuid
from datetime import datetime
from pathlib import Path

HANDOVER = "q"
RESERVED = "r"


def machine_id(pid: int | str = "self") -> str | None:
    """Processes with the same fingerprint share one pid space (same boot, same namespace)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        ns = str(os.stat(f"/proc/{pid}/ns/pid").st_ino)
    except OSError:
        return None
    return hashlib.sha1(f"{socket.gethostname()}|{boot}|{ns}".encode()).hexdigest()[:12]


def _this_process() -> str:
    """'<machine>:<pid>': how every token of this process begins."""
    return f"{machine_id() or 'nomachine000'}:{os.getpid()}"


def owner_token(handover: bool = False) -> str:
    """A new token naming this process; a hand-over token when the lease is held for a queued step."""
    tag = HANDOVER if handover else ""
    return f"{_this_process()}:{tag}{uuid.uuid4().hex[:16]}"


def is_handover(owner: str) -> bool:
    """Is this lease held for a queued step (not by a process at work)?"""
    parts = owner.split(":")
    return len(parts) == 3 and parts[2].startswith(HANDOVER)


def _handover_random(handover: str) -> str:
    return handover.rsplit(":", 1)[-1][len(HANDOVER) :]


def reservation(handover: str) -> str:
    """The token a worker holds a hand-over by once it has taken the step's message."""
    return f"{reservations_prefix()}{_handover_random(handover)}"


def reservation_suffix(handover: str) -> str:
    """How every reservation of `handover` ends, whichever worker holds it."""
    return f":{RESERVED}{_handover_random(handover)}"


def reservations_prefix() -> str:
    """How the reservations this process holds begin (its main process renews them)."""
    return f"{_this_process()}:{RESERVED}"


def holder_is_dead(owner: str) -> bool:
    """True only when the lease's holder is provably a dead process of this machine (a
    hand-over has no holder process: its message is in the broker)."""
    if is_handover(owner):
        return False
    try:
        machine, pid_text, _ = owner.split(":")
        pid = int(pid_text)
    except ValueError:
        return False
    if machine != machine_id() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    # A zombie (killed, not yet reaped by its parent) holds nothing either.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def abandoned(owner: str, until: datetime | None, now: datetime, at_start: bool) -> bool:
    """Should recovery queue this batch's next step again?

    - held by a dead process of this machine: yes, at once;
    - expired (its holder stopped renewing it: dead, or on a host that is gone; a reservation
      whose worker died with the step's message): yes, unless it is a hand-over, whose step
      is still waiting in the broker's queue (re-queueing it every lease period would only
      pile up duplicates; a starting worker or the sweeper takes it);
    - free (nobody at work, and no step handed the batch on: the import the watcher queued,
      a retry, or a step lost with a dead worker before it was reserved): only when
      a worker starts, since a restarted worker is what loses them; the sweeper covers the
      rest after SWEEP_AFTER_SECONDS.
    """
    if not owner or until is None:
        return at_start
    if until < now:
        return at_start or not is_handover(owner)
    return holder_is_dead(owner)
