"""URLs of Ollama Monitor's own pages. Ollama's paths never reach Django (see asgi.py)."""

from django.contrib import admin
from django.urls import path

from analytics import views as analytics_views
from reports import views as report_views

from .api import api
from .login_throttle import ThrottledLoginForm

# Says when a login is locked after repeated failures (the lock itself is an auth backend).
admin.site.login_form = ThrottledLoginForm

urlpatterns = [
    path("admin/", admin.site.urls),
    path("analytics/", api.urls),
    path("dashboard/", analytics_views.dashboard, name="dashboard"),
    path("dashboard/compare/", analytics_views.compare, name="dashboard-compare"),
    path("dashboard/report/", report_views.report, name="dashboard-report"),
    path("dashboard/conversations/", analytics_views.conversations, name="dashboard-conversations"),
    path(
        "dashboard/conversations/<int:conversation_id>/",
        analytics_views.conversation,
        name="dashboard-conversation",
    ),
    path(
        "dashboard/messages/<str:message_id>/",
        analytics_views.message,
        name="dashboard-message",
    ),
]
