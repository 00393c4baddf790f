from django.apps import AppConfig


class WatcherConfig(AppConfig):
    name = "sendit.apps.watcher"
    label = "watcher"
