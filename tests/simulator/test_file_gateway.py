"""`file_gateway_probability`: a gateway in front of the file host answers 404, 403 or 502 with
an HTML page and no code, by the odds; the file behind it is untouched (issue 14, finding 6)."""

from __future__ import annotations

import hashlib
import random

import pytest

from archiver.errors import ConfigError
from archiver.simulator import Simulator
from archiver.simulator.faults import file_gateway_answer

from .conftest import Zoom, small_config
from .test_files import attachment_lines, fresh_urls


def test_file_gateway_draws_by_the_odds_and_not_at_all_when_off() -> None:
    rng = random.Random(3)
    on = small_config(file_gateway_probability=0.25)
    answers = [file_gateway_answer(on, rng) for _ in range(8_000)]
    pages = [a for a in answers if a is not None]
    assert len(pages) == pytest.approx(2_000, abs=200)
    assert {a.status for a in pages} == {403, 404, 502}
    assert {a.content_type for a in pages} == {"text/html"}
    before = rng.getstate()
    assert file_gateway_answer(small_config(), rng) is None
    assert rng.getstate() == before  # off: no draw, the other faults keep their sequence
    with pytest.raises(ConfigError, match="file_gateway_probability"):
        small_config(file_gateway_probability=1.5)


async def test_the_file_host_gateway_answers_html_then_the_file_comes(
    zoom: Zoom, sim: Simulator
) -> None:
    truth = attachment_lines(sim)
    attachments = await fresh_urls(zoom, sim)
    attachment_id, att = next(iter(attachments.items()))
    sim.set_switches(file_gateway_probability=1.0)
    statuses = set()
    for _ in range(30):
        async with zoom.http.get(att["download_url"]) as response:
            body = await response.read()
            statuses.add(response.status)
            assert response.content_type == "text/html"
            assert b'"code"' not in body and b"<html>" in body
    assert statuses == {403, 404, 502}
    assert sim.stats()["faults"]["file_gateway"] == 30
    # Not the API: only the file host is behind this gateway.
    assert (await zoom.get("/phone/sms/sessions")).status == 200
    sim.set_switches(file_gateway_probability=0.0)
    async with zoom.http.get(att["download_url"]) as response:
        assert response.status == 200
        body = await response.read()
    assert hashlib.sha256(body).hexdigest() == truth[attachment_id]["sha256"]
