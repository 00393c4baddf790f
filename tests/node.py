"""A whole sendit node in subprocesses (migrate, Celery worker, watcher) for end-to-end tests.

Each node gets its own database (a SQLite file, or a fresh PostgreSQL database), its
own broker (kombu's filesystem transport, or a Redis database number), data folder
and media root. The test reads results straight from the database with SQL.
"""

import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

from tests.services import wait_for  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
POSTGRES = "postgres://postgres@127.0.0.1:5432"


class Node:
    def __init__(self, tmp, database="sqlite", broker="filesystem", workers=1, start_worker=True, **settings):
        self.tmp = Path(tmp)
        self.data = self.tmp / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.database = database
        self.pg_name = None
        if database == "sqlite":
            self.database_url = f"sqlite:///{self.tmp}/sendit.sqlite3"
        else:
            self.pg_name = "sendit_e2e_" + uuid.uuid4().hex[:8]
            self.database_url = f"{POSTGRES}/{self.pg_name}"
        if broker == "filesystem":
            broker_url = "filesystem://"
        else:
            broker_url = "redis://127.0.0.1:6379/" + str(7 + (uuid.uuid4().int % 8))
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "sendit.settings",
            "LOCKDOWN_ENABLED": "false",
            "SECRET_KEY": "e2e-secret-key-0123456789abcdefghijklmnopqrstuvwxyz",
            "DEID_SECRET": "e2e-site-secret-0123456789abcdefghij",
            "DATABASE_URL": self.database_url,
            "CELERY_BROKER_URL": broker_url,
            "DATA_FOLDER": str(self.data),
            "MEDIA_ROOT": str(self.tmp / "media"),
            "VAR_DIR": str(self.tmp / "var"),
            "WATCHER_PID_FILE": str(self.tmp / "watcher.pid"),
            "WATCHER_LOG_DIR": str(self.tmp),
            **{k: str(v) for k, v in settings.items()},
        }
        self.workers = workers
        self.with_worker = start_worker
        self.procs = []
        self.worker = None

    def manage(self, *args):
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )

    def start(self):
        if self.pg_name:
            import psycopg

            with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self.pg_name}"')
        self.manage("migrate", "--noinput")
        if self.with_worker:
            self.start_worker()
        self.start_watcher()
        return self

    def start_worker(self, loglevel="INFO", other_host=False):
        """A Celery worker (prefork, `workers` processes) in its own process group.

        other_host: in a pid namespace of its own (unshare, root only), so that its leases
        look like those of another machine sharing the database, broker and folders: other
        workers cannot see its processes and must wait for its leases to lapse.
        """
        log = open(self.tmp / "worker.log", "ab")
        wrap = ["unshare", "--pid", "--mount-proc", "--kill-child"] if other_host else []
        self.worker = subprocess.Popen(
            [
                *wrap,
                sys.executable,
                "-m",
                "celery",
                "-A",
                "sendit",
                "worker",
                "--loglevel",
                loglevel,
                "--concurrency",
                str(self.workers),
                "--without-mingle",
                "--without-gossip",
                "-n",
                f"e2e-{uuid.uuid4().hex[:6]}@%h",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        self.procs.append(self.worker)
        return self.worker

    @staticmethod
    def celery_pid(worker):
        """The pid of a worker's celery main process (under unshare: unshare's child)."""
        pid = worker.pid
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "unshare":
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
                return int(children[0]) if children else None
        except OSError:
            return None
        return pid

    def worker_machine(self, worker):
        """The lease fingerprint (sendit.apps.main.lease.machine_id) of a worker's processes."""
        from sendit.apps.main.lease import machine_id

        pid = self.celery_pid(worker)
        return machine_id(pid) if pid else None

    def kill_worker(self, worker=None):
        """SIGKILL a worker (the last started by default) and its pool processes (its own
        process group): no clean-up."""
        worker = worker or self.worker
        if worker and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=30)
        if worker is self.worker:
            self.worker = None

    def start_watcher(self):
        self.manage("watcher_start")

    def watcher_pid(self):
        try:
            return int((self.tmp / "watcher.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def kill_watcher(self):
        """SIGKILL the watcher daemon (its pid file is left behind, as after a crash)."""
        pid = self.watcher_pid()
        if pid:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)

    def worker_memory(self):
        """Peak resident memory (VmHWM, MB) of the worker's processes, largest first."""
        if not self.worker:
            return []
        found = []
        pids = [self.worker.pid]
        try:
            children = Path(f"/proc/{self.worker.pid}/task/{self.worker.pid}/children").read_text().split()
            pids += [int(c) for c in children]
        except OSError:
            pass
        for pid in pids:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        found.append(int(line.split()[1]) / 1024)
            except OSError:
                pass
        return sorted(found, reverse=True)

    def stop(self):
        subprocess.run(
            [sys.executable, "manage.py", "watcher_stop"], cwd=ROOT, env=self.env, capture_output=True, timeout=60
        )
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(self.celery_pid(proc) or proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        if self.pg_name:
            import psycopg

            with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)')

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def query(self, sql, *params):
        if self.database == "sqlite":
            with sqlite3.connect(self.tmp / "sendit.sqlite3", timeout=30) as conn:
                return conn.execute(sql.replace("%s", "?"), params).fetchall()
        import psycopg

        with psycopg.connect(self.database_url) as conn:
            return conn.execute(sql, params).fetchall()

    def batches(self):
        return {
            uid: (status, bool(err)) for uid, status, err in self.query("SELECT uid, status, has_error FROM main_batch")
        }

    def wait(self, condition, timeout=120, interval=0.5):
        return wait_for(condition, timeout, interval)

    def log_files(self):
        """Every log a node writes: worker.log, watcher.out/err (+ rotations), LOG_DIR."""
        files = (
            list(self.tmp.glob("*.log"))
            + list(self.tmp.glob("watcher.out*"))
            + list(self.tmp.glob("watcher.err*"))
            + list((self.tmp / "var" / "logs").rglob("*"))
        )
        return [p for p in files if p.is_file()]

    def logs(self):
        return "\n".join(p.read_text(errors="replace") for p in self.log_files())

    def diagnostics(self, lines=100):
        """What a failed end-to-end test needs to be read afterwards: which processes are
        alive (the worker's exit code), the tail of every log, and what waits in the
        embedded broker's folder. Safe to call at any point; never raises."""
        out = []
        for proc in self.procs:
            code = proc.poll()
            out.append(f"worker pid {proc.pid}: " + ("running" if code is None else f"exited with {code}"))
        pid = self.watcher_pid()
        if pid:
            alive = Path(f"/proc/{pid}").exists()
            out.append(f"watcher pid {pid}: {'running' if alive else 'gone'}")
        broker = self.tmp / "var" / "broker"
        if broker.is_dir():
            out.append(f"--- broker folder {broker}")
            for entry in sorted(broker.rglob("*")):
                try:
                    size = entry.stat().st_size if entry.is_file() else "dir"
                except OSError:
                    size = "gone"
                out.append(f"  {entry.relative_to(broker)} {size}")
        for path in sorted(self.log_files()):
            try:
                text = path.read_text(errors="replace").splitlines()
            except OSError:
                continue
            out.append(f"--- {path.relative_to(self.tmp)} (last {min(lines, len(text))} of {len(text)} lines)")
            out.extend(text[-lines:])
        return "\n".join(out)
