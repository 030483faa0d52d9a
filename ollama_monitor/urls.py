"""URLs of Ollama Monitor's own pages. Ollama's paths never reach Django (see asgi.py)."""

from django.contrib import admin
from django.urls import path

from analytics import views as analytics_views

from .api import api
from .login_throttle import ThrottledLoginForm

# Says when a login is locked after repeated failures (the lock itself is an auth backend).
admin.site.login_form = ThrottledLoginForm

urlpatterns = [
    path("admin/", admin.site.urls),
    path("analytics/", api.urls),
    path("dashboard/", analytics_views.dashboard, name="dashboard"),
    path(
        "dashboard/messages/<str:message_id>/",
        analytics_views.message,
        name="dashboard-message",
    ),
]
