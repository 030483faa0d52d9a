"""Admin logins: throttled after repeated failures per username and address, and cookies that
only travel over HTTPS in production (HTTPS=1)."""

import re

import httpx
import pytest
from django.contrib.auth import authenticate
from django.core.cache import cache
from django.test import Client, RequestFactory

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "correct horse battery"


@pytest.fixture(autouse=True)
def fresh_counts():
    """Failures are counted in the cache, which outlives a test in this process."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def staff(django_user_model, settings):
    # A fast hasher: these tests log in dozens of times (the default costs ~0.3 s a check).
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    return django_user_model.objects.create_user("staff", password=PASSWORD, is_staff=True)


def csrf_of(page) -> str:
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)


def log_in(url: str, username: str, password: str) -> httpx.Response:
    """One attempt through the admin's login form, as a browser makes it."""
    with httpx.Client(base_url=url, timeout=30) as browser:
        form = browser.get("/admin/login/")
        return browser.post(
            "/admin/login/?next=/admin/",
            data={"username": username, "password": password, "csrfmiddlewaretoken": csrf_of(form)},
        )


def logged_in(response: httpx.Response) -> bool:
    return response.status_code == 302 and "sessionid" in response.cookies


def test_five_failures_lock_the_username_even_with_the_right_password(proxy, staff):
    failures = [log_in(proxy.url, "staff", "wrong") for _ in range(5)]

    locked = log_in(proxy.url, "staff", PASSWORD)

    assert all(response.status_code == 200 for response in failures)
    assert "Please enter the correct username and password" in failures[-1].text
    assert not logged_in(locked)
    assert "Too many failed logins. Try again in 15 minute(s)." in locked.text


def test_failures_below_the_limit_are_forgotten_after_a_success(proxy, staff):
    for _ in range(4):
        log_in(proxy.url, "staff", "wrong")
    assert logged_in(log_in(proxy.url, "staff", PASSWORD))

    for _ in range(4):
        log_in(proxy.url, "staff", "wrong")

    assert logged_in(log_in(proxy.url, "staff", PASSWORD))


def test_a_lock_holds_one_username_from_one_address(proxy, staff, django_user_model):
    django_user_model.objects.create_user("other", password=PASSWORD, is_staff=True)
    for _ in range(5):
        log_in(proxy.url, "staff", "wrong")

    elsewhere = Client(REMOTE_ADDR="192.0.2.7").post(
        "/admin/login/?next=/admin/", {"username": "staff", "password": PASSWORD}
    )

    assert elsewhere.status_code == 302  # the same user from another address
    assert logged_in(log_in(proxy.url, "other", PASSWORD))  # another user from here
    assert not logged_in(log_in(proxy.url, "staff", PASSWORD))


def test_the_username_is_matched_whatever_its_case(proxy, staff):
    for name in ("staff", "STAFF", "Staff", "sTaff", "staff"):
        log_in(proxy.url, name, "wrong")

    assert not logged_in(log_in(proxy.url, "staff", PASSWORD))


def test_every_login_path_is_throttled_not_only_the_admin_form(proxy, staff):
    for _ in range(5):
        log_in(proxy.url, "staff", "wrong")
    request = RequestFactory().post("/", REMOTE_ADDR="127.0.0.1")

    assert authenticate(request, username="staff", password=PASSWORD) is None
    other = RequestFactory().post("/", REMOTE_ADDR="192.0.2.8")
    assert authenticate(other, username="staff", password=PASSWORD) == staff


def test_the_lock_runs_out(proxy_settings, start_proxy, staff, wait_until):
    proxy_settings.ADMIN_LOGIN_LOCK_SECONDS = 1
    proxy = start_proxy()
    for _ in range(5):
        log_in(proxy.url, "staff", "wrong")
    assert not logged_in(log_in(proxy.url, "staff", PASSWORD))

    wait_until(lambda: logged_in(log_in(proxy.url, "staff", PASSWORD)), timeout=5)


def test_with_https_the_session_and_csrf_cookies_are_secure_and_http_only(
    proxy_settings, start_proxy, staff
):
    # What HTTPS=1 sets (ollama_monitor/settings.py); `check --deploy` with it is in
    # test_settings.py. The SSL redirect is read once at start, so it is not under test here.
    proxy_settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    proxy_settings.SESSION_COOKIE_SECURE = True
    proxy_settings.CSRF_COOKIE_SECURE = True
    proxy = start_proxy()
    https = {"X-Forwarded-Proto": "https", "Referer": f"https://127.0.0.1:{proxy.port}/"}

    form = httpx.get(f"{proxy.url}/admin/login/", headers=https)
    token = form.cookies["csrftoken"]
    done = httpx.post(
        f"{proxy.url}/admin/login/?next=/admin/",
        data={"username": "staff", "password": PASSWORD, "csrfmiddlewaretoken": csrf_of(form)},
        headers={**https, "Cookie": f"csrftoken={token}"},
    )

    csrf_cookie = form.headers["set-cookie"]
    assert "csrftoken=" in csrf_cookie and "Secure" in csrf_cookie
    assert done.status_code == 302, done.text
    session_cookie = next(
        value for name, value in done.headers.multi_items() if value.startswith("sessionid=")
    )
    assert "Secure" in session_cookie and "HttpOnly" in session_cookie
