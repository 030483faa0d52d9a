"""Settings for Ollama Monitor, read from the environment.

Every setting has a working default, so a fresh checkout runs with no variables set. A bad value
stops the start with a message naming the variable.
"""

import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str = "") -> str:
    """The variable's value; unset and empty both mean the default."""
    return os.environ.get(name, "").strip() or default


def env_bool(name: str, default: bool = False) -> bool:
    raw = env_str(name).lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


def env_number(name: str, default: float, *, cast=float, minimum: float = 0):
    raw = env_str(name)
    if not raw:
        return default
    try:
        value = cast(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a {cast.__name__}, got {raw!r}") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {raw!r}")
    return value


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


def env_url(name: str, default: str) -> str:
    url = env_str(name, default).rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ImproperlyConfigured(f"{name} must be an http(s) URL, got {url!r}")
    return url


def env_urls(name: str, default: str) -> str:
    """One or more http(s) URLs separated by commas, each checked; kept as that string."""
    urls = [url.rstrip("/") for url in env_list(name, default)]
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ImproperlyConfigured(
                f"{name} must be http(s) URLs separated by commas, got {url!r}"
            )
    return ",".join(urls)


DATA_DIR = Path(env_str("DATA_DIR", str(BASE_DIR / "data")))
DATA_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DEBUG", False)


def _secret_key() -> str:
    """The key from SECRET_KEY, else one generated once per installation and kept in DATA_DIR.

    A generated key is random per installation, so no shared insecure default can reach
    production, and `DEBUG=0` still works with no variables set; several workers read one file.
    """
    key = env_str("SECRET_KEY")
    if key:
        return key
    path = DATA_DIR / "secret_key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


SECRET_KEY = _secret_key()
# Previous keys, still accepted for sessions, signatures and sealed API keys (proxy/sealed.py)
# after SECRET_KEY is changed.
SECRET_KEY_FALLBACKS = env_list("SECRET_KEY_FALLBACKS")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

# TLS usually ends at a front proxy; one switch turns on everything that assumes HTTPS.
HTTPS = env_bool("HTTPS", False)
if HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = int(env_number("SECURE_HSTS_SECONDS", 31536000, cast=int))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_prometheus",
    "channels",
    "proxy",
    "analytics",
    "reports",
]

MIDDLEWARE = [
    # Django's own pages only: the proxy routes and /metrics never reach Django (asgi.py).
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # WhiteNoise's, with each file streamed under ASGI (no warning, no whole file in memory).
    "ollama_monitor.static_files.StaticFiles",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "ollama_monitor.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]
ASGI_APPLICATION = "ollama_monitor.asgi.application"

DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{DATA_DIR / 'db.sqlite3'}")
try:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL)}
except ValueError as error:
    raise ImproperlyConfigured(f"DATABASE_URL is not a database URL: {error}") from None
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        # WAL lets the dashboard read while the recorder writes; IMMEDIATE avoids the
        # deadlock-prone upgrade from a read to a write transaction.
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": env_number("SQLITE_TIMEOUT", 5.0),
    }
    # A file, not the in-memory default: the proxy's writer thread and the tests share it.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test_db.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO").upper()},
    # One line per outgoing request is noise here (the demo and the tests use httpx).
    "loggers": {"httpx": {"level": "WARNING"}},
}

# --- The proxy ------------------------------------------------------------------------------

# One Ollama, or several separated by commas (proxy.backends routes by model between them).
OLLAMA_URL = env_urls("OLLAMA_URL", "http://127.0.0.1:11434")
# Health checks of every backend (Ollama `GET /` and `/api/tags`, an API's `/models`): how often,
# how long one may take, and how many failures in a row (checks or connects) take a backend out
# of routing until a check succeeds again.
BACKEND_CHECK_SECONDS = env_number("BACKEND_CHECK_SECONDS", 10.0, minimum=0.01)
BACKEND_CHECK_TIMEOUT = env_number("BACKEND_CHECK_TIMEOUT", 5.0, minimum=0.01)
BACKEND_FAILURES = int(env_number("BACKEND_FAILURES", 3, cast=int, minimum=1))
PROXY_PORT = int(env_number("PROXY_PORT", 11435, cast=int, minimum=1))
# Base64 images make chat bodies large; blob uploads (/api/blobs) stream and are not capped.
PROXY_MAX_BODY_BYTES = int(env_number("PROXY_MAX_BODY_BYTES", 100 * 1024 * 1024, cast=int))
PROXY_CONNECT_TIMEOUT = env_number("PROXY_CONNECT_TIMEOUT", 5.0)
# No total timeout: a model load can take minutes before the first byte. This bounds the
# silence between two reads instead (the OpenAI SDK waits 600 s, Ollama's load timeout is 5 min).
PROXY_IDLE_TIMEOUT = env_number("PROXY_IDLE_TIMEOUT", 600.0)
# Browser origins allowed besides Ollama's own built-ins (localhost, 127.0.0.1, app://, ...);
# same syntax as OLLAMA_ORIGINS: comma-separated, `*` wildcards, `*` alone allows every origin.
PROXY_CORS_ORIGINS = env_list("PROXY_CORS_ORIGINS")
# Trusted headers that name the user, tried in order (Open WebUI's forwarded user headers).
PROXY_USER_HEADERS = [
    header.lower()
    for header in env_list(
        "PROXY_USER_HEADERS",
        "X-OpenWebUI-User-Email,X-OpenWebUI-User-Name,X-OpenWebUI-User-Id"
        if env_bool("PROXY_TRUST_OPENWEBUI_HEADERS", False)
        else "",
    )
]
# Request headers a client names its conversation with (proxy.conversations), first found wins;
# empty: conversations are found by their history alone.
CONVERSATION_ID_HEADERS = [
    header.lower()
    for header in env_list(
        "CONVERSATION_ID_HEADERS",
        "X-Conversation-Id,X-OpenWebUI-Chat-Id"
        if env_bool("PROXY_TRUST_OPENWEBUI_HEADERS", False)
        else "X-Conversation-Id",
    )
]

# --- The recorder ---------------------------------------------------------------------------

RECORDER_QUEUE_SIZE = int(env_number("RECORDER_QUEUE_SIZE", 10000, cast=int, minimum=1))
RECORDER_BATCH_SIZE = int(env_number("RECORDER_BATCH_SIZE", 500, cast=int, minimum=1))
# How long the writer waits for more records before a transaction; 0 writes each at once.
RECORDER_BATCH_WINDOW = env_number("RECORDER_BATCH_WINDOW", 0.05)
# While it keeps up, the writer works in short pieces with rests between them, giving the
# cores and the GIL to the streams (proxy/pacing.py): a lower p99 at high request rates for
# more CPU per request. Off by default: each batch in one go (docs/benchmarks.md).
RECORDER_PACE = env_bool("RECORDER_PACE", False)
RECORDER_SPOOL_DIR = Path(env_str("RECORDER_SPOOL_DIR", str(DATA_DIR / "spool")))
# How long one batch insert may wait for the database before it goes to the spool instead.
RECORDER_DB_TIMEOUT = env_number("RECORDER_DB_TIMEOUT", 5.0)
RECORDER_RETRY_SECONDS = env_number("RECORDER_RETRY_SECONDS", 5.0)
# Text kept per message; longer prompts and responses are cut and flagged as truncated.
RECORDER_MAX_TEXT_CHARS = int(env_number("RECORDER_MAX_TEXT_CHARS", 1_000_000, cast=int))

# --- Metrics (/metrics, Prometheus) ---------------------------------------------------------

# A model name becomes a label value after a successful request, up to this many per process;
# the rest fold into `other` (a client can send any string as a model name).
METRICS_MAX_MODELS = int(env_number("METRICS_MAX_MODELS", 100, cast=int))
# The OpenTelemetry GenAI histograms (gen_ai_client_operation_duration_seconds, ...).
METRICS_GENAI = env_bool("METRICS_GENAI", True)
# How often each worker measures the database for ollama_recorder_database_size_bytes.
METRICS_DATABASE_SIZE_SECONDS = env_number("METRICS_DATABASE_SIZE_SECONDS", 60.0)
# /metrics is open (like Ollama's API) unless one of these is set; then either one opens it.
METRICS_BEARER_TOKEN = env_str("METRICS_BEARER_TOKEN")
METRICS_BASIC_AUTH = env_str("METRICS_BASIC_AUTH")
if METRICS_BASIC_AUTH and ":" not in METRICS_BASIC_AUTH:
    raise ImproperlyConfigured("METRICS_BASIC_AUTH must be user:password")
# django-prometheus counts the queries of Django's pages and of the recorder's writer.
if DATABASES["default"]["ENGINE"] in {
    "django.db.backends.sqlite3",
    "django.db.backends.postgresql",
}:
    DATABASES["default"]["ENGINE"] = DATABASES["default"]["ENGINE"].replace(
        "django.db.backends.", "django_prometheus.db.backends."
    )

# --- Analytics (the /analytics/ API) and the cache ------------------------------------------

# Optional Redis: the cache here (shared by every worker), and the channel layer once it exists.
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL and urlsplit(REDIS_URL).scheme not in {"redis", "rediss", "unix"}:
    raise ImproperlyConfigured(
        f"REDIS_URL must be a redis://, rediss:// or unix:// URL, got {REDIS_URL!r}"
    )
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
        if REDIS_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
    | {"KEY_PREFIX": "ollama-monitor"}
}
# The most messages one page of /analytics/messages returns.
ANALYTICS_MAX_LIMIT = int(env_number("ANALYTICS_MAX_LIMIT", 1000, cast=int, minimum=1))
# How long an aggregation stays cached: dashboards polling the same filters share one query.
ANALYTICS_CACHE_SECONDS = env_number("ANALYTICS_CACHE_SECONDS", 10.0)

# --- Reports (manage.py send_report, /dashboard/report/) and e-mail ------------------------

# Who gets `send_report` without --to.
REPORT_RECIPIENTS = env_list("REPORT_RECIPIENTS")
# Where readers of a mailed report reach this server: its links to the admin and dashboard.
REPORT_BASE_URL = env_url("REPORT_BASE_URL", "http://127.0.0.1:11435")
# Mailed reports quote the error texts of their example errors only when set: an upstream
# error can quote the request, and mail bypasses the content permission.
REPORT_ERROR_TEXT = env_bool("REPORT_ERROR_TEXT", False)
# Mail goes through SMTP once EMAIL_HOST is set, else it is printed on the console.
EMAIL_HOST = env_str("EMAIL_HOST")
EMAIL_BACKEND = env_str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.smtp.EmailBackend"
    if EMAIL_HOST
    else "django.core.mail.backends.console.EmailBackend",
)
EMAIL_PORT = int(env_number("EMAIL_PORT", 25, cast=int, minimum=1))
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ImproperlyConfigured("EMAIL_USE_TLS (STARTTLS) and EMAIL_USE_SSL exclude each other")
EMAIL_TIMEOUT = env_number("EMAIL_TIMEOUT", 30.0, minimum=1)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "ollama-monitor@localhost")

# --- Retention, privacy and access to the proxy (SECURITY.md) -------------------------------

# `manage.py prune_messages` without --older-than deletes messages older than this many days
# (whole UTC days); 0 keeps them forever. Archives go to RETENTION_ARCHIVE_DIR unless --archive.
RETENTION_DAYS = int(env_number("RETENTION_DAYS", 0, cast=int))
RETENTION_ARCHIVE_DIR = env_str("RETENTION_ARCHIVE_DIR")

RECORD_LEVEL_NAMES = ("full", "metadata", "none")


def env_record_levels(name: str, default: str) -> list[tuple[str, str]]:
    """`route-or-model=level` pairs, e.g. `/api/embed=metadata,llama3.2=none,*=full`."""
    levels = []
    for item in env_list(name, default):
        pattern, equals, level = item.partition("=")
        pattern, level = pattern.strip(), level.strip().lower()
        if not equals or not pattern or level not in RECORD_LEVEL_NAMES:
            raise ImproperlyConfigured(
                f"{name} must list route-or-model=full|metadata|none pairs, e.g. "
                f"'/api/embed=metadata,llama3.2=none,*=full'; got {item!r}"
            )
        levels.append((pattern, level))
    return levels


# What a message keeps, per route (`/api/embed`, `/v1/*`) or model (`llama3.2`, `qwen*`; a name
# without a tag matches every tag): full, metadata (no text), none (no message; still counted in
# the metrics). The most restrictive matching entry wins; `*` applies when none matches.
RECORD_LEVELS = env_record_levels("RECORD_LEVELS", "*=full")

# PII kinds masked in what is stored (proxy/masking.py); empty turns the built-in kinds off.
# Masking rules defined in the admin apply either way.
from proxy.masking import KINDS as PII_KINDS  # noqa: E402  (plain Python, no Django models)

PII_MASK = [kind.lower() for kind in env_list("PII_MASK", ",".join(PII_KINDS))]
if set(PII_MASK) - set(PII_KINDS):
    raise ImproperlyConfigured(
        f"PII_MASK: unknown kind(s) {', '.join(sorted(set(PII_MASK) - set(PII_KINDS)))}; "
        f"the kinds are {','.join(PII_KINDS)} (empty turns masking off)"
    )

# Proxy keys (`Authorization: Bearer omp_...`, managed in the admin or by create_proxy_key).
PROXY_REQUIRE_KEY = env_bool("PROXY_REQUIRE_KEY", False)
# How often each worker re-reads the keys (new keys are also looked up on a miss, once a second).
PROXY_KEY_REFRESH_SECONDS = env_number("PROXY_KEY_REFRESH_SECONDS", 5.0, minimum=0.05)
# Model management routes (pull, push, create, copy, delete, blobs): `all`, `admin-keys` or
# `none`. Open by default like Ollama, for admin keys only once keys are required.
PROXY_ALLOW_MANAGEMENT = env_str(
    "PROXY_ALLOW_MANAGEMENT", "admin-keys" if PROXY_REQUIRE_KEY else "all"
).lower()
if PROXY_ALLOW_MANAGEMENT not in {"all", "admin-keys", "none"}:
    raise ImproperlyConfigured(
        f"PROXY_ALLOW_MANAGEMENT must be all, admin-keys or none, got {PROXY_ALLOW_MANAGEMENT!r}"
    )
# Per key, else per client IP, on the model routes; 0 is no limit. Shared by the workers
# through the cache (Redis with REDIS_URL).
PROXY_RATE_LIMIT_RPM = int(env_number("PROXY_RATE_LIMIT_RPM", 0, cast=int))
PROXY_RATE_LIMIT_TOKENS_PER_DAY = int(env_number("PROXY_RATE_LIMIT_TOKENS_PER_DAY", 0, cast=int))

# Admin logins: this many failures for one username from one address lock it for a while.
ADMIN_LOGIN_MAX_FAILURES = int(env_number("ADMIN_LOGIN_MAX_FAILURES", 5, cast=int, minimum=1))
ADMIN_LOGIN_LOCK_SECONDS = env_number("ADMIN_LOGIN_LOCK_SECONDS", 900.0, minimum=1)
AUTHENTICATION_BACKENDS = [
    "ollama_monitor.login_throttle.ThrottleBackend",
    "django.contrib.auth.backends.ModelBackend",
]

# --- The live feed (/ws/messages/, channels) ------------------------------------------------

# In memory within one process by default; with REDIS_URL, Redis carries each new message to
# the readers connected to every worker.
CHANNEL_LAYERS = {
    "default": (
        {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [REDIS_URL]}}
        if REDIS_URL
        else {"BACKEND": "channels.layers.InMemoryChannelLayer"}
    )
}

# --- Integrations: OpenTelemetry, JSONL mirror (README) -------------------------------------

# One span per model request over OTLP/HTTP (proxy/otel.py), on by itself when an OTLP endpoint
# is set. The exporter reads the standard OTEL_EXPORTER_OTLP_* variables (endpoint, headers).
OTEL_ENABLED = env_bool(
    "OTEL_ENABLED",
    bool(env_str("OTEL_EXPORTER_OTLP_ENDPOINT") or env_str("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")),
)
OTEL_SERVICE_NAME = env_str("OTEL_SERVICE_NAME", "ollama-monitor")
# Prompt and response text in the spans (as stored: masked); off, spans carry metadata only.
OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT = env_bool(
    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", False
)
# A gzip JSONL copy of every stored message, one file per UTC day (proxy/mirror.py); empty: off.
MIRROR_DIR = env_str("MIRROR_DIR")
# Days of mirror files kept (today's included); older ones are deleted. 0: all kept.
MIRROR_KEEP_DAYS = int(env_number("MIRROR_KEEP_DAYS", 0, cast=int))
