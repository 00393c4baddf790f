"""/healthz for health checks (no lockdown) and /metrics for Prometheus (behind a token)."""
from django.http import HttpResponse, JsonResponse

from sendit.apps.ops import checks


def healthz(request):
    """200 when every part is ok, else 503; `?parts=database,broker` narrows the check."""
    parts = checks.health()
    wanted = [p for p in request.GET.get("parts", "").split(",") if p]
    if wanted:
        parts = {name: parts.get(name, "not ok") for name in wanted}
    ok = all(v == "ok" for v in parts.values())
    return JsonResponse({"status": "ok" if ok else "not ok", **parts}, status=200 if ok else 503)


def metrics(request):
    if not checks.token_ok(request):
        return HttpResponse("metrics need `Authorization: Bearer <METRICS_TOKEN>`\n", status=403,
                            content_type="text/plain")
    return HttpResponse(checks.prometheus_text(), content_type="text/plain; version=0.0.4")
