from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "sendit.apps.api"
    label = "api"
    verbose_name = "Sendit REST API"
