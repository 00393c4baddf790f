"""WSGI entry point for uwsgi."""

from django.core.wsgi import get_wsgi_application

from sendit.config import start

start()


def refuse_uwsgi_variables(app):
    """Answer 400, without reading the body, to a request carrying a UWSGI_* variable.

    uwsgi acts on such "magic" variables of the uwsgi protocol (UWSGI_FILE, UWSGI_SCRIPT,
    UWSGI_POSTFILE, UWSGI_SETENV, ...). nginx never sends one (a client's header becomes
    HTTP_*), so a request that has one did not come from nginx. uwsgi.ini's max-apps = 1
    stops the loading of another application, which happens in uwsgi's C code before this
    runs; here the rest is refused: a file opened by UWSGI_POSTFILE is never read as a body.
    """

    def guarded(environ, start_response):
        if any(key.startswith("UWSGI_") for key in environ):
            start_response("400 Bad Request", [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", "12")])
            return [b"Bad request\n"]
        return app(environ, start_response)

    return guarded


application = refuse_uwsgi_variables(get_wsgi_application())
