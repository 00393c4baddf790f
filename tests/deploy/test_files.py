"""The deployment files hold together: compose files, Dockerfile, nginx, uwsgi, scripts, docs.

`docker compose config` validates the compose files when the compose plugin is installed;
without it (this machine kind has the Docker client only) a YAML check covers the same
ground: services, images, volumes, health checks, restart policies and variables.
"""

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from sendit.config import is_secret, names

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ["scripts/entrypoint.sh", "scripts/setup_instance.sh", "scripts/generate_certs.sh", "scripts/local_images.sh"]
# Every secret setting (sendit.config marks them).
SECRETS = [name for name in names() if is_secret(name)]
APP_SERVICES = ["uwsgi", "worker", "watcher"]


def load(path):
    return yaml.safe_load((ROOT / path).read_text())


def mount(volume):
    """(source, target) of a short volume syntax, where the source may be ${VAR:-default}."""
    cut = volume.index("}") + 1 if volume.startswith("${") else 0
    source, target = volume[cut:].split(":")[:2] if not cut else (volume[:cut], volume[cut + 1 :].split(":")[0])
    return source, target


def compose_plugin():
    """`docker compose` (the v2 plugin), else Debian's docker-compose 1.29, else None."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


@pytest.fixture(scope="module")
def env_file(tmp_path_factory):
    """A .env made by the real setup script (--env-only), as an operator would."""
    folder = tmp_path_factory.mktemp("instance")
    subprocess.run(
        [str(ROOT / "scripts/setup_instance.sh"), "--env-only", "--dir", str(folder)],
        check=True,
        capture_output=True,
        text=True,
    )
    return folder / ".env"


def env_keys(path):
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))


# -- compose -------------------------------------------------------------------------------


def test_compose_services_and_volumes():
    compose = load("docker-compose.yml")
    services = compose["services"]
    assert set(services) == {"uwsgi", "worker", "watcher", "receiver", "nginx", "certs", "redis", "postgres", "orthanc"}
    # One image for the app; the entry point picks the service.
    images = {services[s]["image"] for s in APP_SERVICES}
    assert len(images) == 1
    assert {services[s]["command"][0] for s in APP_SERVICES} == {"uwsgi", "worker", "watcher"}
    for name in APP_SERVICES:
        assert services[name]["build"]["context"] == "."
        assert "./data:/data" in services[name]["volumes"], name
        assert services[name]["environment"]["DATA_FOLDER"] == "/data"
    assert "${WORKER_CONCURRENCY" in services["worker"]["environment"]["WORKER_CONCURRENCY"]
    for name, service in services.items():
        if name == "certs":  # runs once per start, before nginx
            assert service["restart"] == "no"
            continue
        assert service.get("restart") in ("always", "unless-stopped"), name
        if "profiles" not in service:
            assert "healthcheck" in service or name in APP_SERVICES, name
    for name in APP_SERVICES:
        assert services[name]["healthcheck"]["test"][-1] == "healthcheck"
    assert services["orthanc"]["profiles"] == ["orthanc"]
    # Queued work survives a Redis restart; the database lives in a named volume.
    assert "--appendonly yes" in " ".join(services["redis"]["command"])
    assert "postgres:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    assert {"postgres", "redis", "static"} <= set(compose["volumes"])
    # nginx publishes the only web ports (443, and 80 to redirect); static files are shared read-only.
    assert services["nginx"]["ports"] == ["${HTTP_PORT:-80}:80", "${HTTPS_PORT:-443}:443"]
    # Every image is a variable whose default is the official image (scripts/local_images.sh
    # builds stand-ins for a host without Docker Hub).
    for name, variable, default in (
        ("nginx", "NGINX_IMAGE", "nginx:"),
        ("redis", "REDIS_IMAGE", "redis:"),
        ("postgres", "POSTGRES_IMAGE", "postgres:"),
        ("orthanc", "ORTHANC_IMAGE", "orthancteam/orthanc:"),
    ):
        assert services[name]["image"].startswith("${%s:-%s" % (variable, default)), services[name]["image"]
    for name in APP_SERVICES + ["receiver", "certs"]:
        args = services[name]["build"]["args"]
        assert args["SENDIT_BASE_IMAGE"] == "${SENDIT_BASE_IMAGE:-python:3.11-slim-bookworm}"
        assert args["SENDIT_UID"] == "${SENDIT_UID:-10001}"
    assert services["orthanc"]["ports"] == ["${ORTHANC_PUBLISH:-127.0.0.1:8042}:8042"]
    assert "static:/var/www/static:ro" in services["nginx"]["volumes"]
    assert "static:/app/var/static" in services["uwsgi"]["volumes"]
    # The DICOM receiver publishes its port alone, listening on every interface of its container.
    assert services["receiver"]["command"] == ["manage", "dicom_receiver"]
    assert services["receiver"]["ports"] == ["${RECEIVER_PUBLISH:-11112}:${RECEIVER_PORT:-11112}"]
    assert services["receiver"]["environment"]["RECEIVER_BIND"] == "0.0.0.0"
    assert "./data:/data" in services["receiver"]["volumes"]
    for name in ("redis", "postgres", "uwsgi", "worker", "watcher", "certs"):
        assert "ports" not in services[name], f"{name} must not be published by default"
        assert "expose" not in services[name], name


def test_compose_has_no_literal_secret():
    text = (ROOT / "docker-compose.yml").read_text() + (ROOT / "https/docker-compose.yml").read_text()
    for name in SECRETS + ["POSTGRES_PASSWORD", "REDIS_PASSWORD"]:
        for match in re.finditer(rf"\b{name}\s*[:=]\s*(\S+)", text):
            assert match.group(1).startswith("${"), f"{name} has a literal value in a compose file"


def test_compose_variables_come_from_the_generated_env(env_file):
    """Every ${VAR} without a default is one that setup_instance.sh writes to .env."""
    keys = env_keys(env_file)
    for path in ("docker-compose.yml", "https/docker-compose.yml"):
        text = (ROOT / path).read_text().replace("$$", "")
        for name, rest in re.findall(r"\$\{([A-Z_][A-Z0-9_]*)(:?[-?][^}]*)?\}", text):
            if not rest or rest.startswith(("?", ":?")):
                assert name in keys, f"{path}: ${{{name}}} has no default and .env lacks it"
    for name in ("SECRET_KEY", "DEID_SECRET", "LOCKDOWN_PASSWORDS"):
        assert name in keys
    services = load("docker-compose.yml")["services"]
    for name in APP_SERVICES:
        assert services[name]["env_file"] == ".env", "secrets reach the app from .env at run time"


def test_https_is_the_default():
    """docker-compose.yml serves https/nginx.conf with the certificate the certs service makes;
    https/docker-compose.yml, which used to turn TLS on, is kept empty for old COMPOSE_FILE lines."""
    base = load("docker-compose.yml")
    assert load("https/docker-compose.yml") == {"services": {}}
    nginx = base["services"]["nginx"]
    assert any(p.endswith(":443") for p in nginx["ports"])
    assert any(p.endswith(":80") for p in nginx["ports"]), "port 80 stays open to redirect"
    mounts = dict(reversed(mount(v)) for v in nginx["volumes"])
    assert mounts["/etc/nginx/nginx.conf"] == "./https/nginx.conf"
    assert mounts["/etc/nginx/certs"].startswith("${CERTS_DIR")
    environment = base["services"]["uwsgi"]["environment"]
    assert environment["SECURE_SSL"] == "${SECURE_SSL:-true}" and environment["SECURE_HSTS_SECONDS"] == "0"
    conf = (ROOT / "https/nginx.conf").read_text()
    assert "return 301 https://$host$request_uri;" in conf
    assert "ssl_certificate /etc/nginx/certs/fullchain.pem;" in conf
    assert "ssl_certificate_key /etc/nginx/certs/privkey.pem;" in conf
    assert "Strict-Transport-Security" in conf


@pytest.mark.skipif(
    not compose_plugin(),
    reason="neither the docker compose plugin nor docker-compose "
    "is installed (Docker client only); test_compose_* check the YAML instead",
)
def test_docker_compose_config(tmp_path, env_file):
    for name in ("docker-compose.yml", "nginx.conf", "https"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    shutil.copy(env_file, tmp_path / ".env")
    combinations = [["docker-compose.yml"], ["docker-compose.yml", "https/docker-compose.yml"]]
    if compose_plugin() == ["docker-compose"]:
        # docker-compose 1.x reads the emptied https/docker-compose.yml (`services: {}`) as a
        # version 1 file and refuses to merge it: the old COMPOSE_FILE line needs compose v2.
        combinations = combinations[:1]
    for files in combinations:
        args = [a for f in files for a in ("-f", f)]
        result = subprocess.run(
            [*compose_plugin(), *args, "--profile", "orthanc", "config", "-q"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr


# -- Dockerfile ------------------------------------------------------------------------------


def dockerfile_instructions():
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return [
        line.strip().split(None, 1) for line in text.splitlines() if line.strip() and not line.strip().startswith("#")
    ]


def text_of_dockerfile():
    return (ROOT / "Dockerfile").read_text()


def test_dockerfile_structure():
    instructions = dockerfile_instructions()
    names = [i[0].upper() for i in instructions]
    froms = [i[1] for i in instructions if i[0].upper() == "FROM"]
    # Every stage starts from SENDIT_BASE_IMAGE, whose default is the official slim Python image.
    assert froms[0].startswith("${SENDIT_BASE_IMAGE} AS base"), froms
    assert all(f.split()[0] in ("${SENDIT_BASE_IMAGE}", "base") for f in froms), froms
    assert re.search(r"^ARG SENDIT_BASE_IMAGE=python:3\.\d+-slim-bookworm$", text_of_dockerfile(), re.M)
    users = [i[1] for i in instructions if i[0].upper() == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must run as a non-root user"
    assert names.index("USER") > max(i for i, n in enumerate(names) if n == "FROM"), "USER in the final stage"
    assert "HEALTHCHECK" in names
    health = next(i[1] for i in instructions if i[0].upper() == "HEALTHCHECK")
    assert "entrypoint.sh" in health and "healthcheck" in health
    assert "ENTRYPOINT" in names
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"uwsgi==\$\{UWSGI_VERSION\}", text) and "ARG UWSGI_VERSION=" in text


def test_dockerfile_and_context_hold_no_secret():
    for word, value in dockerfile_instructions():
        if word.upper() in ("ENV", "ARG", "LABEL"):
            for name in SECRETS + ["PASSWORD", "POSTGRES_PASSWORD", "REDIS_PASSWORD"]:
                assert not re.search(rf"\b{name}\s*=", value), f"{word} {value!r} sets a secret"
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    for entry in ("sendit/settings/secrets.py", ".env", "var/", "data/", "media/", ".venv/", "*.key"):
        assert entry in ignore, f".dockerignore must exclude {entry}"


def test_entrypoint_builds_the_compose_urls_for_an_older_env():
    """An .env without DATABASE_URL/CELERY_BROKER_URL (before setup_instance.sh wrote them)
    still reaches the compose postgres and redis; a URL that is set is kept."""
    script = str(ROOT / "scripts/entrypoint.sh")
    show = ["sh", "-c", 'echo "$DATABASE_URL $CELERY_BROKER_URL"']
    base = {"PATH": os.environ["PATH"], "SENDIT_ROLE_FILE": "/dev/null"}
    out = subprocess.run(
        [script, *show],
        env={**base, "POSTGRES_PASSWORD": "pw1", "REDIS_PASSWORD": "pw2"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == ["postgres://sendit:pw1@postgres:5432/sendit", "redis://:pw2@redis:6379/0"]
    out = subprocess.run(
        [script, *show],
        env={
            **base,
            "POSTGRES_PASSWORD": "pw1",
            "REDIS_PASSWORD": "pw2",
            "DATABASE_URL": "postgres://x@10.0.0.5/s",
            "CELERY_BROKER_URL": "rediss://:p@10.0.0.5:6380/0",
        },
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == ["postgres://x@10.0.0.5/s", "rediss://:p@10.0.0.5:6380/0"]
    out = subprocess.run([script, *show], env=base, capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def test_entrypoint_roles():
    text = (ROOT / "scripts/entrypoint.sh").read_text()
    for role in ("uwsgi)", "worker)", "watcher)", "healthcheck)", "manage)"):
        assert role in text
    assert "watcher_start --foreground" in text
    assert '--concurrency "${WORKER_CONCURRENCY:-4}"' in text
    assert os.access(ROOT / "scripts/entrypoint.sh", os.X_OK)


# -- uwsgi and nginx -------------------------------------------------------------------------

UWSGI_SOCKET = "/run/sendit/uwsgi.sock"  # uwsgi.ini's default, nginx.conf's upstream


def test_uwsgi_ini():
    text = (ROOT / "uwsgi.ini").read_text()
    options = [line.split("=", 1)[0].strip() for line in text.splitlines() if "=" in line and not line.startswith(";")]
    assert (
        text.splitlines()[[i for i, line in enumerate(text.splitlines()) if line.strip() == "[uwsgi]"][0]] == "[uwsgi]"
    )
    for option in ("strict", "module", "master", "die-on-term", "socket", "need-app", "max-apps"):
        assert option in options, option
    assert "module = sendit.wsgi:application" in text
    assert f"socket = {UWSGI_SOCKET}" in text  # what nginx.conf's upstream points at
    assert "log-x-forwarded-for" not in options  # the logged address is REMOTE_ADDR, from nginx


def test_nginx_conf_matches_compose():
    conf = (ROOT / "nginx.conf").read_text()
    assert f"server unix:{UWSGI_SOCKET};" in conf
    assert "uwsgi_pass sendit_uwsgi;" in conf
    assert "alias /var/www/static/;" in conf
    assert re.search(r"client_max_body_size \d+[km];", conf)
    assert "server_tokens off;" in conf
    for header in ("X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy", "Content-Security-Policy"):
        assert header in conf
    assert "location = /nginx-health" in conf  # the compose health check


def substituted(conf, tmp, port, upstream, static, extra=()):
    """A copy of an nginx.conf runnable here: temp pid, logs, port, upstream and static root.

    The upstream's server line is replaced whatever it says (test_nginx_conf_matches_compose
    checks what it says), so the deploy tests can also run against an older nginx.conf.
    """
    conf, found = re.subn(r"(upstream sendit_uwsgi \{[^}]*?server )[^;]+;", rf"\g<1>{upstream};", conf)
    assert found == 1, "nginx.conf no longer has `upstream sendit_uwsgi { server ...; }`"
    replacements = [
        ("user nginx;", "user root;" if os.geteuid() == 0 else ""),
        ("pid /var/run/nginx.pid;", f"pid {tmp}/nginx.pid;"),
        ("error_log /var/log/nginx/error.log warn;", f"error_log {tmp}/error.log warn;"),
        ("access_log /var/log/nginx/access.log main;", f"access_log {tmp}/access.log main;"),
        ("listen 80 default_server;", f"listen 127.0.0.1:{port} default_server;"),
        ("alias /var/www/static/;", f"alias {static}/;"),
        *extra,
    ]
    for old, new in replacements:
        assert old in conf, f"nginx.conf no longer has {old!r}; update the deploy tests"
        conf = conf.replace(old, new)
    return conf


def nginx_test(conf_path, tmp):
    return subprocess.run(
        [
            shutil.which("nginx") or "/usr/sbin/nginx",
            "-t",
            "-p",
            str(tmp),
            "-e",
            str(tmp / "error.log"),
            "-c",
            str(conf_path),
        ],
        capture_output=True,
        text=True,
    )


@pytest.mark.skipif(
    not (shutil.which("nginx") or os.path.exists("/usr/sbin/nginx")),
    reason="nginx is not installed (apt-get install nginx)",
)
def test_nginx_configs_pass_nginx_t(tmp_path):
    from tests.services import free_port

    plain = tmp_path / "plain.conf"
    plain.write_text(
        substituted((ROOT / "nginx.conf").read_text(), tmp_path, free_port(), f"unix:{tmp_path}/uwsgi.sock", tmp_path)
    )
    result = nginx_test(plain, tmp_path)
    assert result.returncode == 0, result.stderr

    certs = tmp_path / "certs"
    subprocess.run(
        [str(ROOT / "scripts/generate_certs.sh"), "--self-signed", "--domain", "sendit.test", "--out", str(certs)],
        check=True,
        capture_output=True,
    )
    tls = tmp_path / "tls.conf"
    tls.write_text(
        substituted(
            (ROOT / "https/nginx.conf").read_text(),
            tmp_path,
            free_port(),
            f"unix:{tmp_path}/uwsgi.sock",
            tmp_path,
            extra=[
                ("listen 443 ssl http2 default_server;", f"listen 127.0.0.1:{free_port()} ssl http2 default_server;"),
                ("/etc/nginx/certs/", f"{certs}/"),
                ("root /var/www/acme;", f"root {tmp_path};"),
            ],
        )
    )
    result = nginx_test(tls, tmp_path)
    assert result.returncode == 0, result.stderr


# -- scripts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("script", SCRIPTS)
def test_shellcheck(script):
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    result = subprocess.run(["shellcheck", "-x", str(ROOT / script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_setup_instance_env_file(env_file):
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    keys = env_keys(env_file)
    for name in ("SECRET_KEY", "DEID_SECRET", "LOCKDOWN_PASSWORDS", "POSTGRES_PASSWORD", "REDIS_PASSWORD"):
        assert re.fullmatch(r"[0-9a-f]{24,}", keys[name]), name
    assert len(keys["SECRET_KEY"]) >= 50
    assert len({keys[n] for n in ("SECRET_KEY", "DEID_SECRET", "POSTGRES_PASSWORD", "REDIS_PASSWORD")}) == 4
    # The compose services' URLs, with those passwords (docker-compose 1.x cannot nest them in
    # a default, so .env holds them; scripts/entrypoint.sh builds the same for an older .env).
    assert keys["DATABASE_URL"] == f"postgres://sendit:{keys['POSTGRES_PASSWORD']}@postgres:5432/sendit"
    assert keys["CELERY_BROKER_URL"] == f"redis://:{keys['REDIS_PASSWORD']}@redis:6379/0"
    # Again: nothing changes (DEID_SECRET must stay stable), a missing key is added back.
    before = env_file.read_text()
    env_file.write_text(
        "\n".join(line for line in before.splitlines() if not line.startswith("REDIS_PASSWORD=")) + "\n"
    )
    subprocess.run(
        [str(ROOT / "scripts/setup_instance.sh"), "--env-only", "--dir", str(env_file.parent)],
        check=True,
        capture_output=True,
    )
    after = env_keys(env_file)
    assert {k: v for k, v in after.items() if k != "REDIS_PASSWORD"} == {
        k: v for k, v in keys.items() if k != "REDIS_PASSWORD"
    }
    assert re.fullmatch(r"[0-9a-f]{48}", after["REDIS_PASSWORD"])


def test_generate_certs_self_signed_and_existing(tmp_path):
    script = str(ROOT / "scripts/generate_certs.sh")
    subprocess.run(
        [script, "--self-signed", "--domain", "node.example", "--out", str(tmp_path / "a")],
        check=True,
        capture_output=True,
    )
    key = tmp_path / "a/privkey.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    text = subprocess.run(
        ["openssl", "x509", "-in", str(tmp_path / "a/fullchain.pem"), "-noout", "-text"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "DNS:node.example" in text
    # Refuses to overwrite without --force; installs an existing pair after checking it.
    again = subprocess.run([script, "--self-signed", "--out", str(tmp_path / "a")], capture_output=True)
    assert again.returncode != 0
    subprocess.run(
        [script, "--existing", str(tmp_path / "a/fullchain.pem"), str(key), "--out", str(tmp_path / "b")],
        check=True,
        capture_output=True,
    )
    assert (tmp_path / "b/fullchain.pem").read_bytes() == (tmp_path / "a/fullchain.pem").read_bytes()
    subprocess.run([script, "--self-signed", "--out", str(tmp_path / "c")], check=True, capture_output=True)
    mismatch = subprocess.run(
        [
            script,
            "--existing",
            str(tmp_path / "a/fullchain.pem"),
            str(tmp_path / "c/privkey.pem"),
            "--out",
            str(tmp_path / "d"),
        ],
        capture_output=True,
        text=True,
    )
    assert mismatch.returncode != 0 and "does not belong" in mismatch.stderr


# -- docs ------------------------------------------------------------------------------------


def config_settings():
    from sendit.config import names

    return set(names())


def test_configuration_doc_lists_every_setting():
    doc = (ROOT / "docs/configuration.md").read_text()
    missing = sorted(n for n in config_settings() | set(SECRETS) if f"`{n}`" not in doc)
    assert not missing, f"docs/configuration.md lacks {missing}"
    # ...and documents no setting that does not exist (a table row's first cell names settings).
    settings_part = doc[: doc.index("## `make run`")]  # then come make run's and compose's variables
    documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)`", settings_part, re.MULTILINE))
    django_only = {"CONTENT_SECURITY_POLICY"}  # a Django setting of main.py, documented beside
    unknown = sorted(documented - config_settings() - set(SECRETS) - django_only)
    assert not unknown, f"docs/configuration.md documents settings sendit.config does not have: {unknown}"


@pytest.mark.parametrize("doc", ["setup", "configuration", "start", "watcher", "errors", "scaling", "security"])
def test_docs_exist(doc):
    text = (ROOT / f"docs/{doc}.md").read_text()
    assert text.startswith("# ") and len(text) > 800


def test_the_readme_links_the_threat_model_and_generates_secrets():
    readme = (ROOT / "README.md").read_text()
    assert "(docs/security.md)" in readme
    assert "scripts/make_secrets.py" in readme and "cp sendit/settings/bogus_secrets.py" not in readme
    security = (ROOT / "docs/security.md").read_text()
    for name in SECRETS + ["API_TOKENS", "METRICS_TOKEN", "POSTGRES_PASSWORD", "REDIS_PASSWORD"]:
        assert f"`{name}`" in security, name
