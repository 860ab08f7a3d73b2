"""Prometheus metrics, `/healthz` and `/readyz` on `metrics.listen` (loopback by default).

Metrics are read from the live objects at scrape time by one custom collector, instead of
sprinkling counter calls through the hot paths: the supervisor, download manager, client,
budgets and writer already count what matters.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from archiver.ops import serving

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class Telemetry:
    """What the collector and the health checks read; filled in by the daemon as it starts."""

    poll_interval: float
    supervisor: Any = None
    downloads: Any = None
    client: Any = None
    budgets: Any = None
    writer: Any = None
    auth: Any = None
    webhooks: Any = None
    replica: Any = None  # archiver.replica.replicator.Replicator, when [replica] is on
    archive_open: bool = False

    def ready(self) -> tuple[bool, str]:
        if not self.archive_open or self.writer is None:
            return False, "archive not open"
        if self.auth is None or not self.auth.valid:
            return False, "no valid access token"
        last = self.supervisor.progress.last_poll_at if self.supervisor else None
        if last is None:
            return False, "no successful poll yet"
        # Allow a slow poll (big windows, rate limits) three intervals plus a minute.
        if time.time() - last > 3 * self.poll_interval + 60:
            return False, f"last successful poll {time.time() - last:.0f} s ago"
        return self._replica_ready()

    def _replica_ready(self) -> tuple[bool, str]:
        if self.replica is None:
            return True, "ok"
        # Archiving goes on regardless; readiness tells the operator the WORM copy lags.
        stats, max_lag = self.replica.stats, self.replica.config.max_lag
        if stats.stopped:
            return False, "replica degraded: replication stopped (see the log)"
        if stats.lag_seconds() > 5 * max_lag:
            return False, f"replica degraded: {stats.lag_seconds():.0f} s behind (> 5 x max_lag)"
        return True, "ok"


class ArchiverCollector(Collector):
    def __init__(self, telemetry: Telemetry) -> None:
        self._t = telemetry

    def collect(self) -> Iterator[Metric]:
        t = self._t
        if t.supervisor is not None:
            yield from self._sync_metrics(t.supervisor)
        if t.downloads is not None:
            yield from self._download_metrics(t.downloads)
        if t.client is not None:
            requests = CounterMetricFamily(
                "zsa_api_requests",
                "Zoom API responses by label and HTTP status",
                labels=["label", "status"],
            )
            for (label, status), count in sorted(t.client.by_label_status.items()):
                requests.add_metric([label, str(status)], count)
            yield requests
        if t.budgets is not None:
            yield from self._budget_metrics(t.budgets.snapshot())
        if t.writer is not None:
            yield GaugeMetricFamily("zsa_manifest_seq", "Last manifest seq", value=t.writer.seq)
        if t.webhooks is not None:
            yield from self._webhook_metrics(t.webhooks.stats)
        if t.replica is not None:
            yield from self._replica_metrics(t.replica.stats)
        yield from self._server_metrics(serving.live_guards())

    @staticmethod
    def _server_metrics(guards: list[serving.ConnectionGuard]) -> Iterator[Metric]:
        shed = CounterMetricFamily(
            "zsa_http_connections_shed",
            "Connections closed by the guard: evicted at the cap (closing, idle, half-sent or "
            "the slowest body), refused (all at work), stalled (an answer unsent for "
            "write_timeout), body_shed (the slowest body, for room in the body budget)",
            labels=["server", "how"],
        )
        for guard in guards:
            shed.add_metric([guard.name, "evicted"], guard.stats.evicted)
            shed.add_metric([guard.name, "refused"], guard.stats.refused)
            shed.add_metric([guard.name, "stalled"], guard.stats.stalled)
            shed.add_metric([guard.name, "body_shed"], guard.stats.bodies_shed)
        yield shed
        bad = CounterMetricFamily(
            "zsa_http_bad_requests",
            "Requests aiohttp's server logged an error for: malformed (answered 400 by aiohttp) "
            "or error (a handler's exception); the log samples them",
            labels=["server", "kind"],
        )
        for guard in guards:
            bad.add_metric([guard.name, "malformed"], guard.stats.malformed)
            bad.add_metric([guard.name, "error"], guard.stats.errors)
        yield bad

    @staticmethod
    def _replica_metrics(stats: Any) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "zsa_replica_lines_behind",
            "Durable manifest lines not yet in the bucket",
            value=stats.lines_behind,
        )
        yield GaugeMetricFamily(
            "zsa_replica_bytes_behind",
            "Manifest bytes not yet in the bucket",
            value=stats.bytes_behind,
        )
        yield GaugeMetricFamily(
            "zsa_replica_lag_seconds",
            "Seconds since the oldest line not yet in the bucket",
            value=stats.lag_seconds(),
        )
        yield GaugeMetricFamily(
            "zsa_replica_seq", "Last manifest seq in the bucket", value=stats.replicated_seq
        )
        uploads = CounterMetricFamily(
            "zsa_replica_uploads", "Objects written to the bucket", labels=["kind"]
        )
        for kind in ("chunk", "blob", "checkpoint", "retention"):
            uploads.add_metric([kind], stats.uploads[kind])
        yield uploads
        failures = CounterMetricFamily(
            "zsa_replica_failures", "Failed replica rounds, by reason", labels=["reason"]
        )
        for reason, count in sorted(stats.failures.items()):
            failures.add_metric([reason], count)
        yield failures
        if stats.last_success is not None:
            yield GaugeMetricFamily(
                "zsa_replica_last_success_timestamp_seconds",
                "Unix time of the last chunk written to the bucket",
                value=stats.last_success,
            )
        yield GaugeMetricFamily(
            "zsa_replica_stopped",
            "1 when replication stopped (a conflict, a refusal no retry fixes, a line too long)",
            value=1 if stats.stopped else 0,
        )

    @staticmethod
    def _webhook_metrics(stats: Any) -> Iterator[Metric]:
        events = CounterMetricFamily(
            "zsa_webhook_requests", "Webhook requests by outcome", labels=["outcome"]
        )
        for outcome in ("archived", "known", "replays", "ignored", "validations", "failed"):
            events.add_metric([outcome], getattr(stats, outcome))
        yield events
        refused = CounterMetricFamily(
            "zsa_webhook_refused", "Webhook requests refused, by reason", labels=["reason"]
        )
        for reason, count in sorted(stats.refused.items()):
            refused.add_metric([reason], count)
        yield refused

    @staticmethod
    def _sync_metrics(supervisor: Any) -> Iterator[Metric]:
        progress = supervisor.progress
        yield CounterMetricFamily(
            "zsa_messages_archived",
            "Message lines written (new messages)",
            value=progress.messages_new,
        )
        yield CounterMetricFamily(
            "zsa_messages_changed",
            "Message lines written for changed content",
            value=progress.messages_changed,
        )
        yield CounterMetricFamily("zsa_sync_pages", "Sync pages made durable", value=progress.pages)
        failures = CounterMetricFamily(
            "zsa_sync_failures", "Failed session steps by error", labels=["error"]
        )
        for kind, count in sorted(progress.failures.items()):
            failures.add_metric([kind], count)
        yield failures
        yield GaugeMetricFamily(
            "zsa_sessions_pending", "Sessions queued or in progress", value=supervisor.pending
        )
        yield GaugeMetricFamily(
            "zsa_sessions_pending_backfill",
            "Known sessions whose backfill is not finished",
            value=supervisor.pending_backfill(),
        )
        yield GaugeMetricFamily(
            "zsa_sessions_incomplete",
            "Known sessions not yet synced to their listed time or whose walk back has not "
            "ended on evidence (failed ones included)",
            value=len(supervisor.incomplete_sessions),
        )
        if progress.last_poll_at is not None:
            yield GaugeMetricFamily(
                "zsa_last_successful_poll_timestamp_seconds",
                "Unix time of the last complete discovery poll",
                value=progress.last_poll_at,
            )

    @staticmethod
    def _download_metrics(downloads: Any) -> Iterator[Metric]:
        stats = downloads.stats
        yield CounterMetricFamily(
            "zsa_attachments_archived", "Attachment lines written", value=stats.done
        )
        yield CounterMetricFamily(
            "zsa_attachment_bytes", "Attachment bytes downloaded and stored", value=stats.bytes
        )
        yield CounterMetricFamily(
            "zsa_url_refreshes", "Fresh download URLs fetched", value=stats.refreshes
        )
        failed = CounterMetricFamily(
            "zsa_attachments_failed", "attachment_failed lines by reason", labels=["reason"]
        )
        for reason, count in sorted(stats.failures_by_reason.items()):
            failed.add_metric([reason], count)
        yield failed
        parkings = CounterMetricFamily(
            "zsa_download_parkings",
            "Download tries that brought no file and no evidence (the job waits and retries): "
            "a refused URL refresh by policy action, file_host, url_refused",
            labels=["reason"],
        )
        for reason, count in sorted(stats.parkings_by_reason.items()):
            parkings.add_metric([reason], count)
        yield parkings
        yield CounterMetricFamily(
            "zsa_download_resource_waits",
            "Download tries put off because the process ran out of descriptors or memory "
            "(the log has one line per minute of such an episode)",
            value=stats.resource_waits,
        )
        yield GaugeMetricFamily(
            "zsa_downloads_parked",
            "Attachments waiting after a try that brought no file",
            value=downloads.parked,
        )
        yield CounterMetricFamily(
            "zsa_download_jobs_reloaded",
            "Pending jobs found in the ledger after start (not handed over by sync)",
            value=stats.reloaded,
        )
        yield GaugeMetricFamily(
            "zsa_download_queue_depth", "Attachments waiting or downloading", value=downloads.depth
        )
        earliest = downloads.earliest_deadline()
        if earliest is not None:
            yield GaugeMetricFamily(
                "zsa_download_earliest_deadline_margin_seconds",
                "Seconds until the earliest queued download URL expires",
                value=earliest - time.time(),
            )

    @staticmethod
    def _budget_metrics(snapshot: dict[str, dict[str, Any]]) -> Iterator[Metric]:
        limited = CounterMetricFamily("zsa_api_429", "429 responses by label", labels=["label"])
        waited = CounterMetricFamily(
            "zsa_throttle_wait_seconds", "Time spent waiting for budget", labels=["label"]
        )
        rate = GaugeMetricFamily(
            "zsa_budget_rate", "Current allowed request rate (req/s)", labels=["label"]
        )
        ceiling = GaugeMetricFamily(
            "zsa_budget_configured_rate",
            "Configured share of the label's rate (req/s)",
            labels=["label"],
        )
        utilisation = GaugeMetricFamily(
            "zsa_budget_utilisation", "Recent request rate / configured rate", labels=["label"]
        )
        for label, values in sorted(snapshot.items()):
            limited.add_metric([label], values.get("rate_limited") or 0)
            waited.add_metric([label], values.get("wait_seconds") or 0.0)
            if values.get("current_rate") is not None:
                rate.add_metric([label], values["current_rate"])
            if values.get("configured_rate"):
                ceiling.add_metric([label], values["configured_rate"])
                recent = values.get("recent_rate") or 0.0
                utilisation.add_metric([label], recent / values["configured_rate"])
        yield from (limited, waited, rate, ceiling, utilisation)


class PidProcessCollector(ProcessCollector):
    """The standard process_* metrics (memory, CPU, descriptors and their limit, start time)
    from /proc/self alone, so that they survive the units' ProcSubset=pid. The stock collector
    takes the boot time from /proc/stat, which that hides, and then reports nothing at all;
    here the boot time is the wall clock minus CLOCK_BOOTTIME, which needs no file."""

    def __init__(self) -> None:
        super().__init__(registry=None)

    def _boot_time(self) -> float:
        return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)


def build_registry(telemetry: Telemetry) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ArchiverCollector(telemetry))
    registry.register(PidProcessCollector())
    return registry


def build_app(telemetry: Telemetry) -> web.Application:
    registry = build_registry(telemetry)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE})

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        ready, reason = telemetry.ready()
        return web.json_response(
            {"status": "ready" if ready else "not ready", "reason": reason},
            status=200 if ready else 503,
        )

    # Capped, with header and keep-alive deadlines: the port needs no secret (serving.py).
    app = serving.guarded_app("metrics", serving.METRICS_LIMITS)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def start_server(telemetry: Telemetry, host: str, port: int) -> web.AppRunner:
    runner, _site = await serving.start(build_app(telemetry), serving.METRICS_LIMITS, host, port)
    return runner
