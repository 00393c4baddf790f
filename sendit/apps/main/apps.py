from django.apps import AppConfig


class MainConfig(AppConfig):
    name = "sendit.apps.main"
    label = "main"
    verbose_name = "Sendit"
