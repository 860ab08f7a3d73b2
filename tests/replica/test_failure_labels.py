"""A failed bucket call is counted under a label from a fixed set, never under text the far
side chose (an S3 endpoint, or a proxy in front of it, can send any `<Code>`)."""

from __future__ import annotations

import aiohttp
from botocore.exceptions import ClientError, EndpointConnectionError

from archiver.replica.bucket import KNOWN_CODES, describe, failure_label


def client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject"
    )


def test_invented_codes_fall_into_status_classes() -> None:
    labels = {
        failure_label(client_error(f"SlowDown-from-edge-{i}.proxy.example:{i}", status))
        for i in range(1000)
        for status in (400, 403, 503, 302)
    }
    assert labels == {"http_4xx", "http_5xx", "http_other"}
    # The raw code stays available for the log line.
    assert describe(client_error("Weird-Code-7", 503)) == "Weird-Code-7"


def test_known_codes_keep_their_name_and_the_rest_is_by_kind() -> None:
    for code in KNOWN_CODES:
        assert failure_label(client_error(code, 400)) == code
    assert failure_label(TimeoutError()) == "timeout"
    assert failure_label(ConnectionRefusedError()) == "connection"
    assert failure_label(aiohttp.ClientConnectionError()) == "connection"
    assert failure_label(EndpointConnectionError(endpoint_url="http://127.0.0.1:9")) == (
        "connection"
    )
    assert failure_label(ValueError("anything at all")) == "other"
