#!/usr/bin/env bash
# Put a TLS certificate where docker-compose.yml mounts it into nginx from the host:
# OUT/fullchain.pem and OUT/privkey.pem (OUT defaults to https/certs in the checkout).
# The first `docker compose up` leaves a self-signed one there: replace it with --force.
#
#   scripts/generate_certs.sh --self-signed [--domain NAME] [--days N]
#       a self-signed certificate (browsers warn; fine for a test or an internal node)
#   scripts/generate_certs.sh --existing CERT.pem KEY.pem
#       install a certificate from your institution's CA (CERT must hold the full chain)
#   sudo scripts/generate_certs.sh --letsencrypt --domain NAME --email ADDRESS [--webroot]
#       a real certificate from Let's Encrypt with certbot. Without --webroot, certbot
#       listens on port 80 itself (stop nginx first: docker compose stop nginx). With
#       --webroot, the running https nginx answers the challenge from https/acme.
#       A renewal hook copies renewed files into OUT and reloads nginx.
# Options: --out DIR, --force (replace an existing certificate), --if-missing (leave an
# existing certificate as it is and succeed: docker-compose.yml's `certs` service runs
# `--self-signed --if-missing` at every start, so a node has a certificate from the first
# start and one you put there later is never replaced).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/https/certs"
mode=""
domain="$(hostname -f 2>/dev/null || hostname)"
days=825
email=""
webroot=false
force=false
if_missing=false
cert_in=""
key_in=""

usage() { sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die() { echo "generate_certs: $*" >&2; exit 1; }
say() { echo "generate_certs: $*"; }

while [ "$#" -gt 0 ]; do
    case "$1" in
        --self-signed) mode=self-signed ;;
        --letsencrypt) mode=letsencrypt ;;
        --existing) mode=existing; cert_in="${2:-}"; key_in="${3:-}"; shift 2 ;;
        --domain) domain="$2"; shift ;;
        --days) days="$2"; shift ;;
        --email) email="$2"; shift ;;
        --webroot) webroot=true ;;
        --out) out="$2"; shift ;;
        --force) force=true ;;
        --if-missing) if_missing=true ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option $1" ;;
    esac
    shift
done
[ -n "$mode" ] || { usage >&2; die "choose --self-signed, --existing or --letsencrypt"; }

mkdir -p "$out"
chmod 0700 "$out"
if [ -e "$out/fullchain.pem" ] && "$if_missing" && ! "$force"; then
    say "keeping the certificate in $out: $(openssl x509 -in "$out/fullchain.pem" -noout -subject -enddate | tr '\n' ' ')"
    exit 0
fi
if [ -e "$out/fullchain.pem" ] && ! "$force"; then
    die "$out/fullchain.pem exists; use --force to replace it"
fi

install_pair() {
    # install_pair CERT KEY: copy into OUT with safe permissions, check they match.
    local cert="$1" key="$2"
    [ -r "$cert" ] || die "cannot read certificate $cert"
    [ -r "$key" ] || die "cannot read key $key"
    openssl x509 -in "$cert" -noout >/dev/null 2>&1 || die "$cert is not a PEM certificate"
    local cert_pub key_pub
    cert_pub="$(openssl x509 -in "$cert" -noout -pubkey | openssl sha256)"
    key_pub="$(openssl pkey -in "$key" -pubout | openssl sha256)"
    [ "$cert_pub" = "$key_pub" ] || die "the key does not belong to the certificate"
    install -m 0644 "$cert" "$out/fullchain.pem"
    install -m 0600 "$key" "$out/privkey.pem"
}

case "$mode" in
    self-signed)
        command -v openssl >/dev/null || die "openssl is missing (apt-get install openssl)"
        tmp="$(mktemp -d)"
        trap 'rm -rf "$tmp"' EXIT
        san="DNS:$domain,DNS:localhost,IP:127.0.0.1"
        openssl req -x509 -newkey rsa:3072 -sha256 -nodes -days "$days" \
            -keyout "$tmp/privkey.pem" -out "$tmp/fullchain.pem" \
            -subj "/CN=$domain/O=sendit" -addext "subjectAltName=$san" \
            -addext "keyUsage=critical,digitalSignature,keyEncipherment" \
            -addext "extendedKeyUsage=serverAuth" 2>/dev/null
        install_pair "$tmp/fullchain.pem" "$tmp/privkey.pem"
        say "self-signed certificate for $domain ($san), valid $days days, in $out"
        ;;
    existing)
        if [ -z "$cert_in" ] || [ -z "$key_in" ]; then
            die "--existing needs CERT.pem and KEY.pem"
        fi
        install_pair "$cert_in" "$key_in"
        say "installed $(openssl x509 -in "$out/fullchain.pem" -noout -subject) in $out"
        ;;
    letsencrypt)
        [ "$(id -u)" = 0 ] || die "--letsencrypt needs root (certbot writes /etc/letsencrypt)"
        [ -n "$email" ] || die "--letsencrypt needs --email (Let's Encrypt's expiry notices)"
        if ! command -v certbot >/dev/null; then
            say "installing certbot"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq certbot >/dev/null
        fi
        # Renewals copy the new files where nginx reads them and reload it.
        hook="/etc/letsencrypt/renewal-hooks/deploy/sendit-$domain.sh"
        mkdir -p "$(dirname "$hook")"
        cat >"$hook" <<EOF
#!/bin/sh
# Written by sendit's scripts/generate_certs.sh: copy renewed certificates for nginx.
set -e
[ "\$RENEWED_LINEAGE" = "/etc/letsencrypt/live/$domain" ] || exit 0
install -m 0644 "\$RENEWED_LINEAGE/fullchain.pem" "$out/fullchain.pem"
install -m 0600 "\$RENEWED_LINEAGE/privkey.pem" "$out/privkey.pem"
cd "$root" && docker compose exec -T nginx nginx -s reload || true
EOF
        chmod 0755 "$hook"
        args=(certonly --non-interactive --agree-tos --email "$email" -d "$domain")
        if "$webroot"; then
            mkdir -p "$root/https/acme"
            args+=(--webroot -w "$root/https/acme")
        else
            args+=(--standalone)
        fi
        certbot "${args[@]}"
        install_pair "/etc/letsencrypt/live/$domain/fullchain.pem" "/etc/letsencrypt/live/$domain/privkey.pem"
        say "Let's Encrypt certificate for $domain in $out; certbot's timer renews it"
        ;;
esac
say "start (or reload) nginx: docker compose up -d (a running one: docker compose exec nginx nginx -s reload)"
