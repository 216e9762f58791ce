"""Who may call the service: loopback by default, an optional bearer token, a warning when exposed.

    python serve_onnx.py http outputs/onnx --api-key-file /run/secrets/jbert-key
    curl -H "Authorization: Bearer $(cat /run/secrets/jbert-key)" localhost:8000/info

With a key file, every route but /health (which load balancers probe without credentials)
answers 401 unless the request carries `Authorization: Bearer <key>`. Keys are compared as
SHA-256 digests with `hmac.compare_digest`, so the time taken says nothing about how much of a
guess was right, not even its length.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import stat
from pathlib import Path

from jbert.core.errors import UserError
from jbert.core.safe_input import check_regular_file

MIN_KEY_CHARS = 16
MAX_KEY_FILE_BYTES = 4096  # a token is a line; more is the wrong file (and /dev/zero never ends)
OPEN_PATHS = ("/health",)  # answered without a key: orchestrators probe them without credentials
_KEY_HINT = 'generate one with: python -c "import secrets; print(secrets.token_urlsafe(32))" > KEYFILE'


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_warning(host: str, has_api_key: bool) -> str | None:
    """The warning to print when `host` lets other machines connect, or None for loopback."""
    if is_loopback(host):
        return None
    if has_api_key:
        return (f"listening on {host}: other machines can connect; every route but /health requires the bearer "
                "token, sent in clear text unless a TLS proxy is in front")
    return (f"listening on {host}: other machines can connect and the service has NO authentication; "
            "pass --api-key-file or put it behind a proxy that authenticates")


def load_api_key(path: str | os.PathLike) -> tuple[str, list[str]]:
    """(the key in `path`, warnings). UserError if the file is missing, unreadable or holds no usable key.

    The file holds one line: the token (surrounding whitespace and the newline are ignored).
    """
    key_file = Path(path)
    # A FIFO or a device (/dev/zero) is refused unread: reading it would hang or never end.
    check_regular_file(key_file, f"--api-key-file {key_file}")
    try:
        with open(key_file, "rb") as handle:
            raw = handle.read(MAX_KEY_FILE_BYTES + 1)
    except FileNotFoundError:
        raise UserError(f"--api-key-file {key_file}: no such file; {_KEY_HINT}") from None
    except IsADirectoryError:
        raise UserError(f"--api-key-file {key_file}: is a directory, not a file holding the key") from None
    except OSError as err:
        raise UserError(f"--api-key-file {key_file}: cannot read it ({err.strerror})") from None
    if len(raw) > MAX_KEY_FILE_BYTES:
        raise UserError(f"--api-key-file {key_file}: larger than {MAX_KEY_FILE_BYTES} bytes, so not a key file; {_KEY_HINT}")
    try:
        key = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise UserError(f"--api-key-file {key_file}: not UTF-8 text; {_KEY_HINT}") from None
    if not key:
        raise UserError(f"--api-key-file {key_file}: the file is empty; {_KEY_HINT}")
    # RFC 6750 tokens are printable ASCII without spaces; anything else cannot travel in the header.
    if any(not ("!" <= char <= "~") for char in key):
        raise UserError(f"--api-key-file {key_file}: the key must be one line of printable ASCII without spaces; {_KEY_HINT}")
    if len(key) < MIN_KEY_CHARS:
        raise UserError(f"--api-key-file {key_file}: the key has {len(key)} characters; use at least {MIN_KEY_CHARS}; {_KEY_HINT}")
    warnings = []
    if os.name == "posix" and key_file.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        warnings.append(f"--api-key-file {key_file} can be read by other users; chmod 600 it")
    return key, warnings


class BearerAuthMiddleware:
    """ASGI middleware: 401 with a JSON error body unless `Authorization: Bearer <key>` matches."""

    def __init__(self, app, api_key: str):
        """Wrap `app`; `api_key` is kept only as its SHA-256 digest."""
        self.app = app
        self.key_digest = hashlib.sha256(api_key.encode("utf-8")).digest()

    def authorized(self, header: bytes | None) -> bool:
        """Whether an Authorization header value carries the key (constant time in the guess)."""
        scheme, _, token = (header or b"").partition(b" ")
        given = hashlib.sha256(token.strip()).digest()
        # Compare even when the scheme is wrong, so that case takes the same time as a wrong key.
        matches = hmac.compare_digest(given, self.key_digest)
        return matches and scheme.lower() == b"bearer"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        header = next((value for name, value in scope["headers"] if name == b"authorization"), None)
        if self.authorized(header):
            await self.app(scope, receive, send)
            return
        message = "missing bearer token: send Authorization: Bearer <key>" if header is None else "wrong bearer token"
        body = json.dumps({"error": message, "error_type": "unauthorized"}).encode()
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", b"Bearer"),
        ]})
        await send({"type": "http.response.body", "body": body})
