#!/usr/bin/env bash
# Build every image docker-compose.yml needs without Docker Hub: a Debian bookworm base made
# with debootstrap from the Debian mirror this host uses, and stand-ins for the official
# nginx, redis, postgres and orthancteam/orthanc images from Debian's own packages. Each
# stand-in honours the interface docker-compose.yml uses with the official image:
#   nginx     /etc/nginx/nginx.conf mounted; user and group nginx (uid/gid 101); logs to
#             stdout/stderr; wget for the health check
#   redis     `redis-server ARGS` (--requirepass, --appendonly) in /data, run as the user
#             redis after /data is given to it; redis-cli for the health check
#   postgres  POSTGRES_PASSWORD, POSTGRES_USER, POSTGRES_DB (POSTGRES_INITDB_ARGS,
#             POSTGRES_HOST_AUTH_METHOD, PGDATA); the first start initialises
#             /var/lib/postgresql/data and runs /docker-entrypoint-initdb.d/*.sh|*.sql;
#             pg_isready for the health check. Debian's PostgreSQL 15 (the official default is
#             16): a data volume of one cannot be opened by the other.
#   orthanc   ORTHANC__SECTION_NAME=value variables as orthancteam's image reads them
#             (ORTHANC__DICOM_AET -> "DicomAet"; true/false/numbers as JSON), storage in
#             /var/lib/orthanc/db, HTTP 8042 and DICOM 4242 reachable from other containers
# and a base for the sendit image itself: SENDIT_BASE_IMAGE=sendit-local/debian:bookworm
# builds sendit on Debian's Python (the Dockerfile installs it).
#
# Usage: sudo scripts/local_images.sh [--env] [--force] [--mirror URL] [IMAGE...]
#   IMAGE   any of: base nginx redis postgres orthanc (default: all of them)
#   --env   print the variables to add to .env (SENDIT_BASE_IMAGE=... NGINX_IMAGE=...)
#   --force rebuild even what is up to date
# Cached: an image is skipped when it exists and its inputs (this script's recipe for it, the
# mirror, the base image it is built on) did not change. Root is needed for debootstrap.
# The first run takes a few minutes (debootstrap ~30 s, then one apt-get per image); later
# runs take seconds. Environment: DEBIAN_MIRROR (default: the first bookworm source in
# /etc/apt/sources.list*), DEBIAN_SECURITY_MIRROR, LOCAL_IMAGE_PREFIX (sendit-local), DOCKER.
set -euo pipefail

prefix="${LOCAL_IMAGE_PREFIX:-sendit-local}"
docker_cmd="${DOCKER:-docker}"
suite=bookworm
print_env=false
force=false
wanted=()

usage() { sed -n '2,30p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
say() { echo "local_images: $*" >&2; }
die() { echo "local_images: $*" >&2; exit 1; }

while [ "$#" -gt 0 ]; do
    case "$1" in
        --env) print_env=true ;;
        --force) force=true ;;
        --mirror) DEBIAN_MIRROR="$2"; shift ;;
        -h|--help) usage; exit 0 ;;
        base|nginx|redis|postgres|orthanc) wanted+=("$1") ;;
        *) usage >&2; die "unknown argument $1" ;;
    esac
    shift
done
[ "${#wanted[@]}" -gt 0 ] || wanted=(base nginx redis postgres orthanc)

image_name() {
    case "$1" in
        base) echo "$prefix/debian:$suite" ;;
        *) echo "$prefix/$1:$suite" ;;
    esac
}

print_variables() {
    echo "SENDIT_BASE_IMAGE=$(image_name base)"
    echo "NGINX_IMAGE=$(image_name nginx)"
    echo "REDIS_IMAGE=$(image_name redis)"
    echo "POSTGRES_IMAGE=$(image_name postgres)"
    echo "ORTHANC_IMAGE=$(image_name orthanc)"
}

# -- the Debian mirror this host already uses --------------------------------------------
sources_field() {
    # sources_field SUITE: the URI of the first apt source (one-line or deb822) with SUITE.
    local want="$1" file
    for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -r "$file" ] || continue
        case "$file" in
            *.sources)
                awk -v want="$want" '
                    function flush() { if (uri != "" && types ~ /(^| )deb( |$)/) { n = split(suites, s, " "); for (i = 1; i <= n; i++) if (s[i] == want) { print uri; exit } } uri = ""; suites = ""; types = "" }
                    /^[ \t]*$/ { flush(); next }
                    /^[ \t]*#/ { next }
                    tolower($1) == "types:" { $1 = ""; types = $0 }
                    tolower($1) == "uris:" { uri = $2 }
                    tolower($1) == "suites:" { $1 = ""; suites = $0 }
                    END { flush() }' "$file"
                ;;
            *)
                awk -v want="$want" '
                    $1 == "deb" { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ } if ($(i + 1) == want) { print $i; exit } }' "$file"
                ;;
        esac
    done | head -n 1
}

mirror="${DEBIAN_MIRROR:-$(sources_field "$suite")}"
mirror="${mirror:-http://deb.debian.org/debian}"
security="${DEBIAN_SECURITY_MIRROR-$(sources_field "$suite-security")}"

command -v "$docker_cmd" >/dev/null || die "no docker client ($docker_cmd)"
"$docker_cmd" info >/dev/null 2>&1 || die "the Docker daemon does not answer (start dockerd)"

hash_of() { sha256sum | cut -c1-16; }

label_of() {
    "$docker_cmd" image inspect -f '{{ index .Config.Labels "org.sendit.local-inputs" }}' "$1" 2>/dev/null || true
}

image_id() { "$docker_cmd" image inspect -f '{{ .Id }}' "$1" 2>/dev/null || true; }

# -- base: debootstrap --variant=minbase, then docker import ---------------------------------
base_recipe() {
    cat <<EOF
recipe 2: policy-rc.d, no docs, no recommends
debootstrap --variant=minbase $suite $mirror
deb $mirror $suite main
deb $mirror $suite-updates main
${security:+deb $security $suite-security main}
EOF
}

build_base() {
    local name inputs tagged root
    name="$(image_name base)"
    inputs="$(base_recipe | hash_of)"
    tagged="$name-$inputs"
    if ! "$force" && [ -n "$(image_id "$tagged")" ]; then
        "$docker_cmd" tag "$tagged" "$name"
        say "$name is up to date ($tagged)"
        return
    fi
    [ "$(id -u)" = 0 ] || die "debootstrap needs root (sudo $0)"
    command -v debootstrap >/dev/null || die "debootstrap is missing (apt-get install debootstrap)"
    root="$(mktemp -d "${TMPDIR:-/var/tmp}/sendit-rootfs.XXXXXX")"
    # shellcheck disable=SC2064
    trap "rm -rf '$root'" EXIT
    say "debootstrap --variant=minbase $suite from $mirror (about 30 s)"
    local started=$SECONDS
    if ! debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$root.log" 2>&1; then
        tail -n 20 "$root.log" >&2
        rm -f "$root.log"
        die "debootstrap failed"
    fi
    rm -f "$root.log"
    {
        echo "deb $mirror $suite main"
        echo "deb $mirror $suite-updates main"
        [ -z "$security" ] || echo "deb $security $suite-security main"
    } >"$root/etc/apt/sources.list"
    # As Debian's own images: no recommends, no documentation, no apt caches kept.
    cat >"$root/etc/apt/apt.conf.d/90sendit-local" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
EOF
    cat >"$root/etc/dpkg/dpkg.cfg.d/90sendit-local" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/info/*
EOF
    # No service starts while a package installs (there is no init in a container).
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod 0755 "$root/usr/sbin/policy-rc.d"
    rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"* "$root/usr/share/doc" "$root/usr/share/man"
    tar --numeric-owner -C "$root" -c . | "$docker_cmd" import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["bash"]' - "$tagged" >/dev/null
    "$docker_cmd" tag "$tagged" "$name"
    rm -rf "$root"
    trap - EXIT
    say "built $name from debootstrap in $((SECONDS - started)) s"
}

# -- the stand-ins: a Dockerfile and an entry point each, built on the base -------------------
write_context() {
    # write_context SERVICE DIR: the build context of one stand-in.
    local service="$1" dir="$2" base
    base="$(image_name base)"
    case "$service" in
    nginx)
        cat >"$dir/Dockerfile" <<EOF
FROM $base
# nginx (uid/gid 101, as in the official image: docker-compose.yml's uwsgi-socket volume
# gives gid 101 the socket), then Debian's nginx; logs to the container's output.
ARG DEBIAN_FRONTEND=noninteractive
RUN groupadd --system --gid 101 nginx \\
    && useradd --system --uid 101 --gid 101 --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin nginx \\
    && apt-get update && apt-get install -y nginx wget ca-certificates \\
    && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/* \\
    && ln -sf /dev/stdout /var/log/nginx/access.log && ln -sf /dev/stderr /var/log/nginx/error.log \\
    && nginx -v
COPY entrypoint.sh /usr/local/bin/docker-entrypoint.sh
EXPOSE 80 443
STOPSIGNAL SIGQUIT
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["nginx", "-g", "daemon off;"]
EOF
        cat >"$dir/entrypoint.sh" <<'EOF'
#!/bin/sh
set -e
mkdir -p /var/lib/nginx/body /var/lib/nginx/proxy /var/lib/nginx/fastcgi /var/lib/nginx/uwsgi /var/lib/nginx/scgi
exec "$@"
EOF
        ;;
    redis)
        cat >"$dir/Dockerfile" <<EOF
FROM $base
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update && apt-get install -y redis-server \\
    && rm -rf /var/lib/apt/lists/* \\
    && mkdir -p /data && chown redis:redis /data && redis-server --version
COPY entrypoint.sh /usr/local/bin/docker-entrypoint.sh
VOLUME /data
WORKDIR /data
EXPOSE 6379
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["redis-server"]
EOF
        cat >"$dir/entrypoint.sh" <<'EOF'
#!/bin/sh
# As the official image: options alone run redis-server; redis-server gets /data and runs
# as the user redis; anything else runs as is.
set -e
case "$1" in -*|*.conf) set -- redis-server "$@" ;; esac
if [ "$1" = redis-server ] && [ "$(id -u)" = 0 ]; then
    find . \! -user redis -exec chown redis '{}' +
    umask 0077
    exec setpriv --reuid=redis --regid=redis --init-groups "$@"
fi
exec "$@"
EOF
        ;;
    postgres)
        cat >"$dir/Dockerfile" <<EOF
FROM $base
# No cluster from the package: the entry point makes one in PGDATA at the first start.
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update && apt-get install -y postgresql-common \\
    && sed -ri 's/^#? *(create_main_cluster) .*/\\1 = false/' /etc/postgresql-common/createcluster.conf \\
    && grep -q '^create_main_cluster = false' /etc/postgresql-common/createcluster.conf \\
    && apt-get install -y postgresql \\
    && rm -rf /var/lib/apt/lists/* \\
    && ln -s "\$(ls -d /usr/lib/postgresql/*/bin | tail -n 1)" /usr/lib/postgresql/bin \\
    && mkdir -p /var/lib/postgresql/data /var/run/postgresql /docker-entrypoint-initdb.d \\
    && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql \\
    && chmod 2777 /var/run/postgresql
ENV PATH=/usr/lib/postgresql/bin:\$PATH PGDATA=/var/lib/postgresql/data
COPY entrypoint.sh /usr/local/bin/docker-entrypoint.sh
VOLUME /var/lib/postgresql/data
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["postgres"]
EOF
        cat >"$dir/entrypoint.sh" <<'EOF'
#!/bin/bash
# The official image's interface: POSTGRES_PASSWORD (required unless
# POSTGRES_HOST_AUTH_METHOD=trust), POSTGRES_USER (postgres), POSTGRES_DB (the user's name),
# POSTGRES_INITDB_ARGS, PGDATA; /docker-entrypoint-initdb.d/*.sh and *.sql on the first start.
set -Eeuo pipefail
case "${1:-}" in -*) set -- postgres "$@" ;; esac
if [ "${1:-}" != postgres ]; then exec "$@"; fi
if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown -R postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 0700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$BASH_SOURCE" "$@"
fi
user="${POSTGRES_USER:-postgres}"
db="${POSTGRES_DB:-$user}"
auth="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$auth" != trust ]; then
        echo "postgres: POSTGRES_PASSWORD is not set (or set POSTGRES_HOST_AUTH_METHOD=trust)" >&2
        exit 1
    fi
    pwfile="$(mktemp)"
    printf '%s\n' "${POSTGRES_PASSWORD:-}" >"$pwfile"
    # shellcheck disable=SC2086
    initdb --username="$user" --pwfile="$pwfile" --auth-local=trust --auth-host="$auth" \
        --encoding=UTF8 --locale=C.UTF-8 ${POSTGRES_INITDB_ARGS:-} -D "$PGDATA" >/dev/null
    rm -f "$pwfile"
    {
        echo "listen_addresses = '*'"
        echo "unix_socket_directories = '/var/run/postgresql'"
    } >>"$PGDATA/postgresql.conf"
    echo "host all all all $auth" >>"$PGDATA/pg_hba.conf"
    # The first start: a server on the socket only, the database, the init scripts.
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    export PGUSER="$user" PGHOST=/var/run/postgresql
    if [ "$db" != postgres ]; then
        psql -v ON_ERROR_STOP=1 --dbname postgres -q -c "CREATE DATABASE \"$db\""
    fi
    for f in /docker-entrypoint-initdb.d/*; do
        case "$f" in
            *.sh) echo "postgres: running $f"; . "$f" ;;
            *.sql) echo "postgres: running $f"; psql -v ON_ERROR_STOP=1 --dbname "$db" -q -f "$f" ;;
        esac
    done
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    unset PGUSER PGHOST
    echo "postgres: initialised $PGDATA (user $user, database $db)"
fi
exec "$@" -D "$PGDATA"
EOF
        ;;
    orthanc)
        cat >"$dir/Dockerfile" <<EOF
FROM $base
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update && apt-get install -y orthanc python3 wget \\
    && rm -rf /var/lib/apt/lists/* \\
    && mkdir -p /var/lib/orthanc/db /etc/orthanc-docker && chown -R orthanc:orthanc /var/lib/orthanc
COPY entrypoint.sh /usr/local/bin/docker-entrypoint.sh
COPY env_to_json.py /usr/local/bin/orthanc-env-to-json
VOLUME /var/lib/orthanc/db
EXPOSE 8042 4242
HEALTHCHECK --interval=5s --timeout=5s --start-period=5s --retries=10 \\
    CMD ["sh", "-c", "wget -q -O /dev/null http://127.0.0.1:8042/system || wget -S -O /dev/null http://127.0.0.1:8042/system 2>&1 | grep -q 'HTTP/1.1 401'"]
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["Orthanc", "/etc/orthanc-docker/orthanc.json"]
EOF
        cat >"$dir/env_to_json.py" <<'EOF'
#!/usr/bin/python3
"""orthancteam/orthanc's ORTHANC__* variables as an Orthanc configuration file.
ORTHANC__DICOM_AET=X -> {"DicomAet": "X"}; ORTHANC__A__B=1 -> {"A": {"B": 1}}."""
import json, os, sys

config = {"Name": "orthanc", "StorageDirectory": "/var/lib/orthanc/db",
          "IndexDirectory": "/var/lib/orthanc/db", "RemoteAccessAllowed": True,
          "AuthenticationEnabled": True, "HttpPort": 8042, "DicomPort": 4242, "Plugins": []}

def key(word):
    return "".join(part.capitalize() for part in word.split("_"))

def value(text):
    try:
        return json.loads(text)
    except ValueError:
        return text

for name, text in sorted(os.environ.items()):
    if not name.startswith("ORTHANC__"):
        continue
    path = [key(p) for p in name[len("ORTHANC__"):].split("__")]
    node = config
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value(text)
json.dump(config, sys.stdout, indent=2)
EOF
        cat >"$dir/entrypoint.sh" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = Orthanc ]; then
    /usr/local/bin/orthanc-env-to-json >/etc/orthanc-docker/orthanc.json
    chown -R orthanc:orthanc /var/lib/orthanc/db
    exec setpriv --reuid=orthanc --regid=orthanc --init-groups "$@"
fi
exec "$@"
EOF
        ;;
    esac
    chmod 0755 "$dir/entrypoint.sh"
    [ ! -e "$dir/env_to_json.py" ] || chmod 0755 "$dir/env_to_json.py"
}

build_standin() {
    local service="$1" name dir inputs base_id started
    name="$(image_name "$service")"
    base_id="$(image_id "$(image_name base)")"
    [ -n "$base_id" ] || die "$(image_name base) is missing: build it first (scripts/local_images.sh base)"
    dir="$(mktemp -d "${TMPDIR:-/tmp}/sendit-$service.XXXXXX")"
    write_context "$service" "$dir"
    inputs="$( (echo "$base_id"; cd "$dir" && for f in *; do stat -c '%a %n' "$f"; cat "$f"; done) | hash_of)"
    if ! "$force" && [ "$(label_of "$name")" = "$inputs" ]; then
        say "$name is up to date"
        rm -rf "$dir"
        return
    fi
    echo "LABEL org.sendit.local-inputs=$inputs org.opencontainers.image.description=\"sendit's stand-in for the official $service image (Debian packages)\"" >>"$dir/Dockerfile"
    say "building $name from Debian's packages"
    started=$SECONDS
    if ! "$docker_cmd" build -q -t "$name" "$dir" >"$dir.log" 2>&1; then
        tail -n 30 "$dir.log" >&2
        rm -rf "$dir" "$dir.log"
        die "building $name failed"
    fi
    rm -rf "$dir" "$dir.log"
    say "built $name in $((SECONDS - started)) s"
}

for service in "${wanted[@]}"; do
    if [ "$service" = base ]; then
        build_base
    fi
done
for service in "${wanted[@]}"; do
    if [ "$service" != base ]; then
        [ -n "$(image_id "$(image_name base)")" ] || build_base
        build_standin "$service"
    fi
done
if "$print_env"; then
    print_variables
fi
