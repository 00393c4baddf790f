"""What the API shows of a Batch and an Image: no identifier, messages scrubbed."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.reverse import reverse

from sendit.apps.main.models import Batch, Image
from sendit.apps.main.plain import image_state, plain_error, plain_state
from sendit.redact import scrub, scrub_errors

# An Image's uid is the input SOPInstanceUID until de-identification replaces it.
DEIDENTIFIED_STATUSES = ("DONEPROCESSING", "SENT", "DONE")


class ErrorSerializer(serializers.Serializer):
    time = serializers.CharField()
    step = serializers.CharField()
    message = serializers.CharField()


class BatchSerializer(serializers.ModelSerializer):
    name = serializers.CharField(source="uid", help_text="The study folder's name.")
    images = serializers.SerializerMethodField(help_text="Images the node holds now (0 after cleanup).")
    images_imported = serializers.SerializerMethodField(help_text="Images imported (kept in the audit log).")
    state = serializers.SerializerMethodField(
        help_text='The batch\'s state in plain words, beside its status (e.g. "Delivered and cleaned up", '
        '"Stopped: Orthanc is not answering; 3 images wait on this node"). Read-only.'
    )
    errors = serializers.SerializerMethodField()
    log = serializers.SerializerMethodField(help_text="The audit log: step timings, destinations, counts.")
    url = serializers.SerializerMethodField()
    images_url = serializers.SerializerMethodField()

    class Meta:
        model = Batch
        fields = [
            "id",
            "name",
            "status",
            "state",
            "has_error",
            "errors",
            "images",
            "images_imported",
            "log",
            "add_date",
            "modify_date",
            "url",
            "images_url",
        ]

    @extend_schema_field(OpenApiTypes.INT)
    def get_images(self, batch):
        n = getattr(batch, "n_images", None)
        return n if n is not None else batch.images.count()

    @extend_schema_field(serializers.IntegerField(allow_null=True))  # null: not imported yet
    def get_images_imported(self, batch):
        value = batch.log.get("images") if isinstance(batch.log, dict) else None
        return value if isinstance(value, int) else None

    @extend_schema_field(OpenApiTypes.STR)
    def get_state(self, batch):
        return scrub(plain_state(batch))

    @extend_schema_field(ErrorSerializer(many=True))
    def get_errors(self, batch):
        return scrub_errors(
            [{**e, "message": plain_error(e, batch.id)} if isinstance(e, dict) else e for e in batch.errors or []]
        )

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_log(self, batch):
        return scrub(batch.log or {})

    @extend_schema_field(OpenApiTypes.URI)
    def get_url(self, batch):
        return reverse("api:batch-detail", args=[batch.id], request=self.context.get("request"))

    @extend_schema_field(OpenApiTypes.URI)
    def get_images_url(self, batch):
        return reverse("api:image-list", request=self.context.get("request")) + f"?batch={batch.id}"


class ImageSerializer(serializers.ModelSerializer):
    uid = serializers.SerializerMethodField(
        help_text="The de-identified SOPInstanceUID; null before de-identification (the input UID is never shown)."
    )
    deidentified = serializers.SerializerMethodField()
    state = serializers.SerializerMethodField(help_text="The image's state in plain words, beside its status.")
    url = serializers.SerializerMethodField()

    class Meta:
        model = Image
        fields = [
            "id",
            "batch",
            "status",
            "state",
            "uid",
            "deidentified",
            "destinations",
            "hold",
            "flagged",
            "add_date",
            "modify_date",
            "url",
        ]

    def _deidentified(self, image):
        return image.status in DEIDENTIFIED_STATUSES and image.batch.log.get("deidentified") is not False

    @extend_schema_field(OpenApiTypes.STR)
    def get_state(self, image):
        return scrub(image_state(image))

    @extend_schema_field(OpenApiTypes.BOOL)
    def get_deidentified(self, image):
        return self._deidentified(image)

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_uid(self, image):
        return image.uid if self._deidentified(image) else None

    @extend_schema_field(OpenApiTypes.URI)
    def get_url(self, image):
        return reverse("api:image-detail", args=[image.id], request=self.context.get("request"))

    def to_representation(self, image):
        data = super().to_representation(image)
        data["flagged"] = scrub(data["flagged"])
        data["destinations"] = scrub(data["destinations"])
        return data
