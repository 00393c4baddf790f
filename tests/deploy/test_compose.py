"""docker-compose.yml for real: the images built, the stack up, a study through it.

In a scratch copy of the checkout: scripts/setup_instance.sh --env-only writes .env, the
stand-in images come from scripts/local_images.sh (Docker Hub is not needed; cached between
runs), `compose build` builds sendit on Debian's Python, and `compose up -d` starts every
service (with the try-out Orthanc) until each is healthy. Then: a study copied into ./data as
NAME.tmpX and renamed arrives de-identified in the compose Orthanc; the status page answers
through nginx over https (the certs service's self-signed certificate) with the password; a
`restart worker` in the middle of a batch loses nothing; `down` keeps ./data, ./media and
the database volume, as docs/start.md says.

Every published port is on 127.0.0.1. The test removes the containers, network and volumes
of its project, and stops dockerd if it started it (images stay: they are the cache).

    .venv/bin/python -m pytest -m compose -s      # alone; -s shows the phases and their times

Measured on 2 cores (2026-12-07): 45 s with the images cached (dockerd started and stopped
by the test included). The first run also builds the images: 80 s for the stand-ins
(debootstrap 31 s, then Debian's packages) and 2 min for sendit (uwsgi compiled, wheels and
tesseract installed): 4 min in all from an empty engine. Later runs reuse them.
"""

import http.cookiejar
import json
import os
import re
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.services import free_port, make_ct_series

pytestmark = [pytest.mark.e2e, pytest.mark.compose]

ROOT = Path(__file__).resolve().parents[2]
DOCKER_HOST_SOCKET = Path("/var/run/docker.sock")
# The test's own short health-check intervals (the file's are 30-60 s, the first check
# comes only after one interval): everything else is docker-compose.yml as it is.
FAST_HEALTH = """\
services:
  uwsgi: {healthcheck: {interval: 3s, start_period: 120s}}
  worker: {healthcheck: {interval: 5s, start_period: 120s}}
  watcher: {healthcheck: {interval: 3s}}
  receiver: {healthcheck: {interval: 3s}}
  nginx: {healthcheck: {interval: 3s}}
  redis: {healthcheck: {interval: 2s}}
  postgres: {healthcheck: {interval: 2s}}
"""


def log(message):
    print(f"[compose {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(args, cwd=None, timeout=900, check=True, env=None, quiet=False):
    started = time.monotonic()
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, args))} exited {result.returncode}\n"
            f"--- stdout\n{result.stdout[-6000:]}\n--- stderr\n{result.stderr[-6000:]}"
        )
    if not quiet and time.monotonic() - started > 5:
        log(f"{' '.join(map(str, args[:4]))} ... took {time.monotonic() - started:.0f} s")
    return result


# -- the engine --------------------------------------------------------------------------------


def docker_answers():
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode == 0


def compose_command():
    """`docker compose` (the v2 plugin) or Debian's docker-compose (1.29)."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """A Docker engine that answers: the running one, or dockerd started here (as root) and
    stopped afterwards. Skips with the reason when there is none."""
    if not shutil.which("docker"):
        pytest.skip("no docker client (Debian: apt-get install docker.io docker-compose debootstrap)")
    if compose_command() is None:
        pytest.skip("neither `docker compose` nor docker-compose is installed (Debian: apt-get install docker-compose)")
    started = None
    if not docker_answers():
        dockerd = shutil.which("dockerd") or ("/usr/sbin/dockerd" if os.path.exists("/usr/sbin/dockerd") else None)
        if os.getuid() != 0 or not dockerd:
            pytest.skip(
                "the Docker daemon does not answer, and this test can start it only as root "
                "with dockerd installed (apt-get install docker.io)"
            )
        log_file = tmp_path_factory.mktemp("dockerd") / "dockerd.log"
        out = open(log_file, "w")
        started = subprocess.Popen([dockerd], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while not docker_answers():
            if started.poll() is not None or time.monotonic() > deadline:
                started.kill()
                pytest.skip(f"dockerd did not start: {log_file.read_text()[-2000:]}")
            time.sleep(1)
        log(f"started dockerd (pid {started.pid})")
    yield
    if started is not None:
        started.terminate()
        try:
            started.wait(60)
        except subprocess.TimeoutExpired:
            started.kill()
            started.wait()
        log(f"stopped dockerd (pid {started.pid})")


@pytest.fixture(scope="module")
def local_images(engine):
    """The stand-ins of the official images (built once, then cached by the script)."""
    started = time.monotonic()
    result = run([str(ROOT / "scripts/local_images.sh"), "--env"], timeout=1200)
    log(f"scripts/local_images.sh: {time.monotonic() - started:.0f} s\n{result.stderr.strip()}")
    return dict(line.split("=", 1) for line in result.stdout.split())


# -- the scratch instance -----------------------------------------------------------------------

SKIPPED_IN_COPY = shutil.ignore_patterns(
    ".git",
    ".venv",
    "var",
    "data",
    "media",
    "test-artifacts",
    ".env",
    "__pycache__",
    ".pytest_cache",
    "certs",
    "acme",
    "secrets.py",
)


def scratch_copy(dest):
    """The checkout's files as git knows them (committed or not), without ignored ones."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True
    )
    if listed.returncode != 0:  # not a git checkout (an unpacked release): all but local state
        shutil.copytree(ROOT, dest, ignore=SKIPPED_IN_COPY)
        return
    for name in filter(None, listed.stdout.split(b"\0")):
        src = ROOT / name.decode()
        if not src.is_file():
            continue
        target = dest / name.decode()
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)


class Instance:
    def __init__(self, folder, compose, project):
        self.folder = folder
        self.project = project
        self.compose = [
            *compose,
            "-p",
            project,
            "-f",
            "docker-compose.yml",
            "-f",
            "docker-compose.test.yml",
            "--profile",
            "orthanc",
        ]

    def __call__(self, *args, timeout=900, check=True, quiet=False):
        return run([*self.compose, *args], cwd=self.folder, timeout=timeout, check=check, quiet=quiet)

    def containers(self):
        ids = self("ps", "-a", "-q", quiet=True).stdout.split()
        if not ids:
            return {}
        info = json.loads(run(["docker", "inspect", *ids], quiet=True).stdout)
        return {c["Config"]["Labels"]["com.docker.compose.service"]: c for c in info}

    def logs(self):
        return self("logs", "--no-color", "--tail", "60", check=False, quiet=True).stdout[-20000:]

    def psql(self, sql):
        # docker exec on the container, not `compose exec`: a tenth of the time, for polling.
        postgres = self.containers()["postgres"]["Id"] if not getattr(self, "_pg", None) else self._pg
        self._pg = postgres
        out = run(
            ["docker", "exec", postgres, "psql", "-U", "sendit", "-d", "sendit", "-At", "-c", sql], quiet=True
        ).stdout
        return out.strip()


def env_keys(path):
    return dict(
        line.split("=", 1)
        for line in path.read_text().splitlines()
        if line and not line.startswith("#") and "=" in line
    )


def wait_for(condition, timeout, instance, what, interval=1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{instance.logs()}")


def all_healthy(instance, services):
    states = {}
    containers = instance.containers()
    for name in services:
        c = containers.get(name)
        if c is None:
            states[name] = "missing"
        elif name == "certs":
            states[name] = (
                "done" if c["State"]["Status"] == "exited" and c["State"]["ExitCode"] == 0 else c["State"]["Status"]
            )
        elif c["State"].get("Health"):
            states[name] = c["State"]["Health"]["Status"]
        else:
            states[name] = "healthy" if c["State"]["Status"] == "running" else c["State"]["Status"]
    for name, state in states.items():
        if state in ("exited", "dead", "unhealthy") or (name == "certs" and state == "exited"):
            raise AssertionError(f"{name} is {state}\n{instance.logs()}")
    return all(s in ("healthy", "done") for s in states.values()), states


class Orthanc:
    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path):
        with urllib.request.urlopen(self.base + path, timeout=30) as response:
            return json.loads(response.read())


def get(opener, url, data=None):
    request = urllib.request.Request(url, data=data)
    if data is not None:
        parts = urllib.parse.urlsplit(url)
        request.add_header("Origin", f"{parts.scheme}://{parts.netloc}")
        request.add_header("Referer", url)
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode("utf-8", "replace")


def drop_study(data, name, count, owner, patient_id, seed):
    """Copy a study in as NAME.tmpX, then rename it NAME: the watcher's contract."""
    partial = data / f"{name}.tmpX"
    make_ct_series(partial, count, patient_id=patient_id, patient_name="Secret^Compose", seed=seed)
    if owner:
        for path in [partial, *partial.rglob("*")]:
            os.chown(path, *owner)
    partial.rename(data / name)


@pytest.mark.timeout(2400)  # the first run builds every image (docstring)
def test_compose_stack(tmp_path, local_images):
    t0 = time.monotonic()
    folder = tmp_path / "sendit"
    scratch_copy(folder)
    # The operator's steps (docs/setup.md): .env from the setup script, then the image
    # variables of scripts/local_images.sh --env (a host without Docker Hub).
    # The certificate authorities this host added to its trust store (a TLS-inspecting proxy
    # in front of PyPI, as on this machine kind) are trusted by the image build's pip too
    # (build-ca/README.md). Only into the scratch copy, never into the checkout.
    for ca in Path("/usr/local/share/ca-certificates").glob("*.crt"):
        shutil.copy(ca, folder / "build-ca" / ca.name)
    run([str(folder / "scripts/setup_instance.sh"), "--env-only", "--dir", str(folder)])
    env_file = folder / ".env"
    keys = env_keys(env_file)
    https_port, http_port, orthanc_port, receiver_port = (free_port() for _ in range(4))
    data, media = folder / "data", folder / "media"
    for path in (data, media):
        path.mkdir(exist_ok=True)
    extra = {
        **local_images,
        "HTTP_PORT": f"127.0.0.1:{http_port}",
        "HTTPS_PORT": f"127.0.0.1:{https_port}",
        "ORTHANC_PUBLISH": f"127.0.0.1:{orthanc_port}",
        "RECEIVER_PUBLISH": f"127.0.0.1:{receiver_port}",
        "SENDIT_IMAGE": "sendit-compose-test:latest",
        "WORKER_CONCURRENCY": "2",
        "SEND_TO_ORTHANC": "true",
        "SEND_TO_GOOGLE": "false",
    }
    # Who owns data/ and media/ (docs/setup.md): as root, the image's default user 10001;
    # as anyone else, that user's own uid, built into the image.
    if os.getuid() == 0:
        owner = (10001, 10001)
        for path in (data, media):
            os.chown(path, *owner)
    else:
        owner = None
        extra.update(SENDIT_UID=str(os.getuid()), SENDIT_GID=str(os.getgid()))
    with env_file.open("a") as out:
        out.write("".join(f"{k}={v}\n" for k, v in extra.items()))
    (folder / "docker-compose.test.yml").write_text(FAST_HEALTH)
    project = "sendittest" + uuid.uuid4().hex[:8]
    instance = Instance(folder, compose_command(), project)
    password = keys["LOCKDOWN_PASSWORDS"].split(",")[0]

    volumes_before = set(run(["docker", "volume", "ls", "-q"], quiet=True).stdout.split())
    started = time.monotonic()
    instance("build", "uwsgi", timeout=1800)
    log(f"sendit image built on {local_images['SENDIT_BASE_IMAGE']}: {time.monotonic() - started:.0f} s")
    services = ["postgres", "redis", "uwsgi", "worker", "watcher", "receiver", "certs", "nginx", "orthanc"]
    try:
        started = time.monotonic()
        instance("up", "-d")
        wait_for(lambda: all_healthy(instance, services)[0], 300, instance, "every service healthy", 2)
        log(f"up -d to every service healthy: {time.monotonic() - started:.0f} s")
        containers = instance.containers()
        # Every sendit service runs as the non-root user; ports only on loopback.
        for name in ("uwsgi", "worker", "watcher", "receiver"):
            user = run(["docker", "exec", containers[name]["Id"], "id", "-u"], quiet=True).stdout.strip()
            assert user == str(owner[0] if owner else os.getuid()) and user != "0", (name, user)
        for name, c in containers.items():
            for bindings in (c["HostConfig"].get("PortBindings") or {}).values():
                for binding in bindings:
                    assert binding["HostIp"] == "127.0.0.1", (name, binding)

        orthanc = Orthanc(orthanc_port)
        assert orthanc.get("/instances") == []

        # 1. A study through the data folder, de-identified into Orthanc.
        drop_study(data, "ST-COMPOSE", 3, owner, "PHI-COMPOSE-1", seed=1)

        def batch(uid):
            row = instance.psql(f"SELECT status, has_error FROM main_batch WHERE uid = '{uid}'")
            return tuple(row.split("|")) if row else None

        started = time.monotonic()
        assert wait_for(
            lambda: batch("ST-COMPOSE") == ("DONE", "f") and batch("ST-COMPOSE"),
            180,
            instance,
            "batch ST-COMPOSE to be DONE",
        ) == ("DONE", "f")
        log(f"a 3-image study: renamed to DONE in {time.monotonic() - started:.0f} s")
        instances = orthanc.get("/instances")
        assert len(instances) == 3
        for iid in instances:
            tags = orthanc.get(f"/instances/{iid}/simplified-tags")
            assert not tags["PatientID"].startswith("PHI-COMPOSE"), tags["PatientID"]
            assert "Secret" not in tags.get("PatientName", "")
        assert not (data / "ST-COMPOSE").exists()

        # 2. The status page through nginx over https, with the self-signed certificate the
        # certs service made, locked until the password is given.
        cert = folder / "https/certs/fullchain.pem"
        assert cert.exists(), "the certs service made no certificate"
        context = ssl.create_default_context(cafile=str(cert))
        base = f"https://127.0.0.1:{https_port}/"
        jar = http.cookiejar.CookieJar()
        browser = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(jar), urllib.request.HTTPSHandler(context=context)
        )
        status, headers, body = get(browser, base)
        assert status == 200 and 'name="password"' in body and "ST-COMPOSE" not in body
        assert headers.get("Strict-Transport-Security") == "max-age=31536000"
        form = {"password": password}
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', body)
        if csrf:
            form["csrfmiddlewaretoken"] = csrf.group(1)
        status, _, body = get(browser, base, urllib.parse.urlencode(form).encode())
        assert status == 200 and "ST-COMPOSE" in body, body[:2000]
        assert any(c.name == "sessionid" and c.secure for c in jar)
        plain = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context))
        static = re.search(r'(?:href|src)="(/static/[^"]+)"', body)
        if static:
            assert get(plain, base.rstrip("/") + static.group(1))[0] == 200

        # Port 80 only redirects.
        class Stay(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):
                return None

        status, headers, _ = get(urllib.request.build_opener(Stay), f"http://127.0.0.1:{http_port}/")
        assert status == 301 and headers["Location"].startswith("https://")

        # 3. `restart worker` in the middle of a batch: nothing lost, nothing sent twice.
        count = 200
        drop_study(data, "ST-RESTART", count, owner, "PHI-COMPOSE-2", seed=2)

        def in_flight():
            # Imported, and de-identification (or sending) under way: some image past NEW.
            row = instance.psql(
                "SELECT b.status, i.status, count(*) FROM main_image i JOIN main_batch b "
                "ON i.batch_id = b.id WHERE b.uid = 'ST-RESTART' GROUP BY 1, 2"
            )
            counts = {}
            for line in row.splitlines():
                status, image_status, n = line.split("|")
                counts[image_status] = int(n)
                if status == "DONE":
                    raise AssertionError("ST-RESTART was over before the worker could be restarted")
            if sum(counts.values()) == count and set(counts) - {"NEW"}:
                return status, counts
            return None

        mid = wait_for(in_flight, 180, instance, "batch ST-RESTART to be under way", 0.05)
        in_orthanc = len(orthanc.get("/instances")) - 3
        started = time.monotonic()
        instance("restart", "worker")
        log(
            f"restarted the worker with ST-RESTART {mid[0]}, images {mid[1]}, {in_orthanc}/{count} "
            f"in Orthanc ({time.monotonic() - started:.0f} s)"
        )
        assert in_orthanc < count, "the batch was sent before the worker restarted"
        assert wait_for(
            lambda: batch("ST-RESTART") == ("DONE", "f") and batch("ST-RESTART"),
            300,
            instance,
            "batch ST-RESTART to be DONE after the restart",
        ) == ("DONE", "f")
        log(f"ST-RESTART DONE {time.monotonic() - started:.0f} s after the restart")
        instances = orthanc.get("/instances")
        assert len(instances) == 3 + count, len(instances)
        assert not (data / "ST-RESTART").exists()
        assert "PHI-COMPOSE" not in instance("logs", "--no-color", quiet=True).stdout

        # 4. `down` removes the containers and the network; ./data, ./media and the
        # database volume stay (docs/start.md).
        (data / "left-behind.tmpZ").mkdir()
        instance("down")
        assert instance.containers() == {}
        assert data.is_dir() and (data / "left-behind.tmpZ").is_dir() and media.is_dir()
        volumes = run(
            ["docker", "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={project}"], quiet=True
        ).stdout.split()
        assert f"{project}_postgres" in volumes and f"{project}_redis" in volumes, volumes
        networks = run(
            ["docker", "network", "ls", "-q", "--filter", f"label=com.docker.compose.project={project}"], quiet=True
        ).stdout.split()
        assert networks == []
        # No anonymous volume was left behind (the image declares none).
        dangling = run(["docker", "volume", "ls", "-q", "--filter", "dangling=true"], quiet=True).stdout.split()
        left = {v for v in dangling if v not in volumes_before and not v.startswith(project + "_")}
        assert not left, f"anonymous volumes left by down: {left}"
        # ... and the database in it: up again, the batches are still there.
        started = time.monotonic()
        instance("up", "-d", "postgres")
        instance._pg = None
        wait_for(lambda: all_healthy(instance, ["postgres"])[0], 120, instance, "postgres again", 1)
        assert instance.psql("SELECT count(*) FROM main_batch WHERE status = 'DONE'") == "2"
        log(f"down kept the database volume (checked in {time.monotonic() - started:.0f} s)")
    except BaseException:
        print(f"--- the services' last log lines\n{instance.logs()}", flush=True)
        raise
    finally:
        instance("down", "-v", "--remove-orphans", "-t", "30", check=False)
        # Files the containers wrote as their user; the scratch folder goes with tmp_path.
        log(f"the whole test: {time.monotonic() - t0:.0f} s")
