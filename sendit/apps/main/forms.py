"""Forms of the status pages."""

import hmac

from django import forms
from django.conf import settings
from django.utils.crypto import salted_hmac

_MARKER_SALT = "sendit.lockdown.session"


def _passwords():
    passwords = getattr(settings, "LOCKDOWN_PASSWORDS", ())
    if isinstance(passwords, str):
        passwords = (passwords,) if passwords else ()
    return tuple(p for p in passwords if p)


def session_marker(password: str) -> str:
    """What a session keeps for a password: a keyed hash (SECRET_KEY), never the password,
    so a copy of the session table gives no one the password."""
    return "marker:" + salted_hmac(_MARKER_SALT, password, algorithm="sha256").hexdigest()


def _known(value):
    """Constant-time comparison against every configured password."""
    if not isinstance(value, str) or not value:
        return False
    found = False
    for password in _passwords():
        found |= hmac.compare_digest(value.encode(), password.encode())
    return found


class LockdownForm(forms.Form):
    """django-lockdown's password form without django.contrib.auth (which sendit does not use).

    lockdown.forms imports django.contrib.auth at module level, so its own form cannot be
    loaded here. The session keeps a marker of the password (session_marker), so changing
    LOCKDOWN_PASSWORDS (or SECRET_KEY) logs everyone out, as with lockdown's own form.
    """

    password = forms.CharField(
        widget=forms.PasswordInput(attrs={"autofocus": True, "autocomplete": "current-password"})
    )

    def clean_password(self):
        value = self.cleaned_data.get("password")
        if not _known(value):
            raise forms.ValidationError("Incorrect password.")
        return value

    def generate_token(self):
        return session_marker(self.cleaned_data["password"])

    def authenticate(self, token_value):
        """Whether a session's marker is that of a configured password (constant time)."""
        if not isinstance(token_value, str) or not token_value.startswith("marker:"):
            return False  # nothing, or a password kept by an older sendit: log in again
        found = False
        for password in _passwords():
            found |= hmac.compare_digest(token_value.encode(), session_marker(password).encode())
        return found

    def show_form(self):
        return bool(_passwords())
