"""The watcher's heartbeat, in the database so every host and container can see it."""

from django.db import models


class Heartbeat(models.Model):
    name = models.CharField(max_length=64, unique=True)
    started = models.DateTimeField()
    beat = models.DateTimeField()
    folder = models.CharField(max_length=500, blank=True, default="")
    mode = models.CharField(max_length=16, blank=True, default="")
    host = models.CharField(max_length=255, blank=True, default="")
    stopped = models.BooleanField(default=False)
