"""A Zoom Phone SMS simulator on loopback, for tests, the demo and benchmarks.

Two aiohttp servers: the API port serves Zoom's endpoints plus the simulator's own controls;
the file port serves attachment downloads.

- `POST {base}/oauth/token?grant_type=account_credentials&account_id=..`: Server-to-Server
  OAuth, `Authorization: Basic base64(client_id:client_secret)`;
- `GET {base}/v2/phone/sms/sessions`: the account's sessions (page_size, next_page_token,
  from/to, session_type, filter_type, phone_number);
- `GET {base}/v2/phone/sms/sessions/{id}/sync`: FSync / BSync / ISync (model in `sync`);
- `GET {base}/v2/phone/sms/sessions/{id}/messages/{message_id}`: one message, fresh URLs;
- `GET {base}/v2/phone/sms/sessions/{id}`: session details (page_size, next_page_token,
  from/to, sort, delivery_status);
- `GET {file}/file/download/{attachment_id}?jwt=..`: attachment bytes (see `files`);
- `{base}/_sim/...`: truth, stats, switches, messages, revoke, delete, webhook validation
  (see `control`).

With `webhook_url` set, every message added while running is also posted there as Zoom's
signed `phone.sms_*` event, retried on Zoom's schedule (see `webhooks`).

`Simulator.api_url` is `{base}/v2` and the token response's `api_url` is `{base}`, without
`/v2`, as Zoom's regional `https://api-eu.zoom.us`: clients append `/v2` to it.

Ground truth (`Simulator.ground_truth()`, `GET /_sim/truth`): one line per message,
`{"kind": "message", "session_id", "message_id", "record"}`, where `record` is the message
exactly as the API returns it except that every `attachments[].download_url` has lost its
query string (`?jwt=...`); then, after the first message that carries it, one line per
distinct attachment, `{"kind": "attachment", "session_id", "message_id", "attachment_id",
"size", "sha256"}`. A deleted session's lines stay, with `"deleted": true`: all its messages
could be fetched before deletion. URLs contain the file host's port, so two simulators
compare equal only after replacing their `file_url`.

Data is deterministic: the same data knobs (seed, sessions, anchor, sizes...) give
byte-identical records. The default anchor, "now", is the start of the current UTC day, so
the history ends today (Zoom lists the last 30 days by default and keeps SMS for a limited
time); pin `anchor` to a fixed time for data that is identical on every day.
`add_messages` and live traffic add messages stamped with the current time.
"""

from archiver.simulator.config import SimulatorConfig
from archiver.simulator.server import Simulator

__all__ = ["Simulator", "SimulatorConfig"]
