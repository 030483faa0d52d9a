"""The admin for recorded messages: a read-only microscope."""

from django.contrib import admin

from .models import Message


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    date_hierarchy = "timestamp"
    list_display = (
        "timestamp",
        "endpoint",
        "model",
        "user",
        "status",
        "http_status",
        "input_tokens",
        "output_tokens",
        "latency_seconds",
        "ttft_seconds",
    )
    list_filter = ("status", "endpoint", "stream", "model")
    search_fields = ("request_id",)
    ordering = ("-timestamp", "-id")
    show_full_result_count = False
    list_per_page = 50

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
