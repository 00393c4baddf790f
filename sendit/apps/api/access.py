"""Who may see the site: django-lockdown, plus API tokens for scripts.

`LockdownMiddleware` replaces lockdown's own middleware in settings.MIDDLEWARE:

- with LOCKDOWN_ENABLED false (read at request time) everything is open, as with lockdown;
- under /api/, a request with `Authorization: Token <t>` where t is one of API_TOKENS
  passes; a wrong or malformed token is refused with 401 (it never falls back to the form);
- under /api/, a request without token or session gets 401 JSON, unless it asks for
  HTML (a browser opening /api/docs), which gets the password form;
- the password form's POST is checked for CSRF (lockdown answers before Django's CSRF
  view check would run, so without this the form would take cross-site posts);
- everything else is lockdown's: the password form until the session holds a password.

Tokens work on /api/ only: they cannot drive the POST actions of the pages.
"""
import hmac

from django.conf import settings
from django.http import JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from lockdown.middleware import LockdownMiddleware as _LockdownMiddleware

API_PREFIX = "/api/"


def _valid_token(value):
    found = False
    for token in getattr(settings, "API_TOKENS", ()):
        found |= hmac.compare_digest(value.encode(), token.encode())
    return found


def token_from(request):
    """The token of an `Authorization: Token <t>` header; '' when absent, None when malformed."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if not header:
        return ""
    scheme, _, value = header.partition(" ")
    if scheme.lower() not in ("token", "bearer") or not value.strip():
        return None
    return value.strip()


def _unauthorized(message):
    response = JsonResponse({"detail": message}, status=401)
    response["WWW-Authenticate"] = 'Token realm="sendit"'
    return response


def _wants_html(request):
    return "text/html" in request.META.get("HTTP_ACCEPT", "")


class LockdownMiddleware(_LockdownMiddleware):
    def process_request(self, request):
        if getattr(settings, "LOCKDOWN_ENABLED", True) is False:
            return None
        api = request.path.startswith(API_PREFIX) or request.path == API_PREFIX.rstrip("/")
        if api:
            token = token_from(request)
            if token is None:
                return _unauthorized("Malformed Authorization header: use 'Token <token>'.")
            if token:
                if _valid_token(token):
                    request.sendit_api_token = True
                    return None
                return _unauthorized("Invalid token.")
        if request.method == "POST":
            refused = CsrfViewMiddleware(lambda r: None).process_view(request, None, (), {})
            if refused is not None:
                return refused
        response = super().process_request(request)
        if response is not None and api and not _wants_html(request):
            return _unauthorized("Authentication required: the site's password (session) or "
                                 "'Authorization: Token <token>'.")
        if response is not None and response.status_code == 200:
            # The password form: never cached, and 403 would upset browsers' form handling.
            response["Cache-Control"] = "no-store"
        return response
