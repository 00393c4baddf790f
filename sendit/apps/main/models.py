"""Batches (one study folder each), their Images, and their identifiers."""

from datetime import timedelta

from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone

from sendit.apps.main import lease


class ImageStatus(models.TextChoices):
    """Where an image is in the pipeline (the values the original sendit used)."""

    NEW = "NEW", "The image was just added to the application."
    PROCESSING = "PROCESSING", "The image is currently being processed, and has not been sent."
    DONEPROCESSING = "DONEPROCESSING", "The image is done processing, but has not been sent."
    SENT = "SENT", "The image has been sent, and verified received."
    DONE = "DONE", "The image has been received, and is ready for cleanup."


class BatchStatus(models.TextChoices):
    """Where a batch is in the pipeline (the values the original sendit used)."""

    NEW = "NEW", "The batch was just added to the application."
    PROCESSING = "PROCESSING", "The batch currently being processed."
    DONEPROCESSING = "DONEPROCESSING", "The batch is done processing"
    DONE = "DONE", "The batch is done, and images are ready for cleanup."


class Hold(models.TextChoices):
    """Why an image is held back from sending (its flag says it in words)."""

    NONE = "", "Not held: it may be sent."
    BURNED_IN = "burned_in", "Burned-in text suspected: a filter rule or the header holds it for review."
    DEID = "deid", "De-identification failed: its original is kept, it is not sent."


# (value, description) pairs, as the API's schema and the metrics list them.
IMAGE_STATUS = tuple(ImageStatus.choices)
BATCH_STATUS = tuple(BatchStatus.choices)


class Batch(models.Model):
    """One study folder, named by the folder it arrived in."""

    uid = models.CharField(max_length=255, unique=True)
    status = models.CharField(max_length=32, choices=BatchStatus.choices, default=BatchStatus.NEW, db_index=True)
    has_error = models.BooleanField(default=False, db_index=True)
    # A list of {time, step, message}; messages never carry patient values.
    errors = models.JSONField(default=list, blank=True)
    # The audit that outlives cleanup: counts, step timings, destinations. No patient data.
    log = models.JSONField(default=dict, blank=True)
    # A lease so that two workers never work on one batch at once.
    lease_owner = models.CharField(max_length=64, blank=True, default="")
    lease_until = models.DateTimeField(null=True, blank=True)
    add_date = models.DateTimeField(auto_now_add=True)
    modify_date = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "batches"

    def __str__(self):
        return f"Batch {self.id} ({self.status})"

    def add_error(self, step, message):
        """Record an error on the batch. The message must not contain patient values."""
        with transaction.atomic():
            batch = Batch.objects.select_for_update().get(pk=self.pk)
            batch.errors = list(batch.errors) + [
                {"time": timezone.now().isoformat(), "step": step, "message": str(message)}
            ]
            batch.has_error = True
            batch.save(update_fields=["errors", "has_error", "modify_date"])
        self.errors, self.has_error = batch.errors, True

    def log_step(self, step, **fields):
        """Add a step's figures (duration, counts) to the batch's audit log."""
        with transaction.atomic():
            batch = Batch.objects.select_for_update().get(pk=self.pk)
            log = dict(batch.log)
            steps = dict(log.get("steps", {}))
            steps[step] = {"time": timezone.now().isoformat(), **fields}
            log["steps"] = steps
            batch.log = log
            batch.save(update_fields=["log", "modify_date"])
        self.log = batch.log

    def update_log(self, **fields):
        """Merge top-level figures into the audit log."""
        with transaction.atomic():
            batch = Batch.objects.select_for_update().get(pk=self.pk)
            batch.log = {**batch.log, **fields}
            batch.save(update_fields=["log", "modify_date"])
        self.log = batch.log

    def add_note(self, message):
        """Record a remark that is no error (shown on the batch page), once."""
        with transaction.atomic():
            batch = Batch.objects.select_for_update().get(pk=self.pk)
            notes = list(batch.log.get("notes", []))
            if message not in notes:
                batch.log = {**batch.log, "notes": notes + [str(message)]}
                batch.save(update_fields=["log", "modify_date"])
        self.log = batch.log

    def set_status(self, status):
        Batch.objects.filter(pk=self.pk).update(status=status, modify_date=timezone.now())
        self.status = status

    def acquire(self, seconds, handed=None):
        """Take the batch's lease (a guarded UPDATE); False when a live worker holds it.

        A lease held by a process of this machine that has died is free at once. `handed`
        is the hand-over token this step was queued with: that lease is ours to take, also
        once the worker that took the step's message has reserved it (lease.reservation).
        """
        now = timezone.now()
        token = lease.owner_token()
        free = Q(lease_until__isnull=True) | Q(lease_until__lt=now)
        if self.lease_owner and lease.holder_is_dead(self.lease_owner):
            free |= Q(lease_owner=self.lease_owner)
        if handed:
            free |= Q(lease_owner=handed) | Q(lease_owner__endswith=lease.reservation_suffix(handed))
        taken = (
            Batch.objects.filter(pk=self.pk)
            .filter(free)
            .update(lease_owner=token, lease_until=now + timedelta(seconds=seconds))
        )
        if taken:
            self.lease_owner = token
        return bool(taken)

    def hand_over(self, token, seconds):
        """Give the lease, exactly as read into this object, to `token` (a queued step).

        Guarded by the owner and expiry read: when two workers recover the batch at once,
        one UPDATE matches and the other finds the row changed, so the step is queued once.
        """
        taken = Batch.objects.filter(pk=self.pk, lease_owner=self.lease_owner, lease_until=self.lease_until).update(
            lease_owner=token, lease_until=timezone.now() + timedelta(seconds=seconds)
        )
        if taken:
            self.lease_owner = token
        return bool(taken)

    def pass_on(self, token, seconds):
        """Give our lease to `token`, the hand-over of the step we queue next, so the batch
        is never free between two steps; the lease is no longer ours either way."""
        # Ours no more from here, before the UPDATE: the step's heartbeat stops renewing it.
        ours, self.lease_owner = self.lease_owner, ""
        taken = Batch.objects.filter(pk=self.pk, lease_owner=ours).update(
            lease_owner=token, lease_until=timezone.now() + timedelta(seconds=seconds)
        )
        return bool(taken)

    def renew(self, seconds):
        """Extend our lease; False when it is no longer ours (another worker took it over)."""
        if not self.lease_owner:
            return False
        return bool(
            Batch.objects.filter(pk=self.pk, lease_owner=self.lease_owner).update(
                lease_until=timezone.now() + timedelta(seconds=seconds)
            )
        )

    def release(self):
        if not self.lease_owner:  # passed on, or never taken
            return
        Batch.objects.filter(pk=self.pk, lease_owner=self.lease_owner).update(lease_owner="", lease_until=None)


class Image(models.Model):
    """One DICOM instance of a batch.

    `uid` holds the SOPInstanceUID as it arrived until de-identification replaces it
    with the new one, so the database keeps no input UID after processing.
    """

    uid = models.CharField(max_length=64)
    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="images")
    status = models.CharField(max_length=32, choices=ImageStatus.choices, default=ImageStatus.NEW, db_index=True)
    # Path relative to MEDIA_ROOT.
    image = models.CharField(max_length=500)
    # Delivery per destination: {"orthanc": {"time": ..., "remote_id": ...}}.
    destinations = models.JSONField(default=dict, blank=True)
    # Index into BatchIdentifiers.identities: which patient and study this image belongs to.
    identity = models.PositiveIntegerField(default=0)
    # A few fields of the de-identified header (UIDs, pseudonym, modality...) that the
    # send step needs; never a value of the input.
    header = models.JSONField(default=dict, blank=True)
    # Whether and why the image is held back (the state), and the reason in words for the
    # pages (never a value of the input); both empty when it may be sent.
    hold = models.CharField(max_length=16, choices=Hold.choices, default=Hold.NONE, blank=True, db_index=True)
    flagged = models.CharField(max_length=255, blank=True, default="")
    add_date = models.DateTimeField(auto_now_add=True)
    modify_date = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["batch", "uid"], name="unique_image_per_batch")]

    def __str__(self):
        return f"Image {self.id} ({self.status})"


class BatchIdentifiers(models.Model):
    """The identifier provider's response for a batch, and the ids taken from it."""

    batch = models.OneToOneField(Batch, on_delete=models.CASCADE, related_name="identifiers")
    # The distinct (patient, study) identities found at import, and the provider request.
    identities = models.JSONField(default=list)
    request = models.JSONField(default=dict)
    response = models.JSONField(default=dict)
    # {"patient_suid", "study_suid", "jitter"} per identity index (as a string key).
    ids = models.JSONField(default=dict)
    add_date = models.DateTimeField(auto_now_add=True)
    modify_date = models.DateTimeField(auto_now=True)


class LocalIdentifier(models.Model):
    """Pseudonyms of the local provider, so a patient keeps the same one.

    `key` is a keyed hash (HMAC with DEID_SECRET) of the provider's key, never the MRN or
    accession number itself (sendit.apps.main.deidconfig.row_key).
    """

    key = models.CharField(max_length=255, unique=True)
    value = models.JSONField()
