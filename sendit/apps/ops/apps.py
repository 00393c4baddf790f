from django.apps import AppConfig


class OpsConfig(AppConfig):
    name = "sendit.apps.ops"
    label = "ops"
