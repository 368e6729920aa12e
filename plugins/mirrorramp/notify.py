"""Webhook events: advanced, held, rolled back, completed, stopped.

A failing receiver never blocks or delays a rollback beyond its bounded timeout: errors come
back as warnings. Webhook URLs often embed a secret (Slack's do), so only scheme and host are
ever named in a message.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}{':' + str(parts.port) if parts.port else ''}/..."


@dataclass(frozen=True)
class Notifier:
    urls: Sequence[str] = ()
    timeout: float = 5.0
    attempts: int = 2
    slack: bool = False  # Slack-compatible {"text": ...} body in addition to the event fields

    def post(self, event: dict) -> list[str]:
        """Post `event` to every URL; return one warning per receiver that failed."""
        warnings: list[str] = []
        body = dict(event)
        if self.slack:
            body["text"] = event.get("summary", event.get("event", ""))
        for url in self.urls:
            last = ""
            for attempt in range(self.attempts):
                try:
                    response = requests.post(url, json=body, timeout=self.timeout)
                    if response.status_code < 400:
                        last = ""
                        break
                    last = f"HTTP {response.status_code}"
                except requests.RequestException as e:
                    last = type(e).__name__
                if attempt + 1 < self.attempts:
                    time.sleep(0.2 * (attempt + 1))
            if last:
                warnings.append(f"webhook {redact_url(url)} failed after {self.attempts} attempts: {last}")
        return warnings
