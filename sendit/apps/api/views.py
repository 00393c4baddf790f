"""The read-only REST API: batches and images, paginated and filterable.

Every answer an endpoint can give is in its schema: 200; 400 for a query value or id the
schema does not allow, or a query parameter it does not name (`{"<parameter>": "what it
must be"}`); 401 without session or valid token; 404 for no such id or a page past the
last; 429 after too many wrong tokens. tests/apps/api/test_schema_conformance.py checks it.
"""

from typing import Any

from django.db.models import Count, QuerySet
from django.http import HttpRequest, JsonResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import serializers, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request

from sendit.apps.api.params import boolean, choice, choice_schema, integer, integer_schema, query_value
from sendit.apps.api.serializers import BatchSerializer, ImageSerializer
from sendit.apps.main.models import BATCH_STATUS, IMAGE_STATUS, Batch, Hold, Image

BATCH_STATUSES = [c for c, _ in BATCH_STATUS]
IMAGE_STATUSES = [c for c, _ in IMAGE_STATUS]


class DetailSerializer(serializers.Serializer):
    detail = serializers.CharField()


BAD_REQUEST = OpenApiResponse(
    {
        "type": "object",
        "additionalProperties": {"type": "string"},
        "example": {"status": "one of NEW, PROCESSING, DONEPROCESSING, DONE (or in lower case)"},
    },
    description="A query value or id the schema does not allow: what each must be, by parameter.",
)
ERRORS = {
    400: BAD_REQUEST,
    401: OpenApiResponse(DetailSerializer, description="No session and no valid `Authorization: Token <token>`."),
    404: OpenApiResponse(DetailSerializer, description="No such id, or a page past the last."),
    (429, "text/plain"): OpenApiResponse(
        OpenApiTypes.STR,
        description="Too many wrong tokens from this address (LOCKDOWN_MAX_FAILURES): wait LOCKDOWN_LOCKOUT_SECONDS.",
    ),
}
ID = OpenApiParameter("id", integer_schema(), OpenApiParameter.PATH)
# The lockdown middleware is the gate (DRF's own permission is AllowAny, which drf-spectacular
# would publish as "no authentication needed"): a token, or the site's password session.
AUTH: Any = [{"Token": []}]  # drf-spectacular takes security requirement objects too


def _schema(serializer: type[serializers.Serializer], list_parameters: list[OpenApiParameter]) -> Any:
    return extend_schema_view(
        list=extend_schema(parameters=list_parameters, responses={200: serializer(many=True), **ERRORS}, auth=AUTH),
        retrieve=extend_schema(parameters=[ID], responses={200: serializer, **ERRORS}, auth=AUTH),
    )


class _ReadOnly(viewsets.ReadOnlyModelViewSet):
    # Any path segment reaches the view, so a malformed id is a 400 in JSON, not an HTML 404.
    lookup_value_regex = "[^/]+"
    filters: list[OpenApiParameter] = []  # the list's query parameters, besides page and page_size

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        """Refuse query parameters the schema does not name: a misspelt filter
        (`?has_errors=true`) would otherwise list everything as if it had been applied."""
        super().initial(request, *args, **kwargs)
        if self.action == "list":
            known = {p.name for p in self.filters} | {"page", "page_size"}
        elif self.action == "retrieve":
            known = set()
        else:
            return
        unknown = sorted(set(request.query_params) - known)
        if unknown:
            raise ValidationError({name: "not a parameter of this endpoint" for name in unknown})

    def get_object(self) -> Any:
        self.kwargs[self.lookup_field] = integer(self.kwargs[self.lookup_field], "id")
        return super().get_object()

    def query(self, name: str, read: Any, *args: Any) -> Any:
        """The query parameter `name` read by `read` (None when absent; 400 when invalid)."""
        value = query_value(self.request, name)
        return None if value is None else read(value, name, *args)


BATCH_FILTERS = [
    OpenApiParameter("status", choice_schema(BATCH_STATUSES)),
    OpenApiParameter("has_error", OpenApiTypes.BOOL),
]
IMAGE_FILTERS = [
    OpenApiParameter("batch", integer_schema(), description="Only the images of this batch."),
    OpenApiParameter("status", choice_schema(IMAGE_STATUSES)),
    OpenApiParameter("flagged", OpenApiTypes.BOOL, description="Only images held back (or not)."),
]


@_schema(BatchSerializer, BATCH_FILTERS)
class BatchViewSet(_ReadOnly):
    """Batches (one study folder each), newest first."""

    filters = BATCH_FILTERS
    serializer_class = BatchSerializer
    queryset = Batch.objects.annotate(n_images=Count("images")).order_by("-id")

    def get_queryset(self) -> QuerySet:
        queryset = super().get_queryset()
        if self.action != "list":
            return queryset
        status = self.query("status", choice, BATCH_STATUSES)
        if status is not None:
            queryset = queryset.filter(status=status)
        has_error = self.query("has_error", boolean)
        if has_error is not None:
            queryset = queryset.filter(has_error=has_error)
        return queryset


@_schema(ImageSerializer, IMAGE_FILTERS)
class ImageViewSet(_ReadOnly):
    """Images the node holds now (cleanup removes the rows of a delivered batch)."""

    filters = IMAGE_FILTERS
    serializer_class = ImageSerializer
    queryset = Image.objects.select_related("batch").order_by("id")

    def get_queryset(self) -> QuerySet:
        queryset = super().get_queryset()
        if self.action != "list":
            return queryset
        batch = self.query("batch", integer)
        if batch is not None:
            queryset = queryset.filter(batch_id=batch)
        status = self.query("status", choice, IMAGE_STATUSES)
        if status is not None:
            queryset = queryset.filter(status=status)
        flagged = self.query("flagged", boolean)
        if flagged is not None:
            queryset = queryset.exclude(hold=Hold.NONE) if flagged else queryset.filter(hold=Hold.NONE)
        return queryset


def not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    """Any other URL under /api/: 404 in JSON like the rest of the API (Django's is HTML)."""
    return JsonResponse({"detail": "Not found."}, status=404)
