from django.urls import path

from sendit.apps.main import views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("partials/dashboard/", views.dashboard_partial, name="dashboard-partial"),
    path("batches/<int:batch_id>/", views.batch_detail, name="batch"),
    path("batches/<int:batch_id>/retry/", views.batch_retry, name="batch-retry"),
    path("batches/<int:batch_id>/resend/", views.batch_resend, name="batch-resend"),
    path("batches/<int:batch_id>/delete/", views.batch_delete, name="batch-delete"),
    path("images/<int:image_id>/", views.image_detail, name="image"),
    path("images/<int:image_id>/preview.png", views.image_preview, name="image-preview"),
    path("settings/", views.settings_page, name="settings"),
    path("logout/", views.logout, name="logout"),
]
