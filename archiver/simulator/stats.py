"""Counters the simulator keeps about itself, for tests and `GET /_sim/stats`."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Stats:
    requests_total: int = 0  # every API/OAuth request, whatever the answer
    unauthorized: int = 0
    tokens_issued: int = 0
    downloads: int = 0  # file answers that started sending the file
    download_bytes: int = 0
    requests_by_label: Counter[str] = field(default_factory=Counter)  # passed auth
    limited_by_label: Counter[str] = field(default_factory=Counter)
    requests_by_endpoint: Counter[str] = field(default_factory=Counter)
    limited_by_endpoint: Counter[str] = field(default_factory=Counter)
    by_status: Counter[int] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    sync_errors: Counter[str] = field(default_factory=Counter)  # Zoom code -> answers
    webhook_events: int = 0  # events created (one per message added while webhooks are on)
    webhook_attempts: int = 0  # requests sent, retries included
    webhook_delivered: int = 0
    webhook_retries: int = 0
    webhook_given_up: int = 0  # events whose last retry failed too
    webhook_validations: Counter[str] = field(default_factory=Counter)  # "ok" / "failed"

    def as_dict(self) -> dict[str, Any]:
        def pairs(requests: Counter[str], limited: Counter[str]) -> dict[str, dict[str, int]]:
            return {
                key: {"requests": requests[key], "rate_limited": limited[key]}
                for key in sorted(requests | limited)
            }

        return {
            "requests_total": self.requests_total,
            "unauthorized": self.unauthorized,
            "tokens_issued": self.tokens_issued,
            "downloads": {"count": self.downloads, "bytes": self.download_bytes},
            "by_label": pairs(self.requests_by_label, self.limited_by_label),
            "by_endpoint": pairs(self.requests_by_endpoint, self.limited_by_endpoint),
            "by_status": {str(status): n for status, n in sorted(self.by_status.items())},
            "faults": dict(sorted(self.faults.items())),
            "sync_errors": dict(sorted(self.sync_errors.items())),
            "webhooks": {
                "events": self.webhook_events,
                "attempts": self.webhook_attempts,
                "delivered": self.webhook_delivered,
                "retries": self.webhook_retries,
                "given_up": self.webhook_given_up,
                "validations": dict(sorted(self.webhook_validations.items())),
            },
        }
