"""Feedback in the admin: on a message's page (comments only with the content permission),
the feedback list (read and delete, never add or change) and the messages' feedback filter."""

import pytest

from analytics.models import Feedback

from .test_admin import HOSTILE, write

pytestmark = pytest.mark.django_db


@pytest.fixture
def rated():
    message = write(prompt="Capital of Australia?", response="Sydney.")
    Feedback.give(message, "open-webui", "down", comment=f"Canberra, not Sydney {HOSTILE}")
    Feedback.give(message, "eval-nightly", 2)
    return message


def test_a_message_page_shows_its_feedback_with_comments_for_an_auditor(reader, rated):
    auditor = reader("auditor", "view_message", "view_message_content")

    page = auditor.get(f"/admin/proxy/message/{rated.pk}/change/").content.decode()

    section = page[page.index('class="message-feedback"') :]
    assert "open-webui" in section
    assert "thumbs down" in section
    assert "2 of 5 stars" in section
    assert "0.25" in section
    assert "Canberra, not Sydney &lt;script&gt;" in section
    assert HOSTILE not in page
    assert "In the feedback list" not in section  # no permission to see that list


def test_an_analyst_sees_the_ratings_but_not_the_comments(reader, rated):
    analyst = reader("analyst", "view_message", "view_feedback")

    page = analyst.get(f"/admin/proxy/message/{rated.pk}/change/").content.decode()
    listed = analyst.get("/admin/analytics/feedback/").content.decode()

    assert "thumbs down" in page
    assert "Canberra" not in page
    assert f"/admin/analytics/feedback/?message__id__exact={rated.pk}" in page
    assert "open-webui" in listed
    assert "Canberra" not in listed


def test_a_message_without_feedback_says_how_to_send_some(reader):
    message = write()
    auditor = reader("auditor", "view_message", "view_message_content")

    page = auditor.get(f"/admin/proxy/message/{message.pk}/change/").content.decode()

    assert f"/analytics/messages/{message.request_id.hex}/feedback" in page


def test_the_feedback_list_is_read_and_deleted_never_written(reader, rated):
    admin = reader(
        "boss",
        "view_feedback",
        "add_feedback",
        "change_feedback",
        "delete_feedback",
        "view_message_content",
    )
    feedback = Feedback.objects.get(source="open-webui")

    listed = admin.get("/admin/analytics/feedback/", {"message__id__exact": rated.pk})
    by_source = admin.get("/admin/analytics/feedback/", {"q": "eval-nightly"}).content.decode()
    detail = admin.get(f"/admin/analytics/feedback/{feedback.pk}/change/").content.decode()

    assert listed.status_code == 200
    assert "Canberra, not Sydney" in listed.content.decode()
    assert "eval-nightly" in by_source
    assert '<td class="field-model">llama3.2</td>' in by_source
    by_model = admin.get("/admin/analytics/feedback/", {"model": "llama3.2"}).content.decode()
    assert "eval-nightly" in by_model
    assert "Canberra" not in by_source  # the open-webui rating's comment
    assert "thumbs down" in detail
    assert 'name="source"' not in detail  # read-only
    assert admin.get("/admin/analytics/feedback/add/").status_code == 403
    assert admin.post(f"/admin/analytics/feedback/{feedback.pk}/delete/", {"post": "yes"})
    assert not Feedback.objects.filter(pk=feedback.pk).exists()


@pytest.mark.parametrize(
    ("choice", "expected"),
    [("rated", {"good", "poor"}), ("unrated", {"none"}), ("good", {"good"}), ("fair", {"good"})],
)
def test_the_message_list_filters_by_feedback(reader, choice, expected):
    messages = {name: write(prompt=f"prompt {name}") for name in ("good", "poor", "none")}
    Feedback.give(messages["good"], "app", 4)
    Feedback.give(messages["poor"], "app", 1)
    auditor = reader("auditor", "view_message", "view_message_content")

    page = auditor.get("/admin/proxy/message/", {"feedback": choice}).content.decode()

    assert {name for name in messages if f"prompt {name}" in page} == expected
