"""Authentication and safety: every route behind auth, sessions, CSRF, tokens, rate limiting, tickets."""

from __future__ import annotations

import re
from typing import Any

import pytest
from starlette.testclient import WebSocketDenialResponse

from .conftest import PASSWORD, USER, Api, unique

PUBLIC = {("get", "/api/health"), ("post", "/api/login"), ("get", "/api/openapi.json"), ("get", "/api/docs")}


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "ct-api-nothing", path)


def _operations(api: Api) -> list[tuple[str, str]]:
    schema: dict[str, Any] = api.client.get("/api/openapi.json").json()
    return [(method, path) for path, ops in schema["paths"].items() for method in ops]


def test_public_paths_answer_without_credentials(api: Api) -> None:
    assert api.client.get("/api/health").json()["status"] == "ok"
    assert api.client.get("/api/openapi.json").status_code == 200
    docs = api.client.get("/api/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    home = api.client.get("/")
    assert home.status_code == 200 and 'href="/api/docs"' in home.text and "/ui/js/app.js" in home.text


def test_every_route_of_the_schema_needs_credentials(api: Api) -> None:
    operations = _operations(api)
    assert len(operations) >= 30
    walked = 0
    for method, path in operations:
        if (method, path) in PUBLIC:
            continue
        for headers in ({}, {"Authorization": "Bearer corral_nope.nope"}, {"Authorization": "Basic YTpi"},
                        {"Cookie": "corral_session=forged"}):
            response = api.client.request(method.upper(), _concrete(path), headers=headers,
                                          json={"name": "ct-api-x", "image": "tiny"})
            assert response.status_code == 401, (method, path, headers, response.text)
            assert set(response.json()) == {"error"}
            walked += 1
    assert walked >= 4 * 30
    # Unknown paths too: nothing is answered before authentication.
    assert api.client.get("/api/not-a-route").status_code == 401
    # The WebSocket is refused as well, with the same answer to its handshake.
    with pytest.raises(WebSocketDenialResponse) as refused, api.client.websocket_connect("/api/ws/stats"):
        pass
    assert refused.value.status_code == 401 and set(refused.value.json()) == {"error"}


def test_schema_declares_security_except_public_routes(api: Api) -> None:
    schema = api.client.get("/api/openapi.json").json()
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            if (method, path) in PUBLIC:
                assert op["security"] == []
            else:
                assert op["security"], (method, path)


def test_login_sets_a_strict_httponly_cookie_and_logout_ends_the_session(api: Api) -> None:
    response = api.client.post("/api/login", json={"user": USER, "password": PASSWORD})
    assert response.status_code == 200
    body = response.json()
    assert body["user"] == USER and len(body["csrf_token"]) >= 32
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie
    api.csrf = body["csrf_token"]
    assert api.client.get("/api/session").json() == {"user": USER, "via": "session"}
    assert api.client.post("/api/logout", headers=api.csrf_header).json() == {"logged_out": True}
    assert api.client.get("/api/session").status_code == 401


def test_cookie_is_secure_over_https(api: Api) -> None:
    api.client.base_url = "https://testserver"
    response = api.client.post("/api/login", json={"user": USER, "password": PASSWORD})
    assert "Secure" in response.headers["set-cookie"]


def test_wrong_password_and_unknown_user_are_the_same_401(api: Api) -> None:
    wrong = api.client.post("/api/login", json={"user": USER, "password": "not the password"})
    nobody = api.client.post("/api/login", json={"user": "nobody", "password": "whatever!"})
    assert wrong.status_code == nobody.status_code == 401
    assert wrong.json() == nobody.json() == {"error": "wrong user name or password"}
    assert "set-cookie" not in wrong.headers


def test_csrf_token_is_required_for_unsafe_methods_with_a_cookie(api: Api) -> None:
    api.login()
    target = "/api/domains/ct-api-nothing/start"
    assert api.client.get("/api/domains/ct-api-nothing").status_code == 404  # reads need no CSRF token
    for headers in ({}, {"X-CSRF-Token": "wrong"}, {"X-CSRF-Token": ""}):
        response = api.client.post(target, headers=headers)
        assert response.status_code == 403, headers
        assert response.json() == {"error": "missing or wrong X-CSRF-Token header"}
    assert api.client.delete("/api/domains/ct-api-nothing").status_code == 403
    assert api.client.post(target, headers=api.csrf_header).status_code == 404  # through auth: no such domain
    # Another session's token does not do.
    other = api.auth.login(USER, PASSWORD)
    assert other is not None
    assert api.client.post(target, headers={"X-CSRF-Token": other.csrf}).status_code == 403


def test_bearer_token_needs_no_csrf_token(api: Api) -> None:
    api.client.cookies.clear()
    assert api.client.get("/api/session", headers=api.bearer).json() == {"user": USER, "via": "token"}
    response = api.client.post("/api/domains/ct-api-nothing/start", headers=api.bearer)
    assert response.status_code == 404


def test_login_rate_limit(api: Api) -> None:
    for _ in range(3):
        assert api.client.post("/api/login", json={"user": USER, "password": "guess-guess"}).status_code == 401
    limited = api.client.post("/api/login", json={"user": USER, "password": PASSWORD})  # even the right one
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) > 0 and "too many failed logins" in limited.json()["error"]
    assert api.client.post("/api/login", json={"user": "bob", "password": "x" * 8}).status_code == 401  # per user
    api.clock.advance(2)
    assert api.client.post("/api/login", json={"user": USER, "password": PASSWORD}).status_code == 200


def test_sessions_expire_when_idle(api: Api) -> None:
    api.login()
    api.clock.advance(api.auth.session_idle_s - 1)
    assert api.client.get("/api/session").status_code == 200  # seen: the idle time starts again
    api.clock.advance(api.auth.session_idle_s - 1)
    assert api.client.get("/api/session").status_code == 200
    api.clock.advance(api.auth.session_idle_s + 1)
    expired = api.client.get("/api/session")
    assert expired.status_code == 401 and "expired" in expired.json()["error"]


def test_sessions_expire_after_the_longest_lifetime(api: Api) -> None:
    api.login()
    for _ in range(int(api.auth.session_max_s // 1800)):
        api.clock.advance(1800)
        api.client.get("/api/session")
    api.clock.advance(1800)
    assert api.client.get("/api/session").status_code == 401


def test_metrics_needs_a_bearer_token(api: Api) -> None:
    api.login()
    refused = api.client.get("/metrics")
    assert refused.status_code == 401 and "Bearer" in refused.json()["error"]
    api.corral.monitoring.one_sample(0.2)
    response = api.client.get("/metrics", headers=api.bearer)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    assert 'corral_host_state{host="local",state="up"} 1.0' in response.text


def test_removed_user_loses_sessions_and_tokens(api: Api) -> None:
    store = api.creds.store
    name = "ct-temp-user"
    store.add(name, "temporary-password")
    token, _ = store.create_token(name, "x")
    api.login(name, "temporary-password")
    assert api.client.get("/api/session").json()["user"] == name
    assert api.client.get("/api/session", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    store.remove(name)
    assert api.client.get("/api/session").status_code == 401
    assert api.client.get("/api/session", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_console_ticket_is_one_time_short_lived_and_tied_to_its_session(api: Api) -> None:
    guest = unique("ticket")
    api.corral.guests.create(_spec(guest))
    api.login()
    assert api.client.post("/api/domains/ct-api-nothing/console-ticket", headers=api.csrf_header).status_code == 404
    assert api.client.post(f"/api/domains/{guest}/console-ticket").status_code == 403  # CSRF applies
    response = api.client.post(f"/api/domains/{guest}/console-ticket", headers=api.csrf_header)
    assert response.status_code == 200
    body = response.json()
    assert body["domain"] == guest and body["expires_in_s"] == 30
    session_key = api.client.cookies.get("corral_session")
    assert api.auth.redeem_ticket(body["ticket"], guest, session_key) == USER
    assert api.auth.redeem_ticket(body["ticket"], guest, session_key) is None  # once only

    def fresh() -> str:
        return str(api.client.post(f"/api/domains/{guest}/console-ticket", headers=api.csrf_header).json()["ticket"])

    assert api.auth.redeem_ticket(fresh(), "ct-api-other", session_key) is None  # another domain
    assert api.auth.redeem_ticket(fresh(), guest, "another-session") is None  # another session
    late = fresh()
    api.clock.advance(31)
    assert api.auth.redeem_ticket(late, guest, session_key) is None  # expired
    ticket = fresh()
    api.client.post("/api/logout", headers=api.csrf_header)
    assert api.auth.redeem_ticket(ticket, guest, session_key) is None  # the session ended
    token_ticket = api.client.post(f"/api/domains/{guest}/console-ticket", headers=api.bearer).json()["ticket"]
    assert api.auth.redeem_ticket(token_ticket, guest) == USER


def _spec(name: str) -> Any:
    from corral.core.spec import GuestSpec

    return GuestSpec(name, "tiny", memory_mib=128)


def test_concurrent_guesses_cannot_slip_past_the_rate_limit(api: Api) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from corral.api.throttle import TooManyAttempts

    def guess(i: int) -> str:
        try:
            return "wrong" if api.auth.login(USER, f"guess-number-{i}") is None else "in"
        except TooManyAttempts:
            return "limited"

    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(guess, range(16)))
    assert outcomes.count("wrong") == 3 and outcomes.count("limited") == 13

