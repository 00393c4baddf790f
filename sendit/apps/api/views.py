"""The read-only REST API: batches and images, paginated and filterable."""
from django.db.models import Count
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import viewsets
from rest_framework.exceptions import ValidationError

from sendit.apps.api.serializers import BatchSerializer, ImageSerializer
from sendit.apps.main.models import BATCH_STATUS, IMAGE_STATUS, Batch, Image

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


def _choice(request, name, choices):
    value = request.query_params.get(name)
    if value in (None, ""):
        return None
    value = value.upper()
    if value not in {c for c, _ in choices}:
        raise ValidationError({name: f"one of {', '.join(c for c, _ in choices)}"})
    return value


def _boolean(request, name):
    value = request.query_params.get(name)
    if value in (None, ""):
        return None
    if value.lower() in TRUE:
        return True
    if value.lower() in FALSE:
        return False
    raise ValidationError({name: "true or false"})


# The database's ids are 64-bit: a larger number would overflow in the query (a 500).
MAX_ID = 2 ** 63 - 1
ID_PATTERN = r"\d{1,18}"  # detail URLs: a longer id cannot exist, so it is 404, not a 500


def _integer(request, name):
    value = request.query_params.get(name)
    if value in (None, ""):
        return None
    try:
        number = int(value)
    except ValueError:
        raise ValidationError({name: "an integer"}) from None
    if not -MAX_ID <= number <= MAX_ID:
        raise ValidationError({name: "an integer of at most 19 digits"})
    return number


STATUS = OpenApiParameter("status", OpenApiTypes.STR, enum=[c for c, _ in BATCH_STATUS])
HAS_ERROR = OpenApiParameter("has_error", OpenApiTypes.BOOL)


@extend_schema_view(list=extend_schema(parameters=[STATUS, HAS_ERROR]))
class BatchViewSet(viewsets.ReadOnlyModelViewSet):
    """Batches (one study folder each), newest first."""

    serializer_class = BatchSerializer
    lookup_value_regex = ID_PATTERN
    queryset = Batch.objects.annotate(n_images=Count("images")).order_by("-id")

    def get_queryset(self):
        queryset = super().get_queryset()
        if self.action != "list":
            return queryset
        status = _choice(self.request, "status", BATCH_STATUS)
        if status:
            queryset = queryset.filter(status=status)
        has_error = _boolean(self.request, "has_error")
        if has_error is not None:
            queryset = queryset.filter(has_error=has_error)
        return queryset


@extend_schema_view(list=extend_schema(parameters=[
    OpenApiParameter("batch", OpenApiTypes.INT, description="Only the images of this batch."),
    OpenApiParameter("status", OpenApiTypes.STR, enum=[c for c, _ in IMAGE_STATUS]),
    OpenApiParameter("flagged", OpenApiTypes.BOOL, description="Only images held back (or not)."),
]))
class ImageViewSet(viewsets.ReadOnlyModelViewSet):
    """Images the node holds now (cleanup removes the rows of a delivered batch)."""

    serializer_class = ImageSerializer
    lookup_value_regex = ID_PATTERN
    queryset = Image.objects.select_related("batch").order_by("id")

    def get_queryset(self):
        queryset = super().get_queryset()
        if self.action != "list":
            return queryset
        batch = _integer(self.request, "batch")
        if batch is not None:
            queryset = queryset.filter(batch_id=batch)
        status = _choice(self.request, "status", IMAGE_STATUS)
        if status:
            queryset = queryset.filter(status=status)
        flagged = _boolean(self.request, "flagged")
        if flagged is not None:
            queryset = queryset.exclude(flagged="") if flagged else queryset.filter(flagged="")
        return queryset
