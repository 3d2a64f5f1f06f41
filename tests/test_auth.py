"""Token verification (trio_stock.auth): what is accepted, and every way a token is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from trio_stock import Secret
from trio_stock.auth import Grant, InvalidToken, TokenVerifier
from trio_stock.errors import ConfigError
from trio_stock.model import Market

NOW = 1_800_000_000.0
SECRET = "s" * 40


def claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "alice", "exp": NOW + 3600, **extra}


def pem(private: Any) -> str:
    return str(
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, Any], payload: dict[str, Any], key: bytes) -> str:
    """A token built by hand, HMAC-signed with ``key`` (PyJWT refuses to make such)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


@pytest.fixture
def hmac_verifier() -> TokenVerifier:
    return TokenVerifier.from_secret(Secret(SECRET))


def test_an_hs256_token_gives_its_grant(hmac_verifier: TokenVerifier) -> None:
    token = jwt.encode(
        claims(markets=["KR"], max_symbols=10, max_connections=2, admin=True), SECRET, "HS256"
    )
    assert hmac_verifier.verify(token, NOW) == Grant(
        subject="alice",
        expires_at=NOW + 3600,
        markets=frozenset({Market.KR}),
        max_symbols=10,
        max_connections=2,
        admin=True,
    )


@pytest.mark.parametrize(
    "factory",
    [
        lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
        lambda: ec.generate_private_key(ec.SECP256R1()),
        ed25519.Ed25519PrivateKey.generate,
    ],
    ids=["RS256", "ES256", "EdDSA"],
)
def test_each_public_key_type_verifies_its_algorithm(tmp_path: Path, factory: Any) -> None:
    private = factory()
    path = tmp_path / "key.pem"
    path.write_text(pem(private))
    verifier = TokenVerifier.from_key_file(path)
    algorithm = verifier._keys[0].algorithm
    assert verifier.verify(jwt.encode(claims(), private, algorithm), NOW).subject == "alice"


@pytest.fixture
def rsa_setup(tmp_path: Path) -> tuple[Any, Path]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "key.pem"
    path.write_text(pem(private))
    return private, path


def test_an_hs256_token_signed_with_the_public_key_is_refused(
    rsa_setup: tuple[Any, Path],
) -> None:
    _private, path = rsa_setup
    verifier = TokenVerifier.from_key_file(path)
    token = forged({"alg": "HS256", "typ": "JWT"}, claims(), path.read_bytes())
    with pytest.raises(InvalidToken, match="not signed with RS256"):
        verifier.verify(token, NOW)


def test_alg_none_is_refused(hmac_verifier: TokenVerifier) -> None:
    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    unsigned = f"{header}.{b64(json.dumps(claims()).encode())}."
    with pytest.raises(InvalidToken, match="not signed with HS256"):
        hmac_verifier.verify(unsigned, NOW)


@pytest.mark.parametrize(
    ("payload", "options", "reason"),
    [
        (claims(aud="other"), {"audience": "trio"}, "audience"),
        (claims(), {"audience": "trio"}, "'aud'"),  # required once configured
        (claims(iss="mallory"), {"issuer": "https://issuer"}, "issuer"),
        ({"sub": "alice"}, {}, "'exp'"),
        ({"exp": NOW + 60}, {}, "'sub'"),
        (claims(exp=NOW - 31), {}, "expired"),
        (claims(nbf=NOW + 31), {}, "not valid yet"),
        (claims(exp="tomorrow"), {}, "'exp' must be a number"),
        (claims(markets=["KR", "JP"]), {}, "'markets'"),
        (claims(max_symbols=0), {}, "'max_symbols'"),
        (claims(admin="yes"), {}, "'admin'"),
        (claims(sub=""), {}, "'sub'"),
    ],
)
def test_claims_that_are_refused(payload: dict[str, Any], options: Any, reason: str) -> None:
    verifier = TokenVerifier.from_secret(Secret(SECRET), **options)
    token = jwt.encode(payload, SECRET, "HS256")
    with pytest.raises(InvalidToken, match=reason) as refused:
        verifier.verify(token, NOW)
    assert token not in str(refused.value)


def test_times_have_a_small_leeway(hmac_verifier: TokenVerifier) -> None:
    assert hmac_verifier.verify(jwt.encode(claims(exp=NOW - 29), SECRET, "HS256"), NOW)
    assert hmac_verifier.verify(jwt.encode(claims(nbf=NOW + 29), SECRET, "HS256"), NOW)


def test_a_tampered_signature_or_payload_is_refused(hmac_verifier: TokenVerifier) -> None:
    token = jwt.encode(claims(), SECRET, "HS256")
    head, payload, signature = token.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    with pytest.raises(InvalidToken, match="signature"):
        hmac_verifier.verify(f"{head}.{payload}.{flipped}", NOW)
    richer = b64(json.dumps(claims(admin=True)).encode())
    with pytest.raises(InvalidToken, match="signature"):
        hmac_verifier.verify(f"{head}.{richer}.{signature}", NOW)
    with pytest.raises(InvalidToken, match="signature"):
        hmac_verifier.verify(jwt.encode(claims(), "t" * 40, "HS256"), NOW)


@pytest.mark.parametrize("junk", ["", "x", "a.b.c", "a" * 9000, "é.é.é", "..", "e30.e30.e30"])
def test_junk_is_refused_cleanly(hmac_verifier: TokenVerifier, junk: str) -> None:
    with pytest.raises(InvalidToken):
        hmac_verifier.verify(junk, NOW)


def test_a_jwks_document_chooses_the_key_by_kid(tmp_path: Path) -> None:
    first = ec.generate_private_key(ec.SECP256R1())
    second = ed25519.Ed25519PrivateKey.generate()
    keys = []
    for kid, private, algorithm in (("k1", first, "ES256"), ("k2", second, "EdDSA")):
        keys.append({**_public_jwk(private, algorithm), "kid": kid})
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": keys}))
    verifier = TokenVerifier.from_key_file(path)
    assert verifier.verify(jwt.encode(claims(), first, "ES256", headers={"kid": "k1"}), NOW)
    assert verifier.verify(jwt.encode(claims(), second, "EdDSA", headers={"kid": "k2"}), NOW)
    with pytest.raises(InvalidToken, match="unknown key"):
        verifier.verify(jwt.encode(claims(), first, "ES256", headers={"kid": "k9"}), NOW)
    with pytest.raises(InvalidToken, match="unknown key"):
        verifier.verify(jwt.encode(claims(), first, "ES256"), NOW)  # no kid, several keys
    with pytest.raises(InvalidToken):  # the right kid, the wrong key
        verifier.verify(jwt.encode(claims(), first, "ES256", headers={"kid": "k2"}), NOW)


def _public_jwk(private: Any, algorithm: str) -> dict[str, Any]:
    algo = jwt.get_algorithm_by_name(algorithm)
    return dict(json.loads(algo.to_jwk(private.public_key())))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not a key", "not a PEM public key"),
        ('{"keys": []}', "non-empty"),
        ('{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}', "only public"),
        ("{", "not JSON"),
    ],
)
def test_bad_key_files_stop_the_start(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "key"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        TokenVerifier.from_key_file(path)


def test_a_private_jwk_or_a_short_secret_is_refused(tmp_path: Path) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.get_algorithm_by_name("ES256").to_jwk(private))
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk]}))
    with pytest.raises(ConfigError, match="only public"):
        TokenVerifier.from_key_file(path)
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        TokenVerifier.from_secret(Secret("short"))
