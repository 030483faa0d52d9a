"""manage.py send_report: the period asked for, through Django's mail backend, to the
recipients asked for; clear errors on bad input."""

import email
import io
import os
import socketserver
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.core import mail
from django.core.management import CommandError, call_command
from django.utils import timezone

from .conftest import local
from .test_report import failure, llama

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tuesday_morning(monkeypatch):
    """The clock says Tuesday 3 March 2026, 06:00 in Berlin: yesterday is Monday the 2nd."""
    moment = local(2026, 3, 3, 6, 0)
    monkeypatch.setattr(timezone, "now", lambda: moment)
    return moment


def send(*args) -> str:
    err = io.StringIO()
    call_command("send_report", *args, stderr=err)
    return err.getvalue()


def test_it_mails_yesterdays_report_with_html_text_and_csv(write, tuesday_morning):
    write(llama(local(2026, 3, 2, 9, 0)), failure(local(2026, 3, 2, 9, 5)))
    write(llama(local(2026, 3, 1, 9, 0)))
    said = send("--to", "ops@example.com", "lead@example.com")
    [message] = mail.outbox
    assert message.to == ["ops@example.com", "lead@example.com"]
    assert message.from_email == "ollama-monitor@localhost"
    assert message.subject == ("Ollama Monitor report, Monday 2 March 2026: 2 messages (+100 %)")
    assert "Errors" in message.body and "https://monitor.example.com/admin/" in message.body
    [(html, mimetype)] = message.alternatives
    assert mimetype == "text/html"
    assert "cid:activity@ollama-monitor" in html
    pictures = [part for part in message.message().walk() if part.get_content_maintype() == "image"]
    assert {picture["Content-ID"] for picture in pictures} == {
        "<activity@ollama-monitor>",
        "<timings@ollama-monitor>",
        "<speeds@ollama-monitor>",
    }
    [(name, content, content_type)] = message.attachments
    assert (name, content_type) == ("ollama-monitor-report-20260302-day.csv", "text/csv")
    assert content.splitlines()[1].startswith("total,,2,1,1,0.5,")
    assert "Sent the report of Monday 2 March 2026 to ops@example.com, lead@example.com" in said


def test_the_period_week_and_month_and_a_custom_range(write, tuesday_morning):
    write(llama(local(2026, 2, 24, 9, 0)), llama(local(2026, 2, 10, 9, 0)))
    send("--period", "week", "--to", "ops@example.com")
    send("--period", "month", "--to", "ops@example.com")
    send("--start", "2026-02-10", "--end", "2026-02-10", "--to", "ops@example.com")
    week, month, custom = mail.outbox
    assert week.subject.startswith("Ollama Monitor report, week 09, 23 February 2026 to 1 March")
    assert week.subject.endswith(": 1 messages (new)")
    assert month.subject == "Ollama Monitor report, February 2026: 2 messages (new)"
    assert custom.subject == "Ollama Monitor report, 10 February 2026: 1 messages (new)"


def test_text_format_sends_plain_text_and_the_csv(write, tuesday_morning, settings):
    settings.REPORT_RECIPIENTS = ["team@example.com"]
    write(llama(local(2026, 3, 2, 9, 0)))
    send("--format", "text")
    [message] = mail.outbox
    assert message.to == ["team@example.com"]
    assert not message.alternatives
    assert [name for name, _, _ in message.attachments] == [
        "ollama-monitor-report-20260302-day.csv"
    ]


def test_error_texts_are_mailed_only_when_the_setting_says_so(write, tuesday_morning, settings):
    write(*(failure(local(2026, 3, 2, 9, minute)) for minute in range(3)))  # a spike at 9
    write(*(llama(local(2026, 3, 2, hour, 0)) for hour in range(12, 24)))
    send("--to", "ops@example.com")
    settings.REPORT_ERROR_TEXT = True
    send("--to", "ops@example.com")
    without, with_text = mail.outbox
    assert "model runner crashed" not in without.body
    assert "model runner crashed" not in without.alternatives[0][0]
    assert "model runner crashed" in with_text.body
    assert "model runner crashed" in with_text.alternatives[0][0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "No recipients: give --to ADDR or set REPORT_RECIPIENTS."),
        (("--to", "not an address"), "Not an e-mail address: 'not an address'"),
        (("--to", "a@example.com", "--start", "2026-03-01"), "--start and --end go together."),
        (
            (
                "--to",
                "a@example.com",
                "--period",
                "day",
                "--start",
                "2026-03-01",
                "--end",
                "2026-03-02",
            ),
            "Give either --period or --start and --end, not both.",
        ),
        (
            ("--to", "a@example.com", "--start", "2026-03-05", "--end", "2026-03-01"),
            "start must be before end",
        ),
        (("--to", "a@example.com", "--start", "soon", "--end", "later"), "start must be a date"),
    ],
)
def test_bad_input_is_a_clear_command_error(args, message):
    with pytest.raises(CommandError, match=message.replace(".", r"\.").replace("(", r"\(")):
        send(*args)
    assert not mail.outbox


def test_an_unknown_period_or_format_is_refused_by_the_parser():
    for args in (("--period", "year"), ("--format", "pdf")):
        with pytest.raises(CommandError, match="invalid choice"):
            send("--to", "a@example.com", *args)


def test_the_console_backend_prints_the_mail_by_default(write, tuesday_morning, settings, capsys):
    settings.EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
    write(llama(local(2026, 3, 2, 9, 0)))
    send("--to", "ops@example.com")
    printed = capsys.readouterr().out
    assert "Subject: Ollama Monitor report, Monday 2 March 2026: 1 messages (new)" in printed
    assert "Content-Type: multipart/related" in printed


class SmtpHandler(socketserver.StreamRequestHandler):
    """Just enough SMTP for smtplib: every command accepted, each message's DATA kept."""

    def reply(self, line: str):
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self):
        self.reply("220 test SMTP")
        while line := self.rfile.readline():
            command = line.decode().strip().upper()
            if command.startswith(("EHLO", "HELO")):
                self.reply("250 test")
            elif command == "DATA":
                self.reply("354 go on")
                data = b""
                while (chunk := self.rfile.readline()) != b".\r\n":
                    data += chunk
                self.server.received.append(data)
                self.reply("250 kept")
            elif command == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("250 ok")


def test_it_goes_out_over_smtp_when_email_host_is_set(write, tuesday_morning, settings):
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), SmtpHandler) as server:
        server.received = []
        threading.Thread(target=server.serve_forever, daemon=True).start()
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = server.server_address
        write(llama(local(2026, 3, 2, 9, 0)))
        send("--to", "ops@example.com")
        server.shutdown()
    [data] = server.received
    received = email.message_from_bytes(data)
    assert received["To"] == "ops@example.com"
    assert received["Subject"] == "Ollama Monitor report, Monday 2 March 2026: 1 messages (new)"
    assert received.get_content_type() == "multipart/mixed"


def test_email_host_selects_smtp_and_tls_with_ssl_is_refused(tmp_path):
    def run(**env):
        environment = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "DEBUG"}}
        environment.update(DATA_DIR=str(tmp_path), **env)
        code = "from django.conf import settings; print(settings.EMAIL_BACKEND)"
        return subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", code],
            cwd=ROOT,
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert run().stdout.strip().endswith("console.EmailBackend")
    assert run(EMAIL_HOST="smtp.example.com").stdout.strip().endswith("smtp.EmailBackend")
    refused = run(EMAIL_HOST="smtp.example.com", EMAIL_USE_TLS="1", EMAIL_USE_SSL="1")
    assert refused.returncode != 0
    assert "EMAIL_USE_TLS" in refused.stderr
