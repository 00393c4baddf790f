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

ROOT = Path(__file__).resolve().parent.parent
POSTGRES = "postgres://postgres@127.0.0.1:5432"


class Node:
    def __init__(self, tmp, database="sqlite", broker="filesystem", workers=1, **settings):
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
            "SECRET_KEY": "e2e", "DEID_SECRET": "e2e-site-secret",
            "DATABASE_URL": self.database_url, "CELERY_BROKER_URL": broker_url,
            "DATA_FOLDER": str(self.data), "MEDIA_ROOT": str(self.tmp / "media"),
            "VAR_DIR": str(self.tmp / "var"),
            "WATCHER_PID_FILE": str(self.tmp / "watcher.pid"), "WATCHER_LOG_DIR": str(self.tmp),
            **{k: str(v) for k, v in settings.items()},
        }
        self.workers = workers
        self.procs = []

    def manage(self, *args):
        return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=120, check=True)

    def start(self):
        if self.pg_name:
            import psycopg

            with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self.pg_name}"')
        self.manage("migrate", "--noinput")
        log = open(self.tmp / "worker.log", "ab")
        self.procs.append(subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "sendit", "worker", "--loglevel", "INFO",
             "--concurrency", str(self.workers), "--without-mingle", "--without-gossip",
             "-n", f"e2e-{uuid.uuid4().hex[:6]}@%h"],
            cwd=ROOT, env=self.env, stdout=log, stderr=log))
        self.manage("watcher_start")
        return self

    def stop(self):
        subprocess.run([sys.executable, "manage.py", "watcher_stop"], cwd=ROOT, env=self.env,
                       capture_output=True, timeout=60)
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
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
        return {uid: (status, bool(err)) for uid, status, err in
                self.query("SELECT uid, status, has_error FROM main_batch")}

    def wait(self, condition, timeout=120, interval=0.5):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(interval)
        return condition()

    def logs(self):
        return "\n".join(p.read_text(errors="replace") for p in self.tmp.glob("*.log")) + "\n".join(
            p.read_text(errors="replace") for p in self.tmp.glob("watcher.*"))
