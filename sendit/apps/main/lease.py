"""Who holds a batch's lease: a token naming the holder's process and machine.

A token is "<machine>:<pid>:<random>", where the machine fingerprint covers the boot and
the pid namespace, so a worker on the same machine can tell that a holder is a dead
process (SIGKILL, OOM) and take its lease over at once instead of waiting for it to
expire. Plain functions, no Django.
"""
import hashlib
import os
import socket
import uuid
from pathlib import Path


def machine_id():
    """Processes with the same fingerprint share one pid space (same boot, same namespace)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        ns = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return None
    return hashlib.sha1(f"{socket.gethostname()}|{boot}|{ns}".encode()).hexdigest()[:12]


def owner_token():
    return f"{machine_id() or 'nomachine000'}:{os.getpid()}:{uuid.uuid4().hex[:16]}"


def holder_is_dead(owner):
    """True only when the lease's holder is provably a dead process of this machine."""
    try:
        machine, pid, _ = owner.split(":")
        pid = int(pid)
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
