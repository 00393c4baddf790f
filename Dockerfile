# sendit: one image for the web page (uwsgi), the Celery worker, the watcher and the receiver.
# docker-compose.yml picks the service with the first argument of scripts/entrypoint.sh.
# No secret is baked in: SECRET_KEY, DEID_SECRET, LOCKDOWN_PASSWORDS, ORTHANC_PASSWORD and
# the database and Redis passwords come from the environment at run time (.env).
#
# SENDIT_BASE_IMAGE is any Debian bookworm image; the same steps give the same image on each:
#   python:3.11-slim-bookworm   (the default) the official Python image, its Python in /usr/local
#   debian:bookworm-slim        Debian's own Python 3.11 (python3, python3-venv from Debian)
#   sendit-local/debian:bookworm  a bookworm made by debootstrap (scripts/local_images.sh), for
#                               a host that cannot reach Docker Hub: Debian's Python as above
ARG SENDIT_BASE_IMAGE=python:3.11-slim-bookworm

# -- base: a Python 3 and what every stage needs -------------------------------------------
FROM ${SENDIT_BASE_IMAGE} AS base
ARG DEBIAN_FRONTEND=noninteractive
# Debian's Python when the base has none; libpython3.X for pip's uwsgi, which links to it
# (the official image's Python is built shared, in /usr/local/lib). openssl: the `certs`
# service (scripts/generate_certs.sh) runs in this image.
RUN set -eux; \
    apt-get update; \
    if ! command -v python3 >/dev/null; then \
        apt-get install -y --no-install-recommends python3 python3-venv; \
        apt-get install -y --no-install-recommends \
            "libpython$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"; \
    fi; \
    apt-get install -y --no-install-recommends ca-certificates openssl; \
    rm -rf /var/lib/apt/lists/*; \
    python3 --version

# -- build: compile uwsgi and any wheel without a binary, into a virtualenv -------------
FROM base AS build
ARG DEBIAN_FRONTEND=noninteractive
ARG UWSGI_VERSION=2.0.31
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# The C compiler, and Python's headers where the base lacks them (Debian's Python).
RUN set -eux; \
    pkgs="build-essential"; \
    python3 -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
        || pkgs="$pkgs python3-dev"; \
    apt-get update; \
    apt-get install -y --no-install-recommends $pkgs; \
    rm -rf /var/lib/apt/lists/*
# A site whose HTTPS goes through a TLS-inspecting proxy puts that proxy's CA in build-ca/
# (build-ca/README.md): trusted by pip here, never part of the image that runs.
COPY build-ca/ /usr/local/share/ca-certificates/build-ca/
RUN set -eux; \
    find /usr/local/share/ca-certificates/build-ca -type f ! -name '*.crt' -delete; \
    update-ca-certificates >/dev/null
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements.lock /tmp/requirements.lock
RUN pip install -r /tmp/requirements.lock "uwsgi==${UWSGI_VERSION}" \
    && uwsgi --version

# -- run: the base, the virtualenv, the code, a non-root user ------------------------------
FROM base
# The user every service runs as. Bind-mounted ./data and ./media must be writable by it:
# docs/setup.md, "Who owns data/ and media/". docker-compose.yml passes SENDIT_UID and
# SENDIT_GID from .env (default 10001).
ARG SENDIT_UID=10001
ARG SENDIT_GID=10001
LABEL org.opencontainers.image.title="sendit" \
      org.opencontainers.image.description="DICOM de-identification and forwarding node" \
      org.opencontainers.image.source="https://github.com/pydicom/sendit"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    DJANGO_SETTINGS_MODULE=sendit.settings \
    DATA_FOLDER=/data \
    MEDIA_ROOT=/media \
    VAR_DIR=/app/var \
    WATCHER_LOG_DIR=/app/var/log \
    WATCHER_PID_FILE=/app/var/watcher.pid
# tesseract: burned-in text found by OCR when DEID_OCR=true (sendit/deid/ocr.py).
RUN apt-get update \
    && apt-get install -y --no-install-recommends tesseract-ocr tesseract-ocr-eng \
    && rm -rf /var/lib/apt/lists/*
RUN set -eux; \
    if ! getent group "${SENDIT_GID}" >/dev/null; then groupadd --system --gid "${SENDIT_GID}" sendit; fi; \
    useradd --system --uid "${SENDIT_UID}" --gid "${SENDIT_GID}" --no-create-home --home-dir /app \
        --shell /usr/sbin/nologin sendit
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# The code stays owned by root: the service can read it, not change it.
COPY . /app
RUN mkdir -p /app/var/static /app/var/log /data /media \
    && chown -R "${SENDIT_UID}:${SENDIT_GID}" /app/var /data /media \
    && chmod 0755 /app/scripts/entrypoint.sh \
    && rm -f /app/sendit/settings/secrets.py \
    && python -c "import django, celery, pydicom, psycopg; print('sendit image: Python', __import__('sys').version.split()[0])"
USER ${SENDIT_UID}:${SENDIT_GID}
# uwsgi speaks to nginx over a unix socket in a shared volume (/run/sendit): no port to expose.
# /data and /media are bind mounts of docker-compose.yml, not VOLUMEs: a VOLUME would give
# the one-shot `certs` container two anonymous volumes at every start, left behind by `down`.
HEALTHCHECK --interval=30s --timeout=20s --start-period=60s --retries=3 \
    CMD ["/app/scripts/entrypoint.sh", "healthcheck"]
ENTRYPOINT ["/app/scripts/entrypoint.sh"]
CMD ["uwsgi"]
