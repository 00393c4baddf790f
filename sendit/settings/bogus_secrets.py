"""Template for sendit/settings/secrets.py (untracked). Copy it and fill it in:

    cp sendit/settings/bogus_secrets.py sendit/settings/secrets.py

Any of these can instead come from an environment variable of the same name,
which wins over this file.
"""
# Django will not run without one: python -c "import secrets; print(secrets.token_urlsafe(50))"
SECRET_KEY = "change-me"
DEBUG = False

# The password(s) of the status page (django-lockdown).
LOCKDOWN_PASSWORDS = ("change-me",)

# Keyed hash for pseudonymous UIDs and the local identifier provider. Keep it stable:
# changing it changes every new UID sendit makes.
DEID_SECRET = "change-me"

# Orthanc basic auth, when Orthanc has AuthenticationEnabled.
ORTHANC_PASSWORD = ""
