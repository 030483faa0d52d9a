"""The admin for what the proxy's writer reads: prices, category rules, proxy keys, masking rules.

The admin for recorded messages is a reading tool and lives in analytics/admin.py (the proxy
never imports analytics).
"""

from django import forms
from django.contrib import admin, messages
from django.template.response import TemplateResponse
from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache

from .backends import shown_url
from .models import (
    Backend,
    CategoryRule,
    MaskingRule,
    ModelPrice,
    ProxyKey,
)


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    """Prices apply to messages written from now on; `manage.py recompute_costs` re-prices
    the history (and its rollups)."""

    list_display = (
        "model_pattern",
        "backend",
        "input_usd_per_million",
        "output_usd_per_million",
        "usd_per_second",
        "priority",
        "enabled",
        "note",
    )
    list_editable = ("enabled",)
    ordering = ("priority", "model_pattern")


@admin.register(CategoryRule)
class CategoryRuleAdmin(admin.ModelAdmin):
    """Rules apply to messages written from now on; `manage.py recategorize` re-applies them
    to the history (header rules excepted: headers are not stored)."""

    list_display = ("priority", "category", "field", "header", "match", "pattern", "enabled")
    list_display_links = ("priority", "category")
    list_editable = ("enabled",)
    list_filter = ("field", "enabled")
    ordering = ("priority", "id")


@admin.register(ProxyKey)
class ProxyKeyAdmin(admin.ModelAdmin):
    """Keys for the proxy routes. A new key is shown once, on the page after "Save"; only its
    hash is kept. Workers notice new and revoked keys within PROXY_KEY_REFRESH_SECONDS."""

    list_display = ("prefix", "name", "user", "is_admin", "revoked", "created_at", "last_used_at")
    list_filter = ("revoked", "is_admin")
    search_fields = ("prefix", "name", "user__username")
    raw_id_fields = ("user",)
    ordering = ("-created_at",)
    actions = ("revoke",)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("user", "name", "is_admin")
        return ("prefix", "user", "name", "is_admin", "revoked", "created_at", "last_used_at")

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return ("prefix", "user", "created_at", "last_used_at")

    def save_model(self, request, obj, form, change):
        if not change:
            request.new_proxy_key = obj.new_secret()
        super().save_model(request, obj, form, change)

    @method_decorator(never_cache)
    def response_add(self, request, obj, post_url_continue=None):
        """The key itself, this once, in the page (never in a message cookie or the session)."""
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Proxy key created",
            "key": obj,
            "secret": request.new_proxy_key,
        }
        return TemplateResponse(request, "admin/proxy/proxykey/issued.html", context)

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request, queryset):
        count = queryset.filter(revoked=False).update(revoked=True)
        self.message_user(request, f"Revoked {count} key(s).", messages.SUCCESS)


@admin.register(MaskingRule)
class MaskingRuleAdmin(admin.ModelAdmin):
    """Patterns masked in recorded text besides the built-in kinds of PII_MASK; they apply to
    messages written from now on, `manage.py remask_messages` applies them to the history."""

    list_display = ("name", "pattern", "enabled")
    list_editable = ("enabled",)
    ordering = ("name",)


class BackendForm(forms.ModelForm):
    """The API key can be set or replaced, never read back: the field always renders empty."""

    url = forms.URLField(
        label="URL",
        max_length=500,
        assume_scheme="http",  # Ollama listens on plain HTTP
        help_text=Backend._meta.get_field("url").help_text,
    )
    api_key = forms.CharField(
        label="API key",
        required=False,
        max_length=500,
        widget=forms.PasswordInput(render_value=False),
        help_text="Sent as Authorization: Bearer to an OpenAI-compatible API. Never shown: "
        "leave empty to keep the stored key.",
    )
    remove_api_key = forms.BooleanField(
        label="Remove the stored API key", required=False, initial=False
    )

    class Meta:
        model = Backend
        fields = ("name", "kind", "url", "api_key", "model_names", "priority", "weight", "enabled")

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("remove_api_key"):
            cleaned["api_key"] = ""
        elif not cleaned.get("api_key"):
            cleaned["api_key"] = self.instance.api_key
        return cleaned


@admin.register(Backend)
class BackendAdmin(admin.ModelAdmin):
    """Upstreams besides OLLAMA_URL's. Workers read this table and check every backend each
    BACKEND_CHECK_SECONDS; the health columns are what the last check found."""

    form = BackendForm
    list_display = (
        "name",
        "kind",
        "address",
        "priority",
        "weight",
        "enabled",
        "healthy",
        "checked_at",
        "health_error",
        "has_api_key",
    )
    list_filter = ("kind", "enabled", "healthy")
    search_fields = ("name", "url")
    ordering = ("priority", "name")
    readonly_fields = ("healthy", "checked_at", "health_error", "models_found")
    fieldsets = (
        (None, {"fields": ("name", "kind", "url", "api_key", "remove_api_key")}),
        ("Routing", {"fields": ("model_names", "priority", "weight", "enabled")}),
        ("Health", {"fields": ("healthy", "checked_at", "health_error", "models_found")}),
    )

    @admin.display(description="URL", ordering="url")
    def address(self, backend: Backend) -> str:
        return shown_url(backend.url)

    @admin.display(description="API key", boolean=True)
    def has_api_key(self, backend: Backend) -> bool:
        return bool(backend.api_key)

    @admin.display(description="Models found")
    def models_found(self, backend: Backend) -> str:
        return ", ".join(backend.discovered_models) or "-"
