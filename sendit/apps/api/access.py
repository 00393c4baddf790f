"""Who may see the site: django-lockdown, plus API tokens for scripts.

`LockdownMiddleware` replaces lockdown's own middleware in settings.MIDDLEWARE:

- with LOCKDOWN_ENABLED false (read at request time) everything is open, as with lockdown;
- under /api/, a request with `Authorization: Token <t>` where t is one of API_TOKENS
  passes; a wrong or malformed token is refused with 401 (it never falls back to the form);
- wrong passwords and wrong tokens are counted per client address in the shared cache:
  after LOCKDOWN_MAX_FAILURES the address gets 429 until LOCKDOWN_LOCKOUT_SECONDS pass;
- under /api/, a request without token or session gets 401 JSON, unless it asks for
  HTML (a browser opening /api/docs), which gets the password form;
- the password form's POST is checked for CSRF (lockdown answers before Django's CSRF
  view check would run, so without this the form would take cross-site posts);
- everything else is lockdown's: the password form until the session holds a password.

Tokens work on /api/ only: they cannot drive the POST actions of the pages.
"""

import hmac

from django.conf import settings
from django.core.cache import cache
from django.http import HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from lockdown.middleware import LockdownMiddleware as _LockdownMiddleware

API_PREFIX = "/api/"


def _valid_token(value):
    found = False
    for token in getattr(settings, "API_TOKENS", ()):
        if len(token) >= settings.SECRET_MINIMUM["API_TOKENS"]:  # refused at start; never let in
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


def _failures_key(request, kind: str) -> str:
    """One count per kind ("password", "token") and client address (nginx's $remote_addr)."""
    return f"sendit:auth-failures:{kind}:{request.META.get('REMOTE_ADDR', 'unknown')}"


def throttled(request, kind: str = "password") -> bool:
    """Whether this address has had LOCKDOWN_MAX_FAILURES wrong ones, the last of them less
    than LOCKDOWN_LOCKOUT_SECONDS ago. Refused attempts are not counted, so the lock-out
    ends that long after the last wrong one and then the right password goes through."""
    limit = getattr(settings, "LOCKDOWN_MAX_FAILURES", 10)
    return bool(limit) and (cache.get(_failures_key(request, kind)) or 0) >= limit


def record_attempt(request, failed: bool, kind: str = "password") -> None:
    """Count a wrong one in the shared cache; a right one clears the address's count."""
    key = _failures_key(request, kind)
    if not failed:
        cache.delete(key)
        return
    window = getattr(settings, "LOCKDOWN_LOCKOUT_SECONDS", 300)
    if not cache.add(key, 1, window):
        try:
            cache.incr(key)  # atomic on Redis; good enough for a throttle on files
        except ValueError:  # expired between add and incr
            cache.add(key, 1, window)
    cache.touch(key, window)  # the window runs from the last wrong one, on every backend


def _too_many(what: str) -> HttpResponse:
    return HttpResponse(
        f"Too many wrong {what} from this address: wait a few minutes.\n", status=429, content_type="text/plain"
    )


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
                if throttled(request, "token"):
                    return _too_many("tokens")
                if _valid_token(token):
                    record_attempt(request, failed=False, kind="token")
                    request.sendit_api_token = True
                    return None
                record_attempt(request, failed=True, kind="token")
                return _unauthorized("Invalid token.")
        attempt = request.method == "POST" and "password" in request.POST
        if request.method == "POST":
            refused = CsrfViewMiddleware(lambda r: None).process_view(request, None, (), {})
            if refused is not None:
                return refused
        if attempt and throttled(request):
            return _too_many("passwords")
        response = super().process_request(request)
        if attempt:
            # The form shown again (200) means a wrong password; a redirect means it was right.
            record_attempt(request, failed=response is not None and response.status_code == 200)
        if response is not None and api and not _wants_html(request):
            return _unauthorized(
                "Authentication required: the site's password (session) or 'Authorization: Token <token>'."
            )
        if response is not None and response.status_code == 200:
            # The password form: never cached, and 403 would upset browsers' form handling.
            response["Cache-Control"] = "no-store"
        return response
