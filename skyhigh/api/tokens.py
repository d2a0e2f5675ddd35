"""Bearer token and JWT verification: pure functions, no web framework.

What each credential grants (its principal and scopes) is decided in skyhigh.domain.tenancy.
"""

from __future__ import annotations

import hmac

import jwt

from skyhigh.config import AuthSettings
from skyhigh.domain.tenancy import MAX_SUBJECT_LENGTH, Principal


class InvalidToken(Exception):
    """The presented credential is not valid; the message is safe to show (no token in it)."""


class TokenVerifier:
    """Checks a bearer credential against API_TOKENS or, in JWT mode, a signing key.

    Usage::

        verifier = TokenVerifier(settings)
        principal = verifier.verify("the-token")   # raises InvalidToken
    """

    def __init__(self, settings: AuthSettings) -> None:
        self._mode = settings.auth_mode
        self._tokens = [token.encode() for token in settings.token_values()]
        self._dev_open = settings.allow_insecure_dev_mode and not self._tokens
        self._algorithms = list(settings.jwt_algorithms)
        self._audience = settings.jwt_audience
        self._issuer = settings.jwt_issuer
        key = settings.jwt_public_key or settings.jwt_secret
        self._jwt_key = key.get_secret_value() if key is not None else None
        if self._mode == "jwt" and self._jwt_key is not None:
            _check_key_fits(self._jwt_key, self._algorithms)

    @property
    def open_access(self) -> bool:
        """True only in the explicit development mode with no tokens configured."""
        return self._mode == "token" and self._dev_open

    def verify(self, credential: str) -> Principal:
        if self._mode == "jwt":
            return self._verify_jwt(credential)
        return self._verify_static(credential)

    def _verify_static(self, credential: str) -> Principal:
        presented = credential.encode()
        # Compare against every token, without stopping early, so timing reveals nothing.
        matched = -1
        for index, token in enumerate(self._tokens):
            if hmac.compare_digest(presented, token):
                matched = index
        if matched < 0:
            raise InvalidToken("the bearer token is not valid")
        # Every static token is the same principal: rotation keeps access to its events.
        return Principal.static(subject=f"token-{matched}")

    def _verify_jwt(self, credential: str) -> Principal:
        if self._jwt_key is None:
            raise InvalidToken("JWT mode has no key configured")
        options = {
            # `sub` names the principal: without it, events would have no owner to scope to.
            "require": ["exp", "sub"]
            + (["aud"] if self._audience else [])
            + (["iss"] if self._issuer else [])
        }
        try:
            claims = jwt.decode(
                credential,
                self._jwt_key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                options=options,  # type: ignore[arg-type]
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("the JWT has expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise InvalidToken("the JWT audience is not accepted") from exc
        except jwt.InvalidIssuerError as exc:
            raise InvalidToken("the JWT issuer is not accepted") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"the JWT lacks the required claim {exc.claim!r}") from exc
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            # PyJWTError covers key errors too (InvalidKeyError is not an InvalidTokenError);
            # the crypto backends raise ValueError/TypeError for malformed input. A 401, not a 500.
            raise InvalidToken("the JWT is not valid") from exc
        subject = claims["sub"]
        if not isinstance(subject, str) or not 0 < len(subject) <= MAX_SUBJECT_LENGTH:
            raise InvalidToken(f"the JWT sub must be a string of 1-{MAX_SUBJECT_LENGTH} characters")
        return Principal.from_jwt(subject, claims.get("scope"))


def load_verifier(settings: AuthSettings) -> TokenVerifier:
    """The app's verifier; refuses (ValueError) settings that would leave the API unprotected."""
    settings.validate_auth()
    return TokenVerifier(settings)


def _check_key_fits(key: str, algorithms: list[str]) -> None:
    """Refuse at start-up a key that one of the algorithms cannot use (ValueError)."""
    for name in algorithms:
        try:
            jwt.get_algorithm_by_name(name).prepare_key(key)
        except NotImplementedError:
            raise ValueError(f"JWT_ALGORITHMS: {name!r} is not a supported algorithm") from None
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise ValueError(
                f"JWT_ALGORITHMS has {name!r}, which cannot use the configured key ({exc}); "
                "match the algorithms to the key type"
            ) from None
