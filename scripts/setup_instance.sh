#!/usr/bin/env bash
# Prepare a Debian or Ubuntu host to run sendit with `docker compose up -d`:
#   1. Docker Engine and the compose plugin (Docker's apt repository), when missing;
#   2. a `sendit` group (gid 10001, the image's user) and the data and media folders,
#      group-writable so a DICOM receiver in that group can drop studies into data/;
#   3. .env next to docker-compose.yml, mode 0600, with a generated SECRET_KEY,
#      DEID_SECRET, lockdown password and database and Redis passwords (and the
#      DATABASE_URL and CELERY_BROKER_URL that use them). An existing
#      .env is kept; only missing keys are added (never a key changed: DEID_SECRET
#      must stay stable, see docs/configuration.md).
#
# Usage (from the checkout, e.g. /opt/sendit):
#   sudo scripts/setup_instance.sh                 everything above
#   scripts/setup_instance.sh --env-only           only .env (no root needed)
#   sudo scripts/setup_instance.sh --dry-run       print what would be done
# Options: --dir DIR (the checkout; default: this script's parent folder),
#          --user NAME (also add NAME to the sendit group), --uid N / --gid N (default 10001).
# Safe to run again.
set -euo pipefail

dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
env_only=false
dry_run=false
add_user=""
sendit_uid=10001
sendit_gid=10001

usage() { sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [ "$#" -gt 0 ]; do
    case "$1" in
        --env-only) env_only=true ;;
        --dry-run) dry_run=true ;;
        --dir) dir="$2"; shift ;;
        --user) add_user="$2"; shift ;;
        --uid) sendit_uid="$2"; shift ;;
        --gid) sendit_gid="$2"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "setup_instance: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

say() { echo "setup_instance: $*"; }

run() {
    if "$dry_run"; then
        echo "+ $*"
    else
        "$@"
    fi
}

random_hex() {
    # $1 bytes of randomness as hex: safe in .env files, URLs and shell.
    od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'
}

install_docker() {
    if command -v docker >/dev/null && docker compose version >/dev/null 2>&1; then
        say "Docker and the compose plugin are installed ($(docker compose version --short 2>/dev/null || echo present))"
        return
    fi
    # Debian's own engine and docker-compose 1.29 (apt-get install docker.io docker-compose)
    # run docker-compose.yml too (docs/setup.md): use them, do not add Docker's repository.
    if command -v docker >/dev/null && command -v docker-compose >/dev/null; then
        say "Docker and docker-compose are installed ($(docker-compose version --short 2>/dev/null || echo present)); use docker-compose where the docs say docker compose"
        return
    fi
    # shellcheck disable=SC1091
    . /etc/os-release
    case "${ID:-}" in
        debian|ubuntu) ;;
        *) echo "setup_instance: this script knows Debian and Ubuntu, not '${ID:-unknown}'; install Docker by hand" >&2; exit 1 ;;
    esac
    say "installing Docker Engine and the compose plugin from download.docker.com ($ID $VERSION_CODENAME)"
    export DEBIAN_FRONTEND=noninteractive
    run apt-get update -qq
    run apt-get install -y -qq ca-certificates curl
    run install -m 0755 -d /etc/apt/keyrings
    run curl -fsSL "https://download.docker.com/linux/$ID/gpg" -o /etc/apt/keyrings/docker.asc
    run chmod a+r /etc/apt/keyrings/docker.asc
    local line
    line="deb [arch=$(dpkg --print-architecture) signed-by=/etc/apt/keyrings/docker.asc] https://download.docker.com/linux/$ID $VERSION_CODENAME stable"
    if "$dry_run"; then
        echo "+ echo '$line' > /etc/apt/sources.list.d/docker.list"
    else
        echo "$line" >/etc/apt/sources.list.d/docker.list
    fi
    run apt-get update -qq
    run apt-get install -y -qq docker-ce docker-ce-cli containerd.io docker-buildx-plugin docker-compose-plugin
    run systemctl enable --now docker
}

prepare_folders() {
    if ! getent group sendit >/dev/null; then
        say "creating group sendit (gid $sendit_gid, the container user's group)"
        run groupadd --gid "$sendit_gid" sendit
    fi
    if [ -n "$add_user" ]; then
        run usermod -aG sendit "$add_user"
    fi
    local folder
    for folder in data media https/certs https/acme; do
        run mkdir -p "$dir/$folder"
    done
    # The containers run as uid/gid 10001: they move files out of data/ into media/.
    # setgid keeps new study folders in the sendit group; a receiver with umask 002 in
    # that group writes folders the worker can empty and remove.
    run chown "$sendit_uid:$sendit_gid" "$dir/data" "$dir/media"
    run chmod 2775 "$dir/data"
    run chmod 2770 "$dir/media"
    run chmod 0700 "$dir/https/certs"
    say "data folder: $dir/data (drop studies as NAME.tmpXXX, rename to NAME when complete)"
}

write_env() {
    local env_file="$dir/.env"
    local added=()
    if "$dry_run"; then
        echo "+ write $env_file (mode 0600): SECRET_KEY DEID_SECRET LOCKDOWN_PASSWORDS POSTGRES_PASSWORD REDIS_PASSWORD DATABASE_URL CELERY_BROKER_URL ALLOWED_HOSTS WORKER_CONCURRENCY"
        return
    fi
    (umask 077 && touch "$env_file")
    chmod 0600 "$env_file"
    if [ ! -s "$env_file" ]; then
        cat >>"$env_file" <<EOF
# sendit settings and secrets for docker compose (docs/configuration.md lists them all).
# Keep this file private (mode 0600) and backed up: DEID_SECRET must never change.
EOF
    fi
    add() {
        # Add KEY=VALUE unless KEY is already set.
        if ! grep -q "^$1=" "$env_file"; then
            echo "$1=$2" >>"$env_file"
            added+=("$1")
        fi
    }
    value_of() { sed -n "s/^$1=//p" "$env_file" | tail -n 1; }
    local host
    host="$(hostname -f 2>/dev/null || hostname)"
    add SECRET_KEY "$(random_hex 32)"
    add DEID_SECRET "$(random_hex 32)"
    add LOCKDOWN_PASSWORDS "$(random_hex 12)"
    add POSTGRES_PASSWORD "$(random_hex 24)"
    add REDIS_PASSWORD "$(random_hex 24)"
    # docker-compose.yml's postgres and redis services, with the passwords above (a worker
    # host points them at the main host instead: docs/scaling.md).
    add DATABASE_URL "postgres://sendit:$(value_of POSTGRES_PASSWORD)@postgres:5432/sendit"
    add CELERY_BROKER_URL "redis://:$(value_of REDIS_PASSWORD)@redis:6379/0"
    add ALLOWED_HOSTS "$host,localhost,127.0.0.1"
    add WORKER_CONCURRENCY "$(nproc 2>/dev/null || echo 4)"
    add ORTHANC_URL "http://orthanc:8042"
    if [ "${#added[@]}" -gt 0 ]; then
        say "wrote ${added[*]} to $env_file (mode 0600)"
    else
        say "$env_file already has every key; nothing changed"
    fi
    say "the status page password is LOCKDOWN_PASSWORDS in $env_file"
}

if "$env_only"; then
    write_env
    exit 0
fi

if [ "$(id -u)" != 0 ] && ! "$dry_run"; then
    echo "setup_instance: run as root (sudo), or use --env-only to write .env alone" >&2
    exit 1
fi
install_docker
prepare_folders
write_env
say "done. Next: cd $dir && docker compose up -d   (docs/start.md)"
