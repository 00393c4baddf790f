#!/usr/bin/env python
"""Write sendit/settings/secrets.py with freshly generated secrets (mode 0600).

For a node run without docker compose (whose .env scripts/setup_instance.sh makes).
A node with DEBUG off refuses placeholder or short secrets, such as bogus_secrets.py's
"change-me"; this makes real ones:

    python scripts/make_secrets.py            # writes sendit/settings/secrets.py
    python scripts/make_secrets.py --out PATH
    python scripts/make_secrets.py --local    # development keys in var/ (what `make run` does)

An existing file is never overwritten: DEID_SECRET must stay stable once a node has used
it (docs/security.md says how to rotate the others). Standard library only, so it runs
before the node's settings can load.
"""

import argparse
import os
import secrets
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TEMPLATE = '''"""Secrets of this node, made by scripts/make_secrets.py. Keep this file private (0600),
out of git, and backed up: DEID_SECRET must never change (docs/security.md)."""
SECRET_KEY = {secret_key!r}
DEBUG = False

# The password(s) of the status page.
LOCKDOWN_PASSWORDS = ({password!r},)

# Keyed hash of the pseudonymous UIDs and the local identifier provider.
DEID_SECRET = {deid_secret!r}

# Orthanc basic auth, when Orthanc has AuthenticationEnabled.
ORTHANC_PASSWORD = ""

# A DICOMweb destination's password (DICOMWEB_AUTH=basic) or token (bearer).
DICOMWEB_PASSWORD = ""
DICOMWEB_TOKEN = ""
'''


def make() -> dict:
    """New random values: 64 characters for the keys, 24 for the password."""
    return {
        "secret_key": secrets.token_urlsafe(48),
        "deid_secret": secrets.token_urlsafe(48),
        "password": secrets.token_urlsafe(18),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "sendit/settings/secrets.py"))
    parser.add_argument(
        "--local",
        action="store_true",
        help="make a development node's SECRET_KEY and DEID_SECRET in var/ instead "
        "(kept when they exist; used when neither the environment nor secrets.py "
        "sets them)",
    )
    args = parser.parse_args(argv)
    if args.local:
        sys.path.insert(0, str(ROOT))
        from sendit.config import make_local_secrets

        make_local_secrets(os.environ.get("VAR_DIR") or ROOT / "var")
        print("make_secrets: development keys in var/ (secret_key, deid_secret, mode 0600)")
        return 0
    out = Path(args.out)
    values = make()
    try:
        # O_EXCL: never replaces a file (a DEID_SECRET in use); 0600 from the start.
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"make_secrets: {out} exists; it is left as it is (edit it, or move it away first)", file=sys.stderr)
        return 1
    with os.fdopen(fd, "w") as handle:
        handle.write(TEMPLATE.format(**values))
    print(f"make_secrets: wrote {out} (mode 0600); the status page password is LOCKDOWN_PASSWORDS in it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
