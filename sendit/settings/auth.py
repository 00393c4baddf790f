"""Access control: django-lockdown puts the whole site behind a password."""
import os

LOCKDOWN_ENABLED = os.environ.get("LOCKDOWN_ENABLED", "true").strip().lower() in ("1", "true", "yes", "on")
