"""A Content-Security-Policy on every response (Django 5.2 has no built-in one).

Pages load only the node's own scripts, styles and images (no CDN, no inline code), so
an injected script in a header value shown on a page could not run.
"""

from django.conf import settings

DEFAULT_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        policy = getattr(settings, "CONTENT_SECURITY_POLICY", DEFAULT_POLICY)
        if policy and "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = policy
        return response


class NoStoreMiddleware:
    """`Cache-Control: no-store` on every answer the application makes (the API's JSON, the
    pages, image previews): they show batch names and images, which no browser or proxy
    cache should keep. Static files are answered before this (WhiteNoise) and stay cacheable.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if "Cache-Control" not in response:
            response["Cache-Control"] = "no-store"
        return response
