"""/analytics/messages/{id}/feedback: who may rate (session with CSRF, token, permission),
what a rating may be, one rating per message and source (201, then 200), ids that find
nothing, and the feedback filters and per-model scores."""

import importlib
import io
import uuid

import httpx
import openai
import pytest
from django.apps import apps as django_apps
from django.contrib.auth.models import Group
from django.core.management import call_command

from analytics.models import ApiToken, Feedback

from .conftest import client_for, make_user
from .test_auth import logged_in

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def rater(django_user_model):
    """An app's account that may send feedback and read nothing."""
    return make_user(django_user_model, "webui", "send_feedback")


@pytest.fixture
def sender(server, rater):
    with client_for(server, rater) as client:
        yield client


def feedback_url(message_id) -> str:
    return f"/messages/{message_id}/feedback"


def test_a_first_rating_is_created_and_sending_it_again_updates_it(sender, api, write):
    [message] = write({})
    url = feedback_url(message.request_id.hex)

    first = sender.post(url, json={"rating": "up", "comment": "spot on", "source": "open-webui"})
    again = sender.post(url, json={"rating": "up", "comment": "spot on", "source": "open-webui"})
    changed = sender.post(url, json={"rating": 2, "source": "open-webui"})

    assert first.status_code == 201, first.text
    assert first.json()["score"] == 1.0
    assert first.json()["rating"] == "up"
    assert first.json()["user"] == "webui"
    assert again.status_code == 200
    assert {key: again.json()[key] for key in ("rating", "score", "comment")} == {
        "rating": "up",
        "score": 1.0,
        "comment": "spot on",
    }
    assert changed.status_code == 200
    assert (changed.json()["rating"], changed.json()["scale"]) == (2, "stars")
    assert changed.json()["score"] == 0.25
    assert changed.json()["created_at"] == first.json()["created_at"]
    assert Feedback.objects.count() == 1
    assert api.get(url).json()["count"] == 1


def test_each_source_keeps_its_own_rating_and_the_message_shows_their_average(sender, api, write):
    [message] = write({})
    url = feedback_url(message.request_id.hex)

    assert sender.post(url, json={"rating": "down", "source": "open-webui"}).status_code == 201
    assert sender.post(url, json={"rating": 4, "source": "eval-nightly"}).status_code == 201
    assert sender.post(url, json={"rating": 5}).status_code == 201  # source: the username

    shown = api.get(url).json()
    assert shown["message"] == message.request_id.hex
    assert shown["count"] == 3
    assert shown["average_score"] == pytest.approx((0 + 0.75 + 1) / 3)
    assert {row["source"]: row["score"] for row in shown["feedback"]} == {
        "open-webui": 0.0,
        "eval-nightly": 0.75,
        "webui": 1.0,
    }


@pytest.mark.parametrize(
    "form",
    [
        lambda message: message.request_id.hex,  # the X-Request-Id header, the API's id
        lambda message: str(message.request_id),  # with dashes
        lambda message: str(message.request_id.hex).upper(),
        lambda message: str(message.pk),  # the admin's id
    ],
)
def test_a_message_is_found_by_its_request_id_or_database_id(sender, write, form):
    [message] = write({})

    response = sender.post(feedback_url(form(message)), json={"rating": 3})

    assert response.status_code == 201, response.text
    assert Feedback.objects.get().message == message


def test_a_message_sent_through_the_proxy_is_rated_by_its_x_request_id(server, sender):
    answer = httpx.post(
        f"{server.url}/api/generate",
        json={"model": "llama3.2", "prompt": "Say hi", "stream": False},
        timeout=30,
    )
    server.flush()

    response = sender.post(feedback_url(answer.headers["x-request-id"]), json={"rating": "up"})

    assert response.status_code == 201, response.text
    assert response.json()["message"] == answer.headers["x-request-id"]


@pytest.mark.parametrize(
    "message_id",
    [uuid.uuid4().hex, "not-an-id", "123456789", "9" * 19, "9" * 30, "0" * 32, "-1"],
)
def test_an_unknown_id_answers_404(sender, api, write, message_id):
    write({})

    assert sender.post(feedback_url(message_id), json={"rating": "up"}).status_code == 404
    response = api.get(feedback_url(message_id))
    assert response.status_code == 404
    assert response.json() == {"detail": "No message has this id."}


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        ({"rating": 0}, "from 1 to 5"),
        ({"rating": 6}, "from 1 to 5"),
        ({"rating": 3.5}, "from 1 to 5"),
        ({"rating": True}, "from 1 to 5"),
        ({"rating": "meh"}, '"up", "down"'),
        ({"rating": "4"}, "from 1 to 5"),
        ({"rating": None}, "from 1 to 5"),
        ({}, "Field required"),
        ({"rating": "up", "comment": "x" * 2001}, "at most 2000"),
        ({"rating": "up", "comment": "nul\x00byte"}, "control characters"),
        ({"rating": "up", "source": "  "}, "source is empty"),
        ({"rating": "up", "source": "s" * 65}, "at most 64"),
        ({"rating": "up", "source": "tab\tbed"}, "control characters"),
    ],
)
def test_a_bad_rating_comment_or_source_is_a_422_that_says_why(sender, write, payload, says):
    [message] = write({})

    response = sender.post(feedback_url(message.request_id.hex), json=payload)

    assert response.status_code == 422
    assert says in " ".join(problem["msg"] for problem in response.json()["detail"])
    assert not Feedback.objects.exists()


def test_line_breaks_in_a_comment_are_kept(sender, write):
    [message] = write({})
    comment = "Wrong year.\r\nShould be 1969.\tSee the source."

    response = sender.post(
        feedback_url(message.request_id.hex), json={"rating": 1, "comment": comment}
    )

    assert response.status_code == 201
    assert Feedback.objects.get().comment == comment


def test_without_credentials_sending_and_reading_answer_401(server, write):
    [message] = write({})
    url = f"{server.url}/analytics{feedback_url(message.request_id.hex)}"

    assert httpx.post(url, json={"rating": "up"}).status_code == 401
    assert httpx.get(url).status_code == 401
    assert not Feedback.objects.exists()


def test_sending_needs_the_feedback_permission_and_reading_the_read_permission(
    server, sender, django_user_model, write
):
    [message] = write({})
    reader = make_user(django_user_model, "reader", "view_message", "view_message_content")
    url = feedback_url(message.request_id.hex)

    with client_for(server, reader) as client:
        refused = client.post(url, json={"rating": "up"})
    assert refused.status_code == 403
    assert "analytics.send_feedback" in refused.text
    # An app's account rates, but reads nothing, its own ratings included.
    assert sender.post(url, json={"rating": "up"}).status_code == 201
    assert sender.get(url).status_code == 403


def test_comments_are_shown_only_with_the_content_permission(
    server, sender, django_user_model, write
):
    [message] = write({})
    url = feedback_url(message.request_id.hex)
    sender.post(url, json={"rating": "down", "comment": "it leaked my address"})
    metadata_only = make_user(django_user_model, "metadata", "view_message")

    with client_for(server, metadata_only) as client:
        [row] = client.get(url).json()["feedback"]

    assert row["comment"] is None
    assert row["score"] == 0.0


def test_a_session_may_rate_only_with_the_csrf_token(server, django_user_model, write):
    [message] = write({})
    analyst = make_user(django_user_model, "ann", "view_message", "send_feedback", staff=True)
    url = f"/analytics{feedback_url(message.request_id.hex)}"

    with logged_in(server, analyst) as browser:
        forged = browser.post(url, json={"rating": "up"})
        browser.get("/dashboard/")  # sets the CSRF cookie, as a page the analyst opens does
        token = browser.cookies["csrftoken"]
        sent = browser.post(url, json={"rating": "up"}, headers={"X-CSRFToken": token})
        read = browser.get(url)

    assert forged.status_code == 403
    assert sent.status_code == 201, sent.text
    assert sent.json()["source"] == "ann"
    assert read.json()["count"] == 1


@pytest.fixture
def groups(transactional_db):
    """The groups of migrations analytics 0002 and 0003 (a flush between tests removes them)."""
    importlib.import_module("analytics.migrations.0002_reader_groups").create_groups(
        django_apps, None
    )
    importlib.import_module("analytics.migrations.0003_feedback").grant(django_apps, None)


@pytest.mark.parametrize(
    ("group", "reads"),
    [("Analyst", True), ("Auditor", True), ("Admin", True), ("Feedback sender", False)],
)
def test_the_groups_may_send_feedback(django_user_model, groups, group, reads):
    user = django_user_model.objects.create_user(group.replace(" ", "-"))
    user.groups.add(Group.objects.get(name=group))

    assert user.has_perm("analytics.send_feedback")
    assert user.has_perm("proxy.view_message") is reads


# --- filters and per-model scores --------------------------------------------------------------


@pytest.fixture
def rated(write):
    """Five messages of two models: rated up, 2 stars, 4 stars and down by two sources
    (average 0.5), and one nobody rated. Returns them by label."""
    labels = ("up", "two", "four", "mixed", "unrated")
    models = ("llama3.2", "llama3.2", "qwen3", "qwen3", "qwen3")
    messages = dict(zip(labels, write(*({"model": model} for model in models)), strict=True))
    Feedback.give(messages["up"], "app", "up")
    Feedback.give(messages["two"], "app", 2)
    Feedback.give(messages["four"], "app", 4)
    Feedback.give(messages["mixed"], "app", 5)
    Feedback.give(messages["mixed"], "eval", "down")
    return messages


def listed(api, rated, **params) -> set[str]:
    names = {message.request_id.hex: label for label, message in rated.items()}
    rows = api.get("/messages", params=params).json()["messages"]
    return {names[row["id"]] for row in rows}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"has_feedback": "true"}, {"up", "two", "four", "mixed"}),
        ({"has_feedback": "false"}, {"unrated"}),
        ({"has_feedback": ""}, {"up", "two", "four", "mixed", "unrated"}),
        ({"min_score": "0.5"}, {"up", "four", "mixed"}),
        ({"min_score": "0.75"}, {"up", "four"}),
        ({"min_score": "1"}, {"up"}),
        ({"min_score": "0"}, {"up", "two", "four", "mixed"}),
        ({"min_score": "0.5", "has_feedback": "true", "model": "qwen3"}, {"four", "mixed"}),
    ],
)
def test_the_feedback_filters_select_rated_messages_by_their_average_score(
    api, rated, params, expected
):
    assert listed(api, rated, **params) == expected


def test_the_export_and_the_aggregations_follow_the_feedback_filters(api, rated):
    export = api.get("/export", params={"format": "jsonl", "min_score": "0.75"})
    figures = api.get("/aggregations", params={"has_feedback": "false"}).json()

    exported = {line for line in export.text.splitlines() if line}
    assert len(exported) == 2
    assert figures["source"] == "messages"
    assert figures["total_messages"] == 1
    assert [row["model"] for row in figures["by_model"]] == ["qwen3"]


@pytest.mark.parametrize(
    ("params", "complaint"),
    [
        ({"min_score": "1.5"}, "less than or equal to 1"),
        ({"min_score": "-0.1"}, "greater than or equal to 0"),
        ({"min_score": "nan"}, "min_score"),
        ({"has_feedback": "maybe"}, "valid boolean"),
        ({"min_score": "0.5", "has_feedback": "false"}, "has_feedback=false"),
    ],
)
def test_bad_feedback_filters_are_a_422(api, params, complaint):
    response = api.get("/messages", params=params)

    assert response.status_code == 422
    assert complaint in response.text


def test_the_models_have_their_number_of_ratings_and_average_score(api, rated):
    models = {row["model"]: row for row in api.get("/models").json()["models"]}

    assert (models["llama3.2"]["ratings"], models["llama3.2"]["avg_score"]) == (2, 0.625)
    # 4 stars, 5 stars and down: (0.75 + 1 + 0) / 3, each source's rating counted once.
    assert models["qwen3"]["ratings"] == 3
    assert models["qwen3"]["avg_score"] == pytest.approx(1.75 / 3)


def test_a_model_nobody_rated_has_no_average_score(api, write):
    write({"model": "phi4"})

    [row] = api.get("/models").json()["models"]

    assert (row["ratings"], row["avg_score"]) == (0, None)


def test_the_readme_recipe_rates_an_openai_sdk_answer_by_its_request_id(server, rater):
    """The README's Python recipe: the answer's X-Request-Id, then the rating."""
    _, token = ApiToken.issue(rater, "recipe")
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="ollama")

    raw = client.chat.completions.with_raw_response.create(
        model="llama3.2", messages=[{"role": "user", "content": "Why is the sky blue?"}]
    )
    answer = raw.parse()
    request_id = raw.headers["x-request-id"]
    server.flush()
    response = httpx.post(
        f"{server.url}/analytics/messages/{request_id}/feedback",
        headers={"Authorization": f"Bearer {token}"},
        json={"rating": 4, "comment": "clear", "source": "my-app"},
    )

    assert answer.choices[0].message.content
    assert response.status_code == 201, response.text
    assert Feedback.objects.get().message.endpoint == "/v1/chat/completions"


def test_the_dashboard_form_keeps_the_feedback_filters_and_says_what_is_wrong(reader):
    client = reader("analyst", "view_message")

    kept = client.get("/dashboard/", {"has_feedback": "true", "min_score": "0.5"})
    wrong = client.get("/dashboard/", {"min_score": "2"})

    assert '<option value="true" selected>rated</option>' in kept.content.decode()
    assert 'name="min_score" value="0.5"' in kept.content.decode()
    assert "less than or equal to 1" in wrong.content.decode()


def test_a_token_for_an_apps_account_comes_with_a_note_that_it_reads_nothing(rater):
    out, err = io.StringIO(), io.StringIO()

    call_command("create_api_token", "webui", "--name", "feedback", stdout=out, stderr=err)

    assert "webui may send feedback but read nothing" in err.getvalue()
    assert ApiToken.user_for(out.getvalue().strip()) == rater
