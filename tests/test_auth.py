"""Bearer auth over HTTP: static rotated tokens, JWT mode, refusal to start unprotected."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient

from main import create_app
from skyhigh.api.tokens import InvalidToken, TokenVerifier
from tests.support.client import without_auth
from tests.support.settings import TOKENS, make_settings

JWT_SECRET = "jwt-test-secret-that-is-long-enough-for-hs256"


def status_of(client: TestClient, authorization: str | None) -> tuple[int, str | None]:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = client.get("/events/", headers=headers)
    return response.status_code, response.headers.get("WWW-Authenticate")


def test_static_token_matrix(client: TestClient) -> None:
    with without_auth(client) as anonymous:
        check_static_tokens(anonymous)


def check_static_tokens(anonymous: TestClient) -> None:
    assert status_of(anonymous, None) == (401, "Bearer")
    assert status_of(anonymous, f"Basic {TOKENS[0]}") == (401, "Bearer")
    assert status_of(anonymous, "Bearer") == (401, "Bearer")
    assert status_of(anonymous, "Bearer wrong-token") == (401, 'Bearer error="invalid_token"')
    assert status_of(anonymous, f"Bearer {TOKENS[0]}x") == (401, 'Bearer error="invalid_token"')
    for token in TOKENS:  # every rotated token works at once
        assert status_of(anonymous, f"Bearer {token}") == (200, None)
    response = anonymous.get("/events/", headers={"Authorization": "Bearer wrong-token"})
    assert response.json()["detail"] == "the bearer token is not valid"


@pytest.fixture(scope="module")
def jwt_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = make_settings(
        tmp_path_factory.mktemp("jwt"),
        auth_mode="jwt",
        jwt_secret=JWT_SECRET,
        jwt_audience="skyhigh-api",
        jwt_issuer="https://issuer.test",
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def make_jwt(**overrides: object) -> str:
    claims: dict[str, object] = {
        "sub": "app-1",
        "aud": "skyhigh-api",
        "iss": "https://issuer.test",
        "exp": int(time.time()) + 300,
    }
    claims.update(overrides)
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, JWT_SECRET, "HS256")


def test_jwt_matrix(jwt_client: TestClient) -> None:
    assert status_of(jwt_client, f"Bearer {make_jwt()}")[0] == 200
    cases = {
        "expired": make_jwt(exp=int(time.time()) - 60),
        "audience": make_jwt(aud="someone-else"),
        "issuer": make_jwt(iss="https://evil.test"),
        "exp": make_jwt(exp=None),
        "not valid": jwt.encode(
            {"exp": int(time.time()) + 60, "aud": "skyhigh-api", "iss": "https://issuer.test"},
            "other-secret-" * 4,
            "HS256",
        ),
    }
    for expected, token in cases.items():
        response = jwt_client.get("/events/", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, expected
        assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
        assert expected in response.json()["detail"], response.json()
    # Static tokens are not accepted in JWT mode.
    assert status_of(jwt_client, f"Bearer {TOKENS[0]}")[0] == 401


def test_jwt_rs256_and_algorithm_allowlist(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    settings = make_settings(
        tmp_path, auth_mode="jwt", jwt_public_key=public_pem, jwt_algorithms="RS256"
    )
    verifier = TokenVerifier(settings)
    good = jwt.encode({"sub": "svc", "exp": int(time.time()) + 60}, key, algorithm="RS256")
    assert verifier.verify(good).subject == "svc"
    # An HS256 token signed with the public key text (the classic confusion attack) fails.
    forged = jwt.encode(
        {"sub": "x", "exp": int(time.time()) + 60}, "forged-" * 8, algorithm="HS256"
    )
    with pytest.raises(InvalidToken):
        verifier.verify(forged)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"api_tokens": ""}, "API_TOKENS is empty"),
        ({"api_tokens": "change-me"}, "placeholder"),
        ({"auth_mode": "jwt"}, "JWT_SECRET or JWT_PUBLIC_KEY"),
    ],
)
def test_service_refuses_to_start_unprotected(
    tmp_path: Path, overrides: dict[str, str], message: str
) -> None:
    app = create_app(make_settings(tmp_path, **overrides))
    with pytest.raises(ValueError, match=message), TestClient(app):
        pass


def test_explicit_dev_mode_serves_without_a_token(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, api_tokens="", allow_insecure_dev_mode=True)
    with TestClient(create_app(settings)) as open_client:
        assert open_client.get("/events/").status_code == 200


def test_a_jwt_is_decoded_once_per_request(
    jwt_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The edge middleware verifies; the route dependencies read its outcome from the scope."""
    decoded: list[str] = []
    decode = jwt.decode

    def counting_decode(token: str, *args: object, **kwargs: object) -> object:
        decoded.append(token)
        return decode(token, *args, **kwargs)  # type: ignore[arg-type]

    token = make_jwt()
    headers = {"Authorization": f"Bearer {token}"}
    monkeypatch.setattr(jwt, "decode", counting_decode)
    event = {"event_id": "once-1", "event_type": "query", "event_data": {"text": "bags"}}
    requests: dict[str, Callable[[], httpx.Response]] = {
        "list": lambda: jwt_client.get("/events/", headers=headers),
        "submit": lambda: jwt_client.post("/events/", json=event, headers=headers),
        "read": lambda: jwt_client.get("/events/once-1", headers=headers),
        "openai": lambda: jwt_client.get("/v1/models", headers=headers),
    }
    for name, send in requests.items():
        decoded.clear()
        response = send()
        assert response.status_code in (200, 202), (name, response.text)
        assert decoded == [token], name
    decoded.clear()
    # A browser's WebSocket: the token as a subprotocol, verified once at the handshake.
    with jwt_client.websocket_connect(
        "/events/once-1/ws", subprotocols=["bearer", token]
    ) as socket:
        assert socket.accepted_subprotocol == "bearer"
        assert json.loads(socket.receive_text())["type"] == "status"
    assert decoded == [token]
    decoded.clear()
    refused = jwt_client.get("/events/", headers={"Authorization": "Bearer not.a.jwt"})
    assert refused.status_code == 401 and len(decoded) == 1
