"""Values every page template needs."""

from django.conf import settings


def sendit(request):
    return {
        "lockdown_enabled": getattr(settings, "LOCKDOWN_ENABLED", True),
        "deidentify_on": getattr(settings, "DEIDENTIFY", True),
    }
