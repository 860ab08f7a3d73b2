"""OAuth over real sockets: issue, refusal, expiry, revocation."""

from __future__ import annotations

import asyncio

import aiohttp

from archiver.simulator import Simulator

from .conftest import Zoom, running

INVALID = {"code": 124, "message": "Invalid access token."}


async def test_token_is_issued_like_zoom(zoom: Zoom, sim: Simulator) -> None:
    answer = await zoom.fetch_token()
    assert answer.status == 200
    body = answer.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3599
    assert "phone:read:admin" in body["scope"]
    # api_url is the base without /v2, as Zoom's regional hosts; clients append /v2.
    assert body["api_url"] + "/v2" == sim.api_url
    assert sim.stats()["tokens_issued"] == 1


async def test_credentials_in_a_form_body_are_accepted(zoom: Zoom, sim: Simulator) -> None:
    auth = aiohttp.encode_basic_auth(sim.client_id, sim.client_secret)
    form = {"grant_type": "account_credentials", "account_id": sim.account_id}
    async with zoom.http.post(sim.oauth_url, data=form, headers={"Authorization": auth}) as r:
        assert r.status == 200
        assert (await r.json())["access_token"]


async def test_wrong_secret_account_or_grant_is_refused(zoom: Zoom, sim: Simulator) -> None:
    wrong = aiohttp.encode_basic_auth(sim.client_id, "not-the-secret")
    query = {"grant_type": "account_credentials", "account_id": sim.account_id}
    answer = await zoom.request("POST", sim.oauth_url, params=query, auth=wrong)
    assert answer.status == 401
    assert answer.json() == {
        "reason": "Invalid client_id or client_secret",
        "error": "invalid_client",
    }
    answer = await zoom.request("POST", sim.oauth_url, params=query, auth=None)
    assert answer.status == 401
    answer = await zoom.fetch_token(account_id="someone-else")
    assert answer.status == 400
    assert answer.json()["error"] == "invalid_client"
    answer = await zoom.fetch_token(grant_type="client_credentials")
    assert answer.status == 400
    assert answer.json()["error"] == "unsupported_grant_type"
    assert sim.stats()["tokens_issued"] == 0


async def test_api_without_or_with_unknown_token_is_124(zoom: Zoom, sim: Simulator) -> None:
    answer = await zoom.request("GET", sim.api_url + "/phone/sms/sessions")
    assert (answer.status, answer.json()) == (401, INVALID)
    answer = await zoom.request("GET", sim.api_url + "/phone/sms/sessions", auth="Bearer forged")
    assert (answer.status, answer.json()) == (401, INVALID)
    assert sim.stats()["unauthorized"] == 2


async def test_expired_token_is_124(http: aiohttp.ClientSession) -> None:
    async with running(token_lifetime=0.3) as sim:
        zoom = Zoom(sim, http)
        assert (await zoom.fetch_token()).json()["expires_in"] == 1
        await zoom.login()
        assert (await zoom.get("/phone/sms/sessions")).status == 200
        await asyncio.sleep(0.4)
        messages = set()
        for _ in range(12):
            answer = await zoom.get("/phone/sms/sessions")
            assert answer.status == 401
            assert answer.json()["code"] == 124
            messages.add(answer.json()["message"])
        # Zoom words it either way for an expired token.
        assert messages == {"Invalid access token.", "Access token has expired."}
        await zoom.login()
        assert (await zoom.get("/phone/sms/sessions")).status == 200


async def test_revoked_tokens_are_124_and_new_ones_work(zoom: Zoom, sim: Simulator) -> None:
    await zoom.login()
    assert (await zoom.get("/phone/sms/sessions")).status == 200
    assert sim.revoke_tokens() == 1
    answer = await zoom.get("/phone/sms/sessions")
    assert (answer.status, answer.json()) == (401, INVALID)
    await zoom.login()
    assert (await zoom.get("/phone/sms/sessions")).status == 200
