"""What sendit/settings/secrets.py (untracked) holds. Do not copy it as it is: a node with
DEBUG off refuses to start on its "change-me" values. Generate a real one instead:

    python scripts/make_secrets.py

Any of these can instead come from an environment variable of the same name, which wins
over secrets.py (docker compose: .env, made by scripts/setup_instance.sh).
"""

# Django's signing key, 50+ characters: python -c "import secrets; print(secrets.token_urlsafe(48))"
SECRET_KEY = "change-me"
DEBUG = False

# The password(s) of the status page (django-lockdown), 16+ characters each.
LOCKDOWN_PASSWORDS = ("change-me",)

# Keyed hash for pseudonymous UIDs and the local identifier provider, 32+ characters.
# Keep it stable: changing it changes every new UID sendit makes.
DEID_SECRET = "change-me"

# Orthanc basic auth, when Orthanc has AuthenticationEnabled.
ORTHANC_PASSWORD = ""

# DICOMweb destination credentials: DICOMWEB_AUTH=basic (with DICOMWEB_USERNAME) or bearer.
DICOMWEB_PASSWORD = ""
DICOMWEB_TOKEN = ""
