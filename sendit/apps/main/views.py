"""Status pages: thin views over the models; the work is in tasks, retry and display."""

import base64
import datetime
import re
from pathlib import Path

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Count
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from sendit.apps.main import actions, destinations, plain, settings_doc
from sendit.apps.main.models import BATCH_STATUS, Batch, Hold, Image
from sendit.apps.main.pipeline import step_order
from sendit.apps.main.preview import Cleaning, PreviewError, header_rows, pixel_cleaning, render_png
from sendit.apps.watcher import daemon
from sendit.redact import scrub, scrub_errors

DEIDENTIFIED_STATUSES = ("DONEPROCESSING", "SENT", "DONE")
RECENT = 25
IMAGES_PER_PAGE = 200
# Throughput chart: the last hour in 12 bars of 5 minutes.
BUCKETS, BUCKET_MINUTES = 12, 5


def _when(value):
    """An ISO string of the audit log as a datetime (None when absent or odd)."""
    if not value:
        return None
    parsed = parse_datetime(str(value))
    if parsed and timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed, datetime.UTC)
    return parsed


# A step's figures as words ("CPU 0.8 s", "3 set aside"), not as the log's keys (cpu_seconds=0.8).
FIGURES = {
    "cpu_seconds": "CPU {} s",
    "images": "{} images",
    "files": "{} files",
    "problems": "{} set aside",
    "failed": "{} failed",
    "already_stored": "{} already stored",
    "destinations": "to {}",
    "provider": "identifiers from the {} provider",
}


def _figure(key: str, value: str) -> str:
    return FIGURES[key].format(value) if key in FIGURES else f"{key.replace('_', ' ')} {value}"


def _steps(batch):
    steps = batch.log.get("steps", {}) if isinstance(batch.log, dict) else {}
    rows = []
    for name, figures in steps.items():
        figures = figures if isinstance(figures, dict) else {}
        extra = [_figure(k, scrub(str(v))) for k, v in figures.items() if k not in ("seconds", "time")]
        rows.append(
            {"name": name, "seconds": figures.get("seconds"), "time": _when(figures.get("time")), "figures": extra}
        )
    rows.sort(key=lambda r: step_order(r["name"]))
    return rows


def _total_seconds(batch):
    total = 0.0
    for step in _steps(batch):
        if isinstance(step["seconds"], (int, float)):
            total += step["seconds"]
    return round(total, 2)


def throughput(now=None):
    """Images sent (and batches finished) per 5 minutes over the last hour, as SVG bar geometry."""
    now = now or timezone.now()
    start = now - datetime.timedelta(minutes=BUCKETS * BUCKET_MINUTES)
    images = [0] * BUCKETS
    batches = 0
    for log in Batch.objects.filter(modify_date__gte=start).values_list("log", flat=True)[:5000]:
        steps = log.get("steps", {}) if isinstance(log, dict) else {}
        send = steps.get("send") or {}
        when = _when(send.get("time"))
        if when and start <= when <= now:
            index = min(int((when - start).total_seconds() // (BUCKET_MINUTES * 60)), BUCKETS - 1)
            count = send.get("images")
            images[index] += count if isinstance(count, int) else 0
        finished = _when((steps.get("cleanup") or {}).get("time"))
        if finished and start <= finished <= now:
            batches += 1
    top = max(images) or 1
    width, height, gap = 24, 60, 4
    bars = []
    for i, n in enumerate(images):
        h = round(n / top * height) if n else 0
        bucket_start = start + datetime.timedelta(minutes=i * BUCKET_MINUTES)
        bars.append(
            {
                "x": i * (width + gap),
                "y": height - h,
                "w": width,
                "h": max(h, 1 if n else 0),
                "n": n,
                "start": bucket_start,
            }
        )
    return {
        "bars": bars,
        "total": sum(images),
        "batches": batches,
        "max": max(images),
        "width": BUCKETS * (width + gap) - gap,
        "height": height,
    }


def _watcher():
    status = daemon.status()
    for key in ("since", "last_seen"):
        value = status.get(key)
        if isinstance(value, (int, float)):  # a pid file's mtime
            status[key] = datetime.datetime.fromtimestamp(value, tz=datetime.UTC)
    return status


def _dashboard_context():
    counts = dict(Batch.objects.values_list("status").annotate(n=Count("id")))
    recent = list(Batch.objects.annotate(n_images=Count("images")).order_by("-id")[:RECENT])
    facts = plain.facts_of_many([batch.id for batch in recent])
    rows = []
    for batch in recent:
        imported = batch.log.get("images") if isinstance(batch.log, dict) else None
        rows.append(
            {
                "batch": batch,
                "images": imported if isinstance(imported, int) else batch.n_images,
                "held": batch.n_images,
                "errors": len(batch.errors or []),
                "seconds": _total_seconds(batch),
                "state": scrub(plain.plain_state(batch, *facts[batch.id])),
            }
        )
    return {
        "counts": [(status, counts.get(status, 0)) for status, _ in BATCH_STATUS],
        "total": sum(counts.values()),
        "with_errors": Batch.objects.filter(has_error=True).count(),
        "rows": rows,
        "watcher": _watcher(),
        "deidentify": settings.DEIDENTIFY,
        "chart": throughput(),
        "destinations": destinations.destinations_card(),
        "receiver": destinations.receiver_card(),
        "now": timezone.now(),
    }


@never_cache
@require_GET
def dashboard(request):
    return render(request, "main/dashboard.html", _dashboard_context())


@never_cache
@require_GET
def dashboard_partial(request):
    """The live part of the dashboard, fetched every few seconds by static/main/sendit.js."""
    response = render(request, "main/_dashboard_live.html", _dashboard_context())
    response["X-Sendit-Partial"] = "1"
    return response


def _destination_names(batch, images):
    names = list(batch.log.get("destinations") or []) if isinstance(batch.log, dict) else []
    for image in images:
        for name in image.destinations or {}:
            if name not in names:
                names.append(name)
    return names


def _rule_names() -> list[str]:
    """The site recipe's filter rule names ("graylist: Blank Image"), longest first: text of
    the site's recipe, never a patient value, so a page may show them as written (scrub
    would take "CR/DR" for a path)."""
    from sendit.apps.main.deidconfig import site_recipe
    from sendit.deid.burned_in import filters_of

    try:
        recipe = filters_of(site_recipe())
    except Exception:  # a recipe that does not load: the names are scrubbed like the rest
        return []
    names = {f"{group}: {rule.title}" for group, rules in recipe.filters.items() for rule in rules}
    return sorted((name for name in names if name.strip()), key=len, reverse=True)


def _plain(text: str, names: list[str]) -> str:
    """``text`` scrubbed, except the recipe's rule names in it, which stay as written."""
    text = str(text or "")
    found = [name for name in names if name in text]
    if not found:
        return scrub(text)
    parts = re.split("(" + "|".join(re.escape(name) for name in found) + ")", text)
    return "".join(part if i % 2 else scrub(part) for i, part in enumerate(parts))


def _deid_counts(log: dict, names: list[str]) -> dict:
    """The batch's deid_record counts as (count, what) pairs: the images whose pixels each
    set of rules cleaned, and what the recipe could not do as written."""
    found = log.get("deid_record")
    record: dict = found if isinstance(found, dict) else {}

    def pairs(given: object) -> list:
        counts = given if isinstance(given, dict) else {}
        ordered = sorted(counts.items(), key=lambda kv: (-_int(kv[1]), kv[0]))  # most images first
        return [(n, _plain(what, names)) for what, n in ordered]

    return {"cleaned": pairs(record.get("pixels_cleaned")), "notes": pairs(record.get("recipe_notes"))}


def _int(value) -> int:
    return value if isinstance(value, int) else 0


@never_cache
@require_GET
def batch_detail(request, batch_id):
    batch = get_object_or_404(Batch, pk=batch_id)
    images = batch.images.order_by("id")
    page = Paginator(images, IMAGES_PER_PAGE).get_page(request.GET.get("page"))
    names = _destination_names(batch, page.object_list)
    rules = _rule_names()
    rows = []
    for image in page.object_list:
        marks = []
        for name in names:
            mark = (image.destinations or {}).get(name)
            marks.append(
                {"name": name, "sent": bool(mark), "time": _when(mark.get("time")) if isinstance(mark, dict) else None}
            )
        header = image.header if isinstance(image.header, dict) else {}
        rows.append(
            {
                "image": image,
                "marks": marks,
                "flagged": _plain(image.flagged, rules),
                "cleaned": _plain(header.get("cleaned", ""), rules),
            }
        )
    log = batch.log if isinstance(batch.log, dict) else {}
    context = {
        "batch": batch,
        "page": page,
        "rows": rows,
        "destinations": names,
        "state": scrub(plain.plain_state(batch)),
        "errors": scrub_errors(
            [{**e, "message": plain.plain_error(e, batch.id)} if isinstance(e, dict) else e for e in batch.errors or []]
        ),
        # The origin is the node's own words and a client address (which scrub would take for a UID).
        "audit": [
            {
                **{k: scrub(str(entry.get(k, ""))) for k in ("time", "action", "result")},
                "origin": str(entry.get("origin", "")),
            }
            for entry in log.get("audit", [])
            if isinstance(entry, dict)
        ],
        "error_destinations": sorted(
            {
                f.destination
                for f in (
                    plain.parse_send_error(e.get("message", "")) for e in batch.errors or [] if isinstance(e, dict)
                )
                if f is not None
            }
        ),
        "previous_errors": scrub_errors(log.get("previous_errors")),
        "steps": _steps(batch),
        "deid_counts": _deid_counts(log, rules),
        "total_seconds": _total_seconds(batch),
        "status_counts": list(images.values_list("status").annotate(n=Count("id")).order_by("status")),
        "n_images": images.count(),
        "imported": log.get("images"),
        "raw": log.get("deidentified") is False,
        "notes": (
            [f"Cleanup {scrub(str(log['cleanup']))}; the files stay on this node"]
            if str(log.get("cleanup", "")).startswith("skipped")
            else []
        )
        + [scrub(str(log[k])) for k in ("pixels_note",) if log.get(k)]
        + [scrub(str(note)) for note in log.get("notes", [])],
        "retries": log.get("retries", 0),
        "can_retry": batch.has_error or batch.status != "DONE",
        "can_resend": images.filter(status__in=["SENT", "DONEPROCESSING"], hold=Hold.NONE).exists(),
    }
    return render(request, "main/batch.html", context)


@require_POST
def batch_retry(request, batch_id):
    batch = get_object_or_404(Batch, pk=batch_id)
    if not (batch.has_error or batch.status != "DONE"):
        messages.info(request, "Nothing to retry: the batch is done without errors.")
        return redirect("batch", batch_id=batch.id)
    try:
        what = actions.retry(batch, actions.page_origin(request))
    except actions.BatchInUse:
        messages.error(request, "A worker is working on this batch: retry when it has finished.")
    else:
        messages.success(request, f"Retry queued: {what or 'nothing left to do'}.")
    return redirect("batch", batch_id=batch.id)


@require_POST
def batch_resend(request, batch_id):
    """Forget where the images went and send them again (e.g. after a destination lost data)."""
    batch = get_object_or_404(Batch, pk=batch_id)
    try:
        count = actions.resend(batch, actions.page_origin(request))
    except actions.BatchInUse:
        messages.error(request, "The batch is being processed right now; try again in a moment.")
        return redirect("batch", batch_id=batch.id)
    if not count:
        messages.info(request, "No image of this batch is ready to send.")
    else:
        messages.success(request, f"Re-send queued for {count} image(s).")
    return redirect("batch", batch_id=batch.id)


@require_http_methods(["GET", "POST"])
def batch_delete(request, batch_id):
    """GET: a confirmation page. POST: remove the batch's media files and rows (never input data)."""
    batch = get_object_or_404(Batch, pk=batch_id)
    if request.method == "GET":
        folder = actions.batch_media(batch)
        return render(
            request,
            "main/batch_delete.html",
            {
                "batch": batch,
                "n_images": batch.images.count(),
                "state": scrub(plain.plain_state(batch)),
                "undelivered": batch.images.exclude(status__in=["SENT", "DONE"]).count(),
                "media": folder is not None and folder.exists(),
            },
        )
    try:
        name = actions.delete(batch, actions.page_origin(request))
    except actions.BatchInUse:
        messages.error(request, "The batch is being processed right now; try again in a moment.")
        return redirect("batch", batch_id=batch.id)
    messages.success(request, f"Batch {name} deleted (media files and records).")
    return redirect("dashboard")


def _viewable(image):
    """(show the header and pixels?, warning or reason)."""
    raw = image.batch.log.get("deidentified") is False if isinstance(image.batch.log, dict) else False
    warning = (
        "De-identification is OFF (DEIDENTIFY=false): this is the header as it arrived and may identify the patient."
    )
    if raw:
        if settings.DEIDENTIFY:
            return False, "This batch was sent without de-identification; its header is not shown."
        return True, warning
    if image.status in DEIDENTIFIED_STATUSES:
        return True, ""
    if not settings.DEIDENTIFY:
        return True, warning
    return False, (
        "Not yet de-identified: the header is shown only after de-identification, and the pixels "
        "before it only when the site recipe's filter rules clean them (the preview is then the "
        "cleaned one)."
    )


def _image_path(image):
    root = Path(settings.MEDIA_ROOT).resolve()
    path = (root / image.image).resolve()
    if root not in path.parents or not path.is_file():
        return None
    return path


def _cleaning(image, path) -> tuple[Cleaning | None, str]:
    """(what the site recipe's filter rules do to the stored file's pixels, or None; why
    it is not known). Read from the file's header (pixel_decision), and from the rule
    names the pipeline recorded when it cleaned the file."""
    from sendit.apps.main.deidconfig import site_recipe

    recorded = image.header.get("cleaned", "") if isinstance(image.header, dict) else ""
    try:
        return pixel_cleaning(path, recorded=str(recorded or ""), recipe=site_recipe()), ""
    except PreviewError as exc:
        return None, f"No preview: {exc}."
    except Exception as exc:  # a recipe that does not load: say its kind, never its text
        return None, f"No preview: the site recipe's filter rules could not be checked ({type(exc).__name__})."


def _preview_plan(image, show: bool, path) -> tuple[Cleaning | None, str]:
    """(the cleaning to draw, or None for no preview; why there is none).

    A preview is the cleaned one whenever the site recipe's rules clean the image, so it
    may be shown before de-identification or while the image is held. Otherwise pixels are
    shown only when the header is (show) and the image is not held back.
    """
    if path is None:
        return None, "The file is no longer in media."
    cleaning, why = _cleaning(image, path)
    if cleaning is None:
        return None, why
    if cleaning.hold:
        return None, (
            f"No preview: the image is held back ({_plain(cleaning.hold, _rule_names())}): "
            "the rule names no region, so nobody knows where its text is."
        )
    if cleaning.cleans:
        return cleaning, ""
    if image.flagged:
        return None, "No preview: the image is held back because its pixels may carry burned-in text."
    if not show:
        return None, ""
    return cleaning, ""


def _render(path, cleaning: Cleaning) -> bytes:
    return render_png(path, clean=cleaning.apply, outline=cleaning.outline)


@never_cache
@require_GET
def image_detail(request, image_id):
    image = get_object_or_404(Image.objects.select_related("batch"), pk=image_id)
    show, warning = _viewable(image)
    context = {
        "image": image,
        "batch": image.batch,
        "show": show,
        "warning": warning,
        "state": scrub(plain.image_state(image)),
        "batch_state": scrub(plain.plain_state(image.batch)),
        "flagged": _plain(image.flagged, _rule_names()),
        "rows": None,
        "preview": None,
        "no_preview": "",
        "cleaning": None,
        "uid": image.uid if show and not warning else None,
        "destinations": [
            (name, _when(mark.get("time")) if isinstance(mark, dict) else None)
            for name, mark in (image.destinations or {}).items()
        ],
    }
    path = _image_path(image)
    if show and path is not None:
        try:
            context["rows"] = header_rows(path)
        except Exception as exc:
            context["no_preview"] = f"The header could not be read ({type(exc).__name__})."
    cleaning, why = _preview_plan(image, show, path)
    context["no_preview"] = context["no_preview"] or why
    if cleaning is not None:
        try:
            context["preview"] = base64.b64encode(_render(path, cleaning)).decode()
        except PreviewError as exc:
            context["no_preview"] = f"No preview: the pixels could not be decoded ({exc})."
        if cleaning.cleans:
            names = _rule_names()
            log = image.batch.log if isinstance(image.batch.log, dict) else {}
            # Sent, or to be sent, as it arrived: the rules would clean it, nobody does.
            raw = not cleaning.done and (log.get("deidentified") is False or not settings.DEIDENTIFY)
            context["cleaning"] = {
                "rules": _plain(cleaning.rules, names),
                "done": cleaning.done,
                "raw": raw,
                "boxes": cleaning.boxes(),
                "unknown": [_plain(name, names) for name in cleaning.unknown],
            }
    return render(request, "main/image.html", context)


@never_cache
@require_GET
def image_preview(request, image_id):
    """The preview as a PNG file (the cleaned one when the recipe cleans the image); 404
    when it may not be shown or cannot be drawn."""
    image = get_object_or_404(Image.objects.select_related("batch"), pk=image_id)
    show, _ = _viewable(image)
    path = _image_path(image)
    cleaning, _ = _preview_plan(image, show, path)
    if cleaning is None:
        raise Http404("no preview")
    try:
        data = _render(path, cleaning)
    except PreviewError:
        raise Http404("no preview") from None
    response = HttpResponse(data, content_type="image/png")
    response["Cache-Control"] = "private, no-store"
    return response


@never_cache
@require_GET
def settings_page(request):
    return render(
        request,
        "main/settings.html",
        {"groups": settings_doc.grouped_settings(settings), "lockdown": getattr(settings, "LOCKDOWN_ENABLED", True)},
    )


@require_POST
def logout(request):
    """End the session: a POST with the CSRF token, so no link or image on another site can
    log anyone out (lockdown's own logout was any GET with ?preview-logout=1)."""
    request.session.flush()
    return redirect("dashboard")
