"""/dashboard/report/: who may open it, any date range shown or downloaded (HTML, CSV), 400 on
a bad range, error texts only with the content permission; and over real HTTP."""

import csv
import io
import re
from datetime import timedelta

import httpx
import ollama
import pytest
from django.utils import timezone

from analytics.tests.conftest import PASSWORD, make_user
from proxy.models import Message

from .conftest import local
from .test_report import failure, llama

pytestmark = pytest.mark.django_db

HOUR = timedelta(hours=1)


@pytest.fixture
def analyst(reader):
    return reader("analyst", "view_message")


@pytest.fixture
def auditor(reader):
    return reader("auditor", "view_message", "view_message_content")


@pytest.fixture
def spike(write):
    """Monday 2 March 2026 (Berlin): a spike of 3 errors at 14:00 among 6 chats at 9:00."""
    write(
        *(llama(local(2026, 3, 2, 9, minute)) for minute in range(6)),
        *(failure(local(2026, 3, 2, 14, minute)) for minute in range(3)),
    )


def test_anonymous_visitors_are_sent_to_the_login_and_others_need_the_permission(client, reader):
    response = client.get("/dashboard/report/?format=csv")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/?next=/dashboard/report/")
    reader("visitor")
    assert client.get("/dashboard/report/").status_code == 403
    assert client.get("/dashboard/report/?format=csv").status_code == 403


def test_the_dashboard_links_to_the_reports(analyst):
    assert 'href="/dashboard/report/"' in analyst.get("/dashboard/").content.decode()


def test_an_analyst_sees_any_date_range_with_charts_and_links(analyst, spike):
    page = analyst.get("/dashboard/report/", {"start": "2026-03-02", "end": "2026-03-02"})
    assert page.status_code == 200
    text = page.content.decode()
    assert "Ollama Monitor report: 2 March 2026" in text
    assert text.count('src="data:image/png;base64,') == 3
    assert 'class="report-spike"' in text
    assert 'href="http://testserver/admin/proxy/message/' in text
    assert "model runner crashed" not in text  # error texts need the content permission
    assert 'href="?start=2026-03-02&amp;end=2026-03-02&amp;format=csv"' in text
    assert 'value="2026-03-02"' in text


def test_an_auditor_sees_the_error_texts(auditor, spike):
    text = auditor.get("/dashboard/report/?start=2026-03-02&end=2026-03-02").content.decode()
    assert "model runner crashed" in text


def test_the_report_downloads_as_csv_and_as_a_standalone_html_file(analyst, spike):
    query = {"start": "2026-03-02", "end": "2026-03-02"}
    response = analyst.get("/dashboard/report/", {**query, "format": "csv"})
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == (
        'attachment; filename="ollama-monitor-report-20260302-custom.csv"'
    )
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert (rows[0]["section"], rows[0]["messages"], rows[0]["errors"]) == ("total", "9", "3")

    response = analyst.get("/dashboard/report/", {**query, "format": "html"})
    assert response["Content-Disposition"].endswith('-custom.html"')
    document = response.content.decode()
    assert document.startswith("<!doctype html>")
    assert document.count('src="data:image/png;base64,') == 3
    assert "cid:" not in document


def test_without_a_range_it_shows_the_last_period(analyst, spike, monkeypatch):
    moment = local(2026, 3, 3, 6, 0)
    monkeypatch.setattr(timezone, "now", lambda: moment)
    text = analyst.get("/dashboard/report/").content.decode()
    assert "Ollama Monitor report: Monday 2 March 2026" in text
    assert '<option value="day" selected>' in text
    text = analyst.get("/dashboard/report/?period=month").content.decode()
    assert "Ollama Monitor report: February 2026" in text


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"start": "2026-03-05", "end": "2026-03-01"}, "start must be before end"),
        ({"start": "2026-03-05"}, "end is missing"),
        ({"start": "tomorrow", "end": "2026-03-06"}, "start must be a date"),
        ({"period": "year"}, "period must be one of day, week, month"),
        ({"format": "pdf"}, "format must be one of page, html, csv"),
    ],
)
def test_a_bad_range_is_a_400_that_says_why(analyst, query, message):
    response = analyst.get("/dashboard/report/", query)
    assert response.status_code == 400
    text = response.content.decode()
    assert 'role="alert"' in text
    assert message in text


@pytest.mark.django_db(transaction=True)
def test_the_report_of_messages_recorded_through_the_proxy_over_http(
    start_proxy, django_user_model, wait_until
):
    """Real clients end to end: ollama's client through the proxy, then a browser-like session
    that logs into the admin and downloads the CSV of the report of the last and next hour."""
    server = start_proxy()
    client = ollama.Client(host=server.url)
    for _ in range(3):
        client.chat(model="llama3.2", messages=[{"role": "user", "content": "Hello"}])
    wait_until(lambda: Message.objects.count() == 3)

    make_user(django_user_model, "reader", "view_message", staff=True)
    with httpx.Client(base_url=server.url, timeout=30) as browser:
        login = browser.get("/admin/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text)[1]
        browser.post(
            "/admin/login/?next=/dashboard/report/",
            data={"username": "reader", "password": PASSWORD, "csrfmiddlewaretoken": token},
        )
        now = timezone.now()
        hours = {"start": (now - HOUR).isoformat(), "end": (now + HOUR).isoformat()}
        response = browser.get("/dashboard/report/", params=hours)
        assert response.status_code == 200, response.text[:500]
        assert "llama3.2" in response.text
        download = browser.get("/dashboard/report/", params={**hours, "format": "csv"})
    rows = {
        row["section"] + ":" + row["name"]: row
        for row in csv.DictReader(io.StringIO(download.text))
    }
    assert rows["total:"]["messages"] == "3"
    assert rows["model:llama3.2"]["messages"] == "3"
    assert int(rows["model:llama3.2"]["output_tokens"]) > 0
