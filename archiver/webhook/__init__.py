"""Real-time capture: Zoom's SMS webhooks, verified, archived before they are acknowledged.

- `verify`: signature, timestamp window, URL validation and replay memory (pure).
- `records`: which events carry a message, and the record kept: `payload.object` as sent
  (pure); the sync API's record of it later is a second version (`supersedes`).
- `gate`: the manifest writer with one session's message writes taking turns, so a late
  event never supersedes the API's version.
- `receiver`: the aiohttp handler and `serve_webhooks`, which the daemon enters when
  `webhook.enabled` is set (see its docstring for why a 200 implies a durable line).
"""

from archiver.webhook.receiver import WebhookReceiver, WebhookStats, serve_webhooks

__all__ = ["WebhookReceiver", "WebhookStats", "serve_webhooks"]
