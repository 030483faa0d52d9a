"""URLs of Ollama Monitor's own pages. Ollama's paths never reach Django (see asgi.py)."""

from django.contrib import admin
from django.urls import path

urlpatterns = [
    path("admin/", admin.site.urls),
]
