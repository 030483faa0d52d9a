"""The report as read: the HTML with its charts and links, the text part, the CSV attachment
(formula cells neutralised) and the structure of the e-mail."""

import csv
import io
from datetime import timedelta

import pytest
from PIL import Image

from reports import charts, rendering
from reports.report import Figure, build

from .conftest import local
from .test_report import BASE, failure, llama

pytestmark = pytest.mark.django_db

HOSTILE = '<script>alert("x")</script>'


@pytest.fixture
def report(write, monday):
    two = local(2026, 3, 2, 14, 0)
    write(
        *(llama(local(2026, 3, 2, 9, minute)) for minute in range(6)),
        *(failure(two + timedelta(minutes=minute), user=HOSTILE) for minute in range(3)),
        llama(local(2026, 3, 2, 11, 0), user='=HYPERLINK("http://evil")', latency_seconds=30.0),
        *(llama(local(2026, 3, 1, 9, minute)) for minute in range(5)),
    )
    return build(monday, base_url=BASE)


@pytest.mark.parametrize(
    ("figure", "text"),
    [
        (Figure(10, 8), "+25 %"),
        (Figure(8, 10), "-20 %"),
        (Figure(95, 100), "-5.0 %"),
        (Figure(10, 10), "±0 %"),
        (Figure(3, 0), "new"),
        (Figure(None, 3), ""),
        (Figure(0.25, 0.05, "rate"), "+20.0 pts"),
    ],
)
def test_changes_are_written_as_people_read_them(figure, text):
    assert rendering.change(figure) == text


def test_values_are_written_with_their_unit():
    assert rendering.show(1234567) == "1,234,567"
    assert rendering.show(0.00123, "usd") == "$0.0012"
    assert rendering.show(12.5, "usd") == "$12.50"
    assert rendering.show(0.4567, "seconds") == "0.46 s"
    assert rendering.show(0.0512, "rate") == "5.1 %"
    assert rendering.show(41.26, "speed") == "41.3 tok/s"
    assert rendering.show(None, "usd") == "\N{EN DASH}"


def test_the_text_part_has_the_figures_the_spike_and_the_links(report):
    text = rendering.text(report)
    assert text.startswith("Ollama Monitor report, Monday 2 March 2026: 10 messages (+100 %)\n")
    assert "Period:   2026-03-02 00:00 to 2026-03-03 00:00 (Europe/Berlin)" in text
    assert "Compared: 2026-03-01 00:00 to 2026-03-02 00:00" in text
    lines = text.splitlines()
    assert any(line.split() == ["Messages", "10", "5", "+100", "%"] for line in lines)
    assert any(line.split()[:3] == ["Error", "rate", "30.0"] for line in lines)
    assert "2026-03-02 14:00: 3 errors of 3 (100.0 %): qwen3 3" in text
    assert (
        "An hour with at least 3 errors and an error rate of at least 5.0 % (2 times the "
        "previous period's 0.0 %, and at least 5.0 %)."
    ) in text
    assert f"{BASE}/admin/proxy/message/" in text
    assert f"{BASE}/dashboard/?range=custom" in text
    assert "model runner crashed" not in text


def test_the_html_has_the_tables_charts_and_absolute_links(report):
    images = rendering.chart_images(report)
    assert set(images) == {"activity", "timings", "speeds"}
    page = rendering.html(report, images, inline=False)
    assert page.startswith("<!doctype html>")
    assert "<style" not in page  # mail clients drop style blocks: every style is inline
    for name in images:
        assert f'src="cid:{name}@ollama-monitor"' in page
    assert page.count('class="report-spike"') == 1
    assert f'href="{BASE}/admin/proxy/message/' in page
    assert f'href="{BASE}/dashboard/?range=custom&amp;start_time=' in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert HOSTILE not in page
    assert ">+100 %<" in page
    inline = rendering.html(report, images, inline=True)
    assert 'src="data:image/png;base64,' in inline and "cid:" not in inline


def test_the_charts_are_png_images_drawn_at_twice_their_size(report):
    for image in rendering.chart_images(report).values():
        picture = Image.open(io.BytesIO(image["png"]))
        assert picture.format == "PNG"
        assert picture.width == charts.WIDTH * charts.SCALE
        # Not blank: the bars, lines and labels have colours besides the white ground.
        assert len(picture.getcolors(maxcolors=100_000)) > 10


def test_nice_ticks_are_round_and_cover_the_maximum():
    assert charts.nice_ticks(9) == [0, 5, 10]
    assert charts.nice_ticks(130) == [0, 50, 100, 150]
    assert charts.nice_ticks(0.7) == [0, 0.2, 0.4, 0.6000000000000001, 0.8]
    assert charts.nice_ticks(0) == [0, 1]


def test_the_csv_has_the_numbers_per_model_category_and_user_without_formulas(report):
    rows = list(csv.DictReader(io.StringIO(rendering.csv_text(report))))
    assert list(rows[0]) == list(rendering.CSV_COLUMNS)
    by = {(row["section"], row["name"]): row for row in rows}
    total = by[("total", "")]
    assert (total["messages"], total["previous_messages"], total["errors"]) == ("10", "5", "3")
    assert total["error_rate"] == "0.3"
    llama_row = by[("model", "llama3.2")]
    assert (llama_row["messages"], llama_row["output_tokens"]) == ("7", "700")
    assert float(llama_row["tokens_per_second"]) == pytest.approx(50.0)
    assert by[("category", "code")]["errors"] == "3"
    assert by[("user", "alice")]["messages"] == "6"
    assert ("user", '\'=HYPERLINK("http://evil")') in by  # shown, never run
    assert rendering.csv_name(report) == "ollama-monitor-report-20260302-day.csv"


def test_the_email_nests_the_html_and_its_images_for_mail_clients(report):
    message = rendering.email(report, ["ops@example.com"]).message()
    assert message.get_content_type() == "multipart/mixed"
    alternative, attachment = message.get_payload()
    assert alternative.get_content_type() == "multipart/alternative"
    plain, related = alternative.get_payload()
    assert plain.get_content_type() == "text/plain"
    assert related.get_content_type() == "multipart/related"
    html_part, *pictures = related.get_payload()
    assert html_part.get_content_type() == "text/html"
    assert {picture["Content-ID"] for picture in pictures} == {
        "<activity@ollama-monitor>",
        "<timings@ollama-monitor>",
        "<speeds@ollama-monitor>",
    }
    assert all(picture.get_content_type() == "image/png" for picture in pictures)
    assert attachment.get_content_type() == "text/csv"
    assert attachment.get_filename() == "ollama-monitor-report-20260302-day.csv"


def test_a_text_email_has_no_html_and_no_images(report):
    message = rendering.email(report, ["ops@example.com"], as_html=False).message()
    plain, attachment = message.get_payload()
    assert plain.get_content_type() == "text/plain"
    assert attachment.get_content_type() == "text/csv"


def test_an_empty_report_says_so(monday):
    report = build(monday, base_url=BASE)
    assert rendering.chart_images(report) == {}
    assert "No messages in this period." in rendering.text(report)
    assert "No messages in this period." in rendering.html(report, {}, inline=True)


def test_the_csv_has_every_user_and_the_html_the_top_ones(write, monday):
    write(*(llama(local(2026, 3, 2, 9, 0), user=f"user{index:02d}") for index in range(12)))
    report = build(monday, base_url=BASE)
    users = list(csv.DictReader(io.StringIO(rendering.csv_text(report))))
    assert len([row for row in users if row["section"] == "user"]) == 12
    page = rendering.html(report, {}, inline=True)
    table = page[page.index('class="report-users"') : page.index("and 2 more users.")]
    assert "user09" in table and "user10" not in table
    text = rendering.text(report)
    assert "user09" in text[text.index("Top users") : text.index("Categories")]
    assert "user10" not in text[text.index("Top users") : text.index("Categories")]
