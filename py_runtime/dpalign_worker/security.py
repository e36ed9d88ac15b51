"""CurveZMQ for workers reached over tcp:// (DESIGN: an unauthenticated remote peer is refused).

Key files are written by `dpalign worker keygen`:
  worker.key       JSON {"public": Z85, "secret": Z85}: the worker's own key pair (keep private)
  authorized_keys  one Z85 client public key per line (# comments allowed)
"""
from __future__ import annotations

import ipaddress
import json
import logging
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import zmq

log = logging.getLogger("dpalign_worker")


@dataclass(frozen=True)
class CurveConfig:
    public: bytes
    secret: bytes
    authorized: frozenset[bytes]


class KeyFileError(ValueError):
    pass


def load_curve(keys_dir: str | Path) -> CurveConfig:
    d = Path(keys_dir)
    key_file, auth_file = d / "worker.key", d / "authorized_keys"
    try:
        pair = json.loads(key_file.read_text())
        public, secret = pair["public"].encode(), pair["secret"].encode()
    except FileNotFoundError:
        raise KeyFileError(f"{key_file} not found; create keys with `dpalign worker keygen --out {d}`") from None
    except (ValueError, KeyError, AttributeError) as e:
        raise KeyFileError(f"{key_file}: expected JSON with Z85 'public' and 'secret' keys ({e})") from None
    try:
        lines = auth_file.read_text().splitlines()
    except FileNotFoundError:
        raise KeyFileError(f"{auth_file} not found: list the control plane's public key(s) there, one per line") from None
    authorized = frozenset(l.strip().encode() for l in lines if l.strip() and not l.lstrip().startswith("#"))
    bad = [k for k in authorized if len(k) != 40]
    if bad:
        raise KeyFileError(f"{auth_file}: {bad[0].decode()!r} is not a 40-character Z85 public key")
    if not authorized:
        raise KeyFileError(f"{auth_file} lists no client key: no control plane could connect")
    return CurveConfig(public=public, secret=secret, authorized=authorized)


def is_loopback_endpoint(endpoint: str) -> bool:
    """True for ipc:// and for tcp:// bound to a loopback address only."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    host = urlsplit(endpoint).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
        except OSError:
            return False


def enable_curve_server(ctx: zmq.Context, sock: zmq.Socket, curve: CurveConfig) -> object:
    """Makes `sock` a CURVE server that admits only the authorized client keys (ZAP handler)."""
    from zmq.auth.thread import ThreadAuthenticator

    class _Allowed:
        def callback(self, domain: str, key: bytes) -> bool:
            ok = key in curve.authorized
            if not ok:
                log.warning("refused a client with an unknown CURVE key %s", key.decode(errors="replace"))
            return ok

    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve_callback(domain="*", credentials_provider=_Allowed())
    sock.curve_secretkey = curve.secret
    sock.curve_publickey = curve.public
    sock.curve_server = True
    return auth
