# sendit: one image for the web page (uwsgi), the Celery worker and the watcher.
# docker-compose.yml picks the service with the first argument of scripts/entrypoint.sh.
# No secret is baked in: SECRET_KEY, DEID_SECRET, LOCKDOWN_PASSWORDS, ORTHANC_PASSWORD and
# the database and Redis passwords come from the environment at run time (.env).
ARG PYTHON_VERSION=3.11

# -- build: compile uwsgi and any wheel without a binary, into a virtualenv -------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ARG UWSGI_VERSION=2.0.31
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements.txt /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt "uwsgi==${UWSGI_VERSION}"

# -- run: slim Python, the virtualenv, the code, a non-root user -------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm
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
RUN groupadd --system --gid "${SENDIT_GID}" sendit \
    && useradd --system --uid "${SENDIT_UID}" --gid sendit --home-dir /app --shell /usr/sbin/nologin sendit
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# The code stays owned by root: the service can read it, not change it.
COPY . /app
RUN mkdir -p /app/var/static /app/var/log /data /media \
    && chown -R sendit:sendit /app/var /data /media \
    && chmod 0755 /app/scripts/entrypoint.sh \
    && rm -f /app/sendit/settings/secrets.py
USER sendit:sendit
# uwsgi speaks to nginx over a unix socket in a shared volume (/run/sendit): no port to expose.
VOLUME ["/data", "/media"]
HEALTHCHECK --interval=30s --timeout=20s --start-period=60s --retries=3 \
    CMD ["/app/scripts/entrypoint.sh", "healthcheck"]
ENTRYPOINT ["/app/scripts/entrypoint.sh"]
CMD ["uwsgi"]
