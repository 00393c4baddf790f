"""Status pages: thin views over the models."""
from django.conf import settings
from django.db.models import Count
from django.shortcuts import get_object_or_404, render

from sendit.apps.main.models import BATCH_STATUS, Batch
from sendit.apps.watcher import daemon


def dashboard(request):
    counts = dict(Batch.objects.values_list("status").annotate(n=Count("id")))
    context = {
        "counts": [(status, counts.get(status, 0)) for status, _ in BATCH_STATUS],
        "errors": Batch.objects.filter(has_error=True).count(),
        "batches": Batch.objects.annotate(n_images=Count("images"))[:50],
        "watcher": daemon.status(),
        "deidentify": settings.DEIDENTIFY,
    }
    return render(request, "main/dashboard.html", context)


def batch_detail(request, batch_id):
    batch = get_object_or_404(Batch, pk=batch_id)
    return render(request, "main/batch.html", {"batch": batch, "images": batch.images.all()[:1000]})
