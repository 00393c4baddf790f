"""Forms of the status pages."""
import hmac

from django import forms
from django.conf import settings


def _passwords():
    passwords = getattr(settings, "LOCKDOWN_PASSWORDS", ())
    if isinstance(passwords, str):
        passwords = (passwords,) if passwords else ()
    return tuple(p for p in passwords if p)


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
    loaded here. The session keeps the password as token, so changing LOCKDOWN_PASSWORDS
    logs everyone out (as with lockdown's own form).
    """

    password = forms.CharField(widget=forms.PasswordInput(attrs={"autofocus": True,
                                                                 "autocomplete": "current-password"}))

    def clean_password(self):
        value = self.cleaned_data.get("password")
        if not _known(value):
            raise forms.ValidationError("Incorrect password.")
        return value

    def generate_token(self):
        return self.cleaned_data["password"]

    def authenticate(self, token_value):
        return _known(token_value)

    def show_form(self):
        return bool(_passwords())

