"""URLs: the status pages (and, later, the REST API)."""
from django.urls import include, path

urlpatterns = [
    path("", include("sendit.apps.main.urls")),
]
