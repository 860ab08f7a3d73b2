"""Real-time capture: Zoom's SMS webhooks, verified, archived before they are acknowledged.

- `verify`: signature, timestamp window, URL validation and replay memory (pure).
- `records`: an event's message in the sync API's shape, so webhook and sync dedupe (pure).
- `gate`: the manifest writer with one session's message writes taking turns, so a late
  event never supersedes the API's version.
- `receiver`: the aiohttp handler and `serve_webhooks`, which the daemon enters when
  `webhook.enabled` is set (see its docstring for why a 200 implies a durable line).
"""

from archiver.webhook.receiver import WebhookReceiver, WebhookStats, serve_webhooks

__all__ = ["WebhookReceiver", "WebhookStats", "serve_webhooks"]
