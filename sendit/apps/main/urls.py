from django.urls import path

from sendit.apps.main import views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("batches/<int:batch_id>/", views.batch_detail, name="batch"),
]
