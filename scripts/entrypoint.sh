#!/usr/bin/env bash
# The one entry point of the sendit image: every service of docker-compose.yml is this
# script with a different first argument. It also runs outside a container (the deploy
# end-to-end test uses it with .venv/bin first on PATH).
#
#   entrypoint.sh uwsgi        wait for the database, migrate, collect static files, run uwsgi
#   entrypoint.sh worker       a Celery worker (WORKER_CONCURRENCY processes, default 4)
#   entrypoint.sh watcher      the watcher of DATA_FOLDER, in the foreground
#   entrypoint.sh manage ARGS  python manage.py ARGS (createsuperuser, retry_batch, ...)
#   entrypoint.sh healthcheck  is the service this container runs healthy? (HEALTHCHECK)
#   entrypoint.sh CMD ARGS     any other command, as is
#
# Nothing secret is read here: settings and secrets come from the environment (see
# docs/configuration.md).
set -euo pipefail

app_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$app_dir"
export DJANGO_SETTINGS_MODULE="${DJANGO_SETTINGS_MODULE:-sendit.settings}"
# Where this container notes which service it runs, for `healthcheck`.
role_file="${SENDIT_ROLE_FILE:-/tmp/sendit-role}"

say() { echo "entrypoint: $*" >&2; }

# docker-compose.yml's database and broker when .env names none (an .env older than the
# DATABASE_URL and CELERY_BROKER_URL keys that scripts/setup_instance.sh writes): its postgres
# and redis services, with the passwords of .env. Anywhere else (no POSTGRES_PASSWORD or
# REDIS_PASSWORD in the environment) nothing changes.
if [ -z "${DATABASE_URL:-}" ] && [ -n "${POSTGRES_PASSWORD:-}" ]; then
    export DATABASE_URL="postgres://sendit:${POSTGRES_PASSWORD}@${POSTGRES_HOST:-postgres}:5432/sendit"
fi
if [ -z "${CELERY_BROKER_URL:-}" ] && [ -n "${REDIS_PASSWORD:-}" ]; then
    export CELERY_BROKER_URL="redis://:${REDIS_PASSWORD}@${REDIS_HOST:-redis}:6379/0"
fi

wait_for_database() {
    # Wait up to DATABASE_WAIT seconds (default 60) for the database to answer.
    local timeout="${DATABASE_WAIT:-60}"
    python - "$timeout" <<'PY'
import sys, time
import django
from django.db import connection
from django.db.utils import OperationalError

from sendit.config import start

start()  # the settings, checked, and the folders they name (logs...)
django.setup()
deadline = time.monotonic() + float(sys.argv[1])
while True:
    try:
        connection.ensure_connection()
        break
    except OperationalError as exc:
        if time.monotonic() > deadline:
            sys.exit(f"entrypoint: the database did not answer: {exc}")
        time.sleep(1)
PY
}

healthcheck() {
    local role
    role="$(cat "$role_file" 2>/dev/null || echo uwsgi)"
    case "$role" in
        uwsgi)
            # /healthz of the web application, narrowed to what the web page needs. The
            # request says it came over https (honoured only with SECURE_SSL) so that the
            # https redirect does not answer in its place; its Host is localhost, which
            # ALLOWED_HOSTS must keep (scripts/setup_instance.sh writes it).
            python - "${SENDIT_UWSGI_HTTP:-127.0.0.1:8000}" <<'PY'
import sys, urllib.error, urllib.request

class Stay(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None

request = urllib.request.Request(f"http://{sys.argv[1]}/healthz?parts=database,broker",
                                 headers={"Host": "localhost", "X-Forwarded-Proto": "https"})
try:
    with urllib.request.build_opener(Stay).open(request, timeout=10) as response:
        code = response.status
except urllib.error.HTTPError as exc:
    code = exc.code
    print(f"healthcheck: /healthz answered {code}: {exc.read()[:300]!r}", file=sys.stderr)
sys.exit(0 if 200 <= code < 300 else 1)
PY
            ;;
        worker)
            local name="${WORKER_NAME:-sendit@%h}"
            name="${name//%h/$(hostname)}"
            celery -A sendit inspect ping --timeout 10 -d "$name" >/dev/null
            ;;
        watcher)
            local pid_file="${WATCHER_PID_FILE:-$app_dir/var/watcher.pid}"
            [ -s "$pid_file" ] && kill -0 "$(cat "$pid_file")"
            ;;
        *)
            return 0
            ;;
    esac
}

role="${1:-uwsgi}"
[ "$#" -gt 0 ] && shift

case "$role" in
    uwsgi)
        echo uwsgi >"$role_file"
        wait_for_database
        python manage.py migrate --noinput
        python manage.py collectstatic --noinput -v 0
        exec uwsgi --ini "$app_dir/uwsgi.ini" "$@"
        ;;
    worker)
        echo worker >"$role_file"
        wait_for_database
        exec celery -A sendit worker \
            --loglevel "${SENDIT_LOG_LEVEL:-INFO}" \
            --concurrency "${WORKER_CONCURRENCY:-4}" \
            --hostname "${WORKER_NAME:-sendit@%h}" "$@"
        ;;
    watcher)
        echo watcher >"$role_file"
        wait_for_database
        # A container restarted after a hard stop keeps the pid file of its previous run,
        # and that pid is often its own again (1): the watcher would refuse to start.
        pid_file="${WATCHER_PID_FILE:-$app_dir/var/watcher.pid}"
        if [ -f "$pid_file" ] && [ "$(cat "$pid_file")" = "$$" ]; then
            rm -f "$pid_file"
        fi
        exec python manage.py watcher_start --foreground "$@"
        ;;
    manage)
        exec python manage.py "$@"
        ;;
    healthcheck)
        healthcheck
        ;;
    *)
        exec "$role" "$@"
        ;;
esac
