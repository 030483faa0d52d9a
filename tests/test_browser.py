"""The dashboard and the admin in a real headless Chromium, against the real application on
loopback: log in through the form, see the charts drawn from data, filter, drill down to a
message, and watch a message recorded through the proxy arrive in the live feed."""

import httpx
import pytest
from django.conf import settings
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

import ollama_monitor.asgi
from analytics.models import Feedback
from analytics.tests.conftest import PASSWORD, make_user
from proxy.models import Message

pytestmark = [pytest.mark.needs_binary("chromium"), pytest.mark.django_db(transaction=True)]

# Runs if the page ever treats recorded text as markup.
HOSTILE = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,1000",
)


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    # The Debian driver: selenium-manager downloads nothing.
    driver = webdriver.Chrome(
        options=options, service=Service(executable_path="/usr/bin/chromedriver")
    )
    yield driver
    driver.quit()


@pytest.fixture
def server(start_proxy, proxy_settings, monkeypatch):
    """The whole application, with its static files served from the source tree as Django's
    own live server does (production serves them collected, through WhiteNoise)."""
    application = ollama_monitor.asgi.application
    static = ASGIStaticFilesHandler(application)

    async def with_static(scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith(settings.STATIC_URL):
            await static(scope, receive, send)
        else:
            await application(scope, receive, send)

    monkeypatch.setattr(ollama_monitor.asgi, "application", with_static)
    proxy_settings.PROXY_USER_HEADERS = ["x-openwebui-user-name"]  # as behind Open WebUI
    return start_proxy()


@pytest.fixture
def auditor(django_user_model):
    return make_user(
        django_user_model, "auditor", "view_message", "view_message_content", staff=True
    )


def chat(url: str, model: str, prompt: str, user: str = "alice") -> None:
    response = httpx.post(
        f"{url}/api/chat",
        json={"model": model, "messages": [{"role": "user", "content": prompt}], "stream": False},
        headers={"X-Sim-Tokens": "12", "X-OpenWebUI-User-Name": user},
        timeout=30,
    )
    assert response.status_code == 200


def log_in(browser, server, path: str) -> None:
    browser.delete_all_cookies()
    browser.get(f"{server.url}{path}")
    assert "/admin/login/" in browser.current_url  # anonymous: sent to the login form
    browser.find_element(By.NAME, "username").send_keys("auditor")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait(browser, lambda driver: driver.current_url.startswith(f"{server.url}{path}"))


def wait(browser, condition, timeout=15):
    return WebDriverWait(browser, timeout).until(condition)


def loaded(browser) -> None:
    wait(browser, lambda d: d.execute_script("return document.body.dataset.figures === 'loaded'"))
    wait(browser, lambda d: d.execute_script("return document.body.dataset.table === 'loaded'"))


def canvas_is_drawn(browser, name: str) -> bool:
    """Whether the chart's canvas holds any pixel (a blank one of its size reads differently)."""
    return browser.execute_script(
        """const canvas = document.getElementById(arguments[0]);
        const blank = document.createElement('canvas');
        blank.width = canvas.width; blank.height = canvas.height;
        return canvas.width > 0 && canvas.toDataURL() !== blank.toDataURL();""",
        f"chart-{name}",
    )


def table_column(browser, index: int) -> list[str]:
    return [
        cell.text
        for cell in browser.find_elements(
            By.CSS_SELECTOR, f"#message-rows tr td:nth-child({index})"
        )
    ]


def test_an_auditor_logs_in_sees_the_charts_filters_and_drills_down(browser, server, auditor):
    for number in range(3):
        chat(server.url, "llama3.2", f"llama question {number}")
    chat(server.url, "qwen3", "qwen question", user="bob")
    chat(server.url, "qwen3", HOSTILE)
    server.flush()

    log_in(browser, server, "/dashboard/")
    loaded(browser)
    assert browser.find_element(By.ID, "total-messages").text == "5"
    time_series = browser.execute_script(
        "return dashboardCharts.time.data.datasets"
        ".map(set => [set.label, set.data.reduce((a, b) => a + b, 0)])"
    )
    assert dict(time_series) == {"llama3.2": 3, "qwen3": 2}
    for name in ("time", "percentiles", "rate", "category", "users"):
        assert canvas_is_drawn(browser, name), name
    # The recorded HTML is text in the table, and ran nowhere.
    assert HOSTILE[:20] in " ".join(table_column(browser, 10))
    assert browser.execute_script("return window.__xss") is None

    # A filter from the form goes into the URL, and the table follows it.
    Select(browser.find_element(By.NAME, "model")).select_by_visible_text("qwen3")
    browser.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
    wait(browser, lambda d: "model=qwen3" in d.current_url)
    loaded(browser)
    assert table_column(browser, 2) == ["qwen3", "qwen3"]
    assert browser.find_element(By.ID, "total-messages").text == "2"

    # A click on a bar of the users chart drills down to that user's messages.
    x, y = browser.execute_script(
        """const chart = dashboardCharts.users;
        const index = chart.data.labels.indexOf('bob');
        const bar = chart.getDatasetMeta(0).data[index];
        return [bar.x - chart.width / 2, bar.y - chart.height / 2];"""
    )
    canvas = browser.find_element(By.ID, "chart-users")
    ActionChains(browser).move_to_element_with_offset(canvas, int(x) - 4, int(y)).click().perform()
    wait(browser, lambda d: "user=bob" in d.current_url)
    loaded(browser)
    assert table_column(browser, 10) == ["[user] qwen question"]  # a chat, as recorded

    # A row opens the message in the admin.
    browser.find_element(By.CSS_SELECTOR, "#message-rows tr td a").click()
    wait(browser, lambda d: "/admin/proxy/message/" in d.current_url)
    assert "qwen question" in browser.find_element(By.CSS_SELECTOR, ".message-prompt").text
    assert "bob" in browser.find_element(By.CSS_SELECTOR, ".message-summary").text


def test_a_message_sent_through_the_proxy_appears_in_the_live_feed(browser, server, auditor):
    log_in(browser, server, "/dashboard/")
    wait(
        browser, lambda d: d.find_element(By.ID, "live-state").get_attribute("data-state") == "open"
    )
    chat(server.url, "qwen3", f"live {HOSTILE}")
    item = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#live-feed li"))[0]
    assert "qwen3" in item.text
    assert f"live {HOSTILE}"[:30] in item.find_element(By.CSS_SELECTOR, ".prompt").text
    assert browser.execute_script("return window.__xss") is None

    # Shown on the admin's detail page as text too.
    item.find_element(By.TAG_NAME, "a").click()
    wait(browser, lambda d: "/admin/proxy/message/" in d.current_url)
    assert HOSTILE in browser.find_element(By.CSS_SELECTOR, ".message-prompt").text
    assert browser.execute_script("return window.__xss") is None


def test_the_comparison_page_draws_the_radar_and_the_table_of_the_models(browser, server, auditor):
    for number in range(3):
        chat(server.url, "llama3.2", f"llama question {number}")
    chat(server.url, "qwen3", "qwen question")
    server.flush()
    Feedback.give(Message.objects.filter(model="llama3.2").first(), "app", "up")
    Feedback.give(Message.objects.get(model="qwen3"), "app", 1)

    log_in(browser, server, "/dashboard/")
    browser.find_element(By.LINK_TEXT, "Compare models").click()
    compared(browser)
    rows = browser.find_elements(By.CSS_SELECTOR, "#compare-rows tr")
    assert [row.find_element(By.TAG_NAME, "th").text for row in rows] == ["llama3.2", "qwen3"]
    assert rows[0].find_elements(By.TAG_NAME, "td")[0].text == "3"
    assert rows[1].find_elements(By.TAG_NAME, "td")[-1].text == "0.00 (1)"
    link = rows[0].find_element(By.TAG_NAME, "a").get_attribute("href")
    assert link.endswith("/dashboard/?model=llama3.2")
    radar = browser.execute_script(
        "return comparisonChart.data.datasets.map(set => [set.label, set.data])"
    )
    # speed, cost (unpriced: $0, the cheapest), quality (thumbs up against 1 star), reliability
    assert [label for label, _ in radar] == ["llama3.2", "qwen3"]
    assert [axes[1:] for _, axes in radar] == [[1, 1, 1], [1, 0, 1]]
    assert max(radar[0][1][0], radar[1][1][0]) == 1
    assert browser.execute_script("return comparisonChart.config.type") == "radar"
    assert canvas_is_drawn(browser, "radar")
    assert "relative to the best" in browser.find_element(By.CSS_SELECTOR, ".explain").text

    # Ticking one model compares it alone, and the choice is kept in the URL.
    browser.find_element(By.CSS_SELECTOR, "input[name=models][value=qwen3]").click()
    browser.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
    wait(browser, lambda d: "models=qwen3" in d.current_url)
    compared(browser)
    assert browser.execute_script("return comparisonChart.data.datasets.length") == 1
    assert len(browser.find_elements(By.CSS_SELECTOR, "#compare-rows tr")) == 1


def compared(browser) -> None:
    wait(browser, lambda d: d.execute_script("return document.body.dataset.comparison"))
