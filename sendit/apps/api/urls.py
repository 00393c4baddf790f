"""/api/: batches, images (with or without a trailing slash), the schema and its Swagger page;
anything else under /api/ is a JSON 404."""

from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import DefaultRouter

from sendit.apps.api import views

router = DefaultRouter()
router.trailing_slash = "/?"  # /api/batches and /api/batches/ alike
router.include_format_suffixes = False
router.register("batches", views.BatchViewSet, basename="batch")
router.register("images", views.ImageViewSet, basename="image")

app_name = "api"
urlpatterns = [
    re_path(r"^schema/?$", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves its start-up script as a file, so the page needs no inline script
    # under the site's Content-Security-Policy.
    # Sendit's own page around Swagger UI: the page's language, the site's header and a way
    # back, and colours with enough contrast (static/main/swagger.css).
    re_path(
        r"^docs/?$",
        SpectacularSwaggerSplitView.as_view(url_name="api:schema", template_name="api/swagger_ui.html"),
        name="docs",
    ),
    path("", include(router.urls)),
    re_path(r"", views.not_found),  # last: any other /api/ URL is a JSON 404
]
