"""/healthz for health checks (no lockdown) and /metrics for Prometheus (behind a token)."""

from django.http import HttpResponse, JsonResponse

from sendit.apps.ops import checks


def healthz(request):
    """200 when every part is ok, else 503; `?parts=database,broker` checks only those."""
    wanted = [p for p in request.GET.get("parts", "").split(",") if p][:10]
    parts = checks.health(wanted)
    ok = all(v == "ok" for v in parts.values())
    return JsonResponse({"status": "ok" if ok else "not ok", **parts}, status=200 if ok else 503)


def metrics(request):
    if not checks.token_ok(request):
        return HttpResponse(
            "metrics need `Authorization: Bearer <METRICS_TOKEN>`\n", status=403, content_type="text/plain"
        )
    return HttpResponse(checks.prometheus_text(), content_type="text/plain; version=0.0.4")
