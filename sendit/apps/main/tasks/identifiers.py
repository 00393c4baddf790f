"""Step 2: pseudonymous ids and date jitter for each patient and study of a batch."""

from celery import shared_task
from django.conf import settings

from sendit.apps.main.deidconfig import get_provider
from sendit.apps.main.models import BatchIdentifiers, Hold, Image
from sendit.apps.main.tasks.common import logger, run_step, timed_step
from sendit.deid.identifiers import IdentifierError, extract_identifiers


@shared_task(bind=True, acks_late=True, max_retries=None)
def get_identifiers(self, batch_id, lease=None):
    """Ask the provider once per batch; skip when the ids are already there.

    A late duplicate of this task (a redelivery, a sweep) finds nothing left to
    de-identify and changes nothing: a batch never goes back to PROCESSING.
    """
    run_step(self, batch_id, _get_identifiers, handed=lease, then=lambda step: step)


def _get_identifiers(batch):
    todo = Image.objects.filter(batch=batch, status__in=["NEW", "PROCESSING"]).exclude(hold=Hold.DEID)
    if not todo.exists():
        logger.info("batch=%s step=identifiers nothing to do", batch.id)
        return None
    if not settings.DEIDENTIFY:
        # Sent as it arrived: the status page says so plainly.
        Image.objects.filter(batch=batch, status__in=["NEW", "PROCESSING"]).update(status="DONEPROCESSING")
        batch.set_status("DONEPROCESSING")
        batch.update_log(deidentified=False)
        return "send"
    batch.set_status("PROCESSING")
    record = BatchIdentifiers.objects.filter(batch=batch).first()
    if record is None:
        batch.add_error(
            "identifiers",
            "the batch has images but no identities recorded at import; retry the batch to import it again",
        )
        return None
    if record.ids and len(record.ids) == len(record.identities):
        return "deidentify"
    with timed_step(batch, "identifiers", provider="dasher" if settings.DEIDENTIFY_RESTFUL else "local") as figures:
        try:
            response = get_provider().identify(record.request)
            ids = {}
            for index, identity in enumerate(record.identities):
                found = extract_identifiers(
                    response, identity["patient_id"], identity["accession"], identity["study_uid"]
                )
                ids[str(index)] = {
                    "patient_suid": found.patient_suid,
                    "study_suid": found.study_suid,
                    "jitter": found.jitter,
                }
        except IdentifierError as exc:
            figures["failed"] = True
            batch.add_error("identifiers", f"no identifiers, nothing was sent: {exc}")
            return None
        record.response, record.ids = response, ids
        record.save(update_fields=["response", "ids", "modify_date"])
        figures["identities"] = len(ids)
    return "deidentify"
