"""URLs: the status pages at /, the REST API at /api/."""

from django.urls import include, path

urlpatterns = [
    path("", include("sendit.apps.ops.urls")),
    path("api/", include("sendit.apps.api.urls")),
    path("", include("sendit.apps.main.urls")),
]
