"""The dashboard page (/dashboard/): who may open it, what it says, and its link into the admin.
Its figures and table come from the analytics API with the same session (tested here for the
permissions; the API itself in test_messages.py and test_aggregations.py)."""

import importlib

import pytest
from django.apps import apps as django_apps
from django.contrib.auth.models import Group

pytestmark = pytest.mark.django_db

MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"
HOSTILE = '<script>alert("x")</script>'


@pytest.fixture
def analyst(reader):
    return reader("analyst", "view_message")


@pytest.fixture
def auditor(reader):
    return reader("auditor", "view_message", "view_message_content")


def test_anonymous_visitors_are_sent_to_the_admin_login(client, write):
    [message] = write({})
    for url in (
        "/dashboard/",
        "/dashboard/?model=llama3.2",
        f"/dashboard/messages/{message.request_id.hex}/",
    ):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/?next=/dashboard/")


def test_a_user_without_the_read_permission_is_refused(reader):
    assert reader("visitor").get("/dashboard/").status_code == 403


def test_an_analyst_gets_the_page_without_content(analyst, write):
    write({"model": "llama3.2", "category": "code"}, {"model": "qwen3", "user": "bob"})
    page = analyst.get("/dashboard/").content.decode()
    assert 'data-content="0"' in page
    assert "<option>qwen3</option>" in page
    assert "<option>code</option>" in page
    assert '<option value="bob">' in page
    assert "/static/vendor/chartjs/chart.umd.js" in page
    for canvas in (
        "chart-time",
        "chart-percentiles",
        "chart-rate",
        "chart-category",
        "chart-users",
    ):
        assert f'id="{canvas}"' in page
    assert "Why is the sky blue" not in page  # text only ever comes from the API


def test_an_auditor_gets_the_page_with_content(auditor):
    assert 'data-content="1"' in auditor.get("/dashboard/").content.decode()


def test_the_filters_of_the_url_are_kept_in_the_form(analyst, write):
    write({"model": "qwen3"})
    page = analyst.get(
        "/dashboard/", {"model": "qwen3", "search": "tides", "status": "error", "range": "7d"}
    ).content.decode()
    assert "<option selected>qwen3</option>" in page
    assert 'value="tides"' in page
    assert "<option selected>error</option>" in page
    assert '<option value="7d" selected>' in page


def test_a_bad_filter_is_explained(analyst):
    page = analyst.get("/dashboard/", {"start_time": "yesterday"}).content.decode()
    assert 'role="alert"' in page
    assert "expected epoch seconds" in page


def test_recorded_names_are_shown_as_text(analyst, write):
    write({"model": HOSTILE, "user": HOSTILE, "category": HOSTILE})
    page = analyst.get("/dashboard/", {"model": HOSTILE, "search": HOSTILE}).content.decode()
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page


def test_a_row_leads_to_the_admin_detail_page(analyst, write):
    [message] = write({})
    response = analyst.get(f"/dashboard/messages/{message.request_id.hex}/")
    assert response.status_code == 302
    assert response["Location"] == f"/admin/proxy/message/{message.pk}/change/"
    assert analyst.get("/dashboard/messages/not-an-id/").status_code == 404


PAGES = ("/dashboard/", "/dashboard/conversations/", "/dashboard/compare/", "/dashboard/report/")


@pytest.mark.parametrize("path", PAGES)
def test_every_page_has_the_same_header_with_itself_marked(analyst, path):
    page = analyst.get(path).content.decode()
    header = page[page.index('<nav aria-label="Site">') : page.index("</nav>")]
    for other in PAGES:
        current = ' aria-current="page"' if other == path else ""
        assert f'<a href="{other}"{current}>' in header
    assert header.count("aria-current") == 1
    assert 'href="/admin/proxy/message/"' in header
    assert 'href="/analytics/docs"' in header
    assert ">analyst</span>" in header
    assert 'action="/admin/logout/"' in header
    assert "/static/dashboard/common.js" in page


@pytest.mark.parametrize(("who", "shown"), [("analyst", False), ("auditor", True)])
def test_the_pages_data_with_the_session_is_masked_without_the_content_permission(
    request, who, shown, write
):
    client = request.getfixturevalue(who)
    write({"prompt": "a private question"})
    [row] = client.get("/analytics/messages").json()["messages"]
    assert (row["prompt"] == "a private question") is shown
    assert client.get("/analytics/aggregations").json()["total_messages"] == 1


def test_the_pages_data_needs_a_login(client):
    assert client.get("/analytics/messages").status_code == 401
    assert client.get("/analytics/aggregations").status_code == 401


@pytest.fixture
def groups(transactional_db):
    """The groups of migration analytics 0002 (a flush between tests removes them)."""
    migration = importlib.import_module("analytics.migrations.0002_reader_groups")
    migration.create_groups(django_apps, None)


@pytest.mark.parametrize(("group", "shown"), [("Analyst", False), ("Auditor", True)])
def test_the_groups_give_what_their_names_say(
    client, django_user_model, groups, write, group, shown
):
    user = django_user_model.objects.create_user(group.lower(), is_staff=True)
    user.groups.add(Group.objects.get(name=group))
    client.force_login(user, backend=MODEL_BACKEND)
    write({"prompt": "a private question"})
    assert client.get("/dashboard/").status_code == 200
    [row] = client.get("/analytics/messages").json()["messages"]
    assert (row["prompt"] == "a private question") is shown
    assert ("a private question" in client.get("/admin/proxy/message/").content.decode()) is shown
    assert not user.has_perm("proxy.delete_message")


def test_the_admin_group_may_delete_and_manage_prices(django_user_model, groups):
    user = django_user_model.objects.create_user("boss", is_staff=True)
    user.groups.add(Group.objects.get(name="Admin"))
    for permission in (
        "proxy.delete_message",
        "proxy.view_message_content",
        "proxy.change_modelprice",
    ):
        assert user.has_perm(permission)
