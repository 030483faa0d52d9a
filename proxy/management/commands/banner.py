"""Prints where everything is once the server starts (used by `make run`)."""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Print the URLs of the proxy, the admin and the dashboards, and how to log in."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=settings.PROXY_PORT)

    def handle(self, *args, host, port, **options):
        base = f"http://{host}:{port}"
        database = settings.DATABASES["default"]
        self.stdout.write(
            "\n".join(
                [
                    "",
                    "Ollama Monitor",
                    f"  proxy (point Ollama clients here)  {base}   e.g. OLLAMA_HOST={host}:{port}",
                    f"  OpenAI-compatible clients          {base}/v1",
                    f"  dashboard (charts, live feed)      {base}/dashboard/",
                    f"  admin (search recorded messages)   {base}/admin/",
                    f"  analytics API (OpenAPI docs)       {base}/analytics/docs",
                    f"  Prometheus metrics                 {base}/metrics",
                    f"  upstream Ollama                    {settings.OLLAMA_URL}",
                    f"  database                           {database['ENGINE'].rsplit('.', 1)[1]} "
                    f"{database['NAME']}",
                    "",
                ]
            )
        )
        if not get_user_model().objects.filter(is_superuser=True).exists():
            self.stdout.write(
                "  No admin user yet. Create one with:"
                "  .venv/bin/python manage.py createsuperuser\n"
            )
