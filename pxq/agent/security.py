"""The node agent off loopback: mutual TLS, bearer tokens and the certificates of a small deployment.

Server side (``pxq agent serve``, the ``[security]`` section of its config; each key also a flag)::

    [security]
    tls_cert = "/etc/pxq/server.crt"   # the agent's certificate (PEM) ...
    tls_key = "/etc/pxq/server.key"    # ... and its private key: the agent speaks TLS
    client_ca = "/etc/pxq/ca.crt"      # mutual TLS: a client must present a certificate signed by this CA
    token_file = "/etc/pxq/agent.token"  # a bearer token every call must carry (`authorization: Bearer ...`)

On loopback all of them are optional. Off loopback the agent needs TLS (``tls_cert`` + ``tls_key``)
and a way to tell its clients apart: ``client_ca`` (mutual TLS), ``token_file``, or both. A token
without TLS off loopback is refused too: it would cross the network in clear text, where anyone on
the path can read it and replay it.

Client side (``AgentClient(..., credentials={...})``, ``pxq run --agent-ca/--agent-cert/--agent-key/
--agent-token-file``, an entry of a ``--cluster`` file): ``ca`` (the CA that signed the agent's
certificate: TLS), ``cert`` + ``key`` (this client's certificate, for mutual TLS), ``token_file``.

A token is read from a file, never from the command line (a command line is visible to every user
of the host in ``/proc/*/cmdline`` and in shell histories). The agent compares it in constant time.

``pxq agent certs DIR`` (:func:`make_certs`) writes a CA, a server certificate for the given
hosts, a client certificate and a token with the ``cryptography`` library; private keys and the
token are written 0600.
"""

from __future__ import annotations

import contextlib
import datetime
import hmac
import ipaddress
import os
import secrets
import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.flight as flight

from pxq.errors import UsageError

CREDENTIAL_KEYS = ("ca", "cert", "key", "token_file")
MIN_TOKEN_CHARS = 16
DEFAULT_CERT_DAYS = 365
# What `pxq agent certs` writes, in DIR.
CA_CERT, CA_KEY = "ca.crt", "ca.key"
SERVER_CERT, SERVER_KEY = "server.crt", "server.key"
CLIENT_CERT, CLIENT_KEY = "client.crt", "client.key"
TOKEN_FILE = "agent.token"
CERT_FILES = (CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY, CLIENT_CERT, CLIENT_KEY, TOKEN_FILE)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------------
# Files.


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the {what} {path}: {exc.strerror}") from None


def read_token(path: str | Path) -> bytes:
    """The token in ``path`` (surrounding whitespace dropped), checked: one line, long enough."""
    raw = _read(path, "token file")
    try:
        token = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise UsageError(
            f"token file {path}: the token must be ASCII text (e.g. `pxq agent certs` writes one)"
        ) from None
    if not token:
        raise UsageError(f"token file {path} is empty")
    if any(c.isspace() or not c.isprintable() for c in token):
        raise UsageError(f"token file {path}: the token must be one word (no spaces, no line breaks inside)")
    if len(token) < MIN_TOKEN_CHARS:
        raise UsageError(
            f"token file {path}: a token of {len(token)} characters is too easy to guess "
            f"(at least {MIN_TOKEN_CHARS}; `pxq agent certs` writes a random one)"
        )
    return token.encode()


def _load_cert(path: str | Path, what: str) -> Any:
    from cryptography import x509

    data = _read(path, what)
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise UsageError(f"{what} {path} is not a PEM certificate") from None


def _load_key(path: str | Path, what: str) -> Any:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    data = _read(path, what)
    try:
        return load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{what} {path} is not an unencrypted PEM private key ({exc})") from None


def _check_pair(cert_path: str | Path, key_path: str | Path, what: str) -> None:
    """The certificate is valid now and the key is its own (else gRPC fails later, obscurely)."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    cert = _load_cert(cert_path, f"{what} certificate")
    key = _load_key(key_path, f"{what} key")
    now = datetime.datetime.now(datetime.UTC)
    if now < cert.not_valid_before_utc:
        raise UsageError(
            f"{what} certificate {cert_path} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
        )
    if now > cert.not_valid_after_utc:
        raise UsageError(f"{what} certificate {cert_path} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    public = (Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    if cert.public_key().public_bytes(*public) != key.public_key().public_bytes(*public):
        raise UsageError(f"{what} key {key_path} is not the key of the certificate {cert_path}")


# ---------------------------------------------------------------------------------------------
# The server.


@dataclass(frozen=True)
class ServerSecurity:
    """The agent's TLS and token settings (paths; None: not used)."""

    tls_cert: str | None = None
    tls_key: str | None = None
    client_ca: str | None = None
    token_file: str | None = None

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    def describe(self) -> str:
        parts = []
        if self.tls:
            parts.append("mutual TLS" if self.client_ca else "TLS")
        if self.token_file:
            parts.append("bearer token")
        return " + ".join(parts) or "plaintext, no authentication"

    def check(self, host: str) -> None:
        """A UsageError when the settings are incomplete, or too weak for ``host`` (off loopback)."""
        if (self.tls_cert is None) != (self.tls_key is None):
            given, missing = ("tls_cert", "tls_key") if self.tls_cert else ("tls_key", "tls_cert")
            raise UsageError(f"{given} is set but {missing} is not: TLS needs the certificate and its key")
        if self.client_ca is not None and not self.tls:
            raise UsageError("client_ca (mutual TLS) needs the agent's own certificate: set tls_cert and tls_key")
        if not is_loopback(host):
            if not self.tls:
                raise UsageError(
                    f"refusing to listen on {host} without TLS: off loopback the agent needs tls_cert and tls_key "
                    "(plus client_ca for mutual TLS, or token_file), so that neither its data nor a token crosses "
                    "the network in clear text; `pxq agent certs DIR` makes them. Or listen on 127.0.0.1"
                )
            if self.client_ca is None and self.token_file is None:
                raise UsageError(
                    f"refusing to listen on {host} with TLS alone: anyone who reaches it could query it. Off "
                    "loopback the agent needs client_ca (clients present a certificate signed by it: mutual TLS) "
                    "or token_file (a bearer token), or both"
                )
        if self.tls:
            assert self.tls_cert is not None and self.tls_key is not None
            _check_pair(self.tls_cert, self.tls_key, "the agent's TLS")
        if self.client_ca is not None:
            _load_cert(self.client_ca, "client_ca")
        if self.token_file is not None:
            read_token(self.token_file)

    def server_options(self, on_refusal: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Keyword arguments of ``flight.FlightServerBase`` for these settings (files read now)."""
        options: dict[str, Any] = {}
        if self.tls:
            assert self.tls_cert is not None and self.tls_key is not None
            options["tls_certificates"] = [
                flight.CertKeyPair(_read(self.tls_cert, "TLS certificate"), _read(self.tls_key, "TLS key"))
            ]
            if self.client_ca is not None:
                options["verify_client"] = True
                options["root_certificates"] = _read(self.client_ca, "client CA")
        if self.token_file is not None:
            options["middleware"] = {
                "bearer_token": BearerTokenMiddlewareFactory(read_token(self.token_file), on_refusal)
            }
        return options


class _Authenticated(flight.ServerMiddleware):  # type: ignore[misc]
    """The marker of a call whose token was right (nothing to add to the call)."""


class BearerTokenMiddlewareFactory(flight.ServerMiddlewareFactory):  # type: ignore[misc]
    """Refuses every call (queries and actions alike) whose ``authorization`` header is not
    ``Bearer <token>``; the comparison takes the same time wherever the first wrong byte is."""

    def __init__(self, token: bytes, on_refusal: Callable[[str], None] | None = None):
        super().__init__()
        self._expected = b"Bearer " + token
        self._on_refusal = on_refusal

    def _refuse(self, reason: str, message: str) -> flight.FlightUnauthenticatedError:
        if self._on_refusal is not None:
            self._on_refusal(reason)
        return flight.FlightUnauthenticatedError(message)

    def start_call(self, info: Any, headers: dict[str, list[Any]]) -> _Authenticated:
        values = headers.get("authorization", [])
        if not values:
            raise self._refuse(
                "no_token",
                "this agent requires a bearer token and the call carried none: give the client the agent's "
                "token file (token_file, --agent-token-file)",
            )
        given = values[0].encode() if isinstance(values[0], str) else bytes(values[0])
        if len(values) != 1 or not hmac.compare_digest(given, self._expected):
            raise self._refuse(
                "wrong_token", "the bearer token was refused: it is not this agent's token (check token_file)"
            )
        return _Authenticated()


# ---------------------------------------------------------------------------------------------
# The client.


@dataclass(frozen=True)
class ClientCredentials:
    """What a client presents to an agent: a CA to check the agent's certificate by (TLS), its own
    certificate and key (mutual TLS), a token file (bearer token)."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    token_file: str | None = None

    @classmethod
    def from_mapping(
        cls, mapping: Mapping[str, Any] | None, base_dir: str | Path | None = None, where: str = "credentials"
    ) -> ClientCredentials:
        """Credentials from a mapping with keys ``ca``, ``cert``, ``key``, ``token_file`` (paths,
        relative ones taken from ``base_dir`` when given: a cluster file's directory)."""
        if not mapping:
            return cls()
        values: dict[str, str] = {}
        for name, value in mapping.items():
            if name not in CREDENTIAL_KEYS:
                raise UsageError(f"{where}: unknown key {name!r} (known: {', '.join(CREDENTIAL_KEYS)})")
            if value is None:
                continue
            if not isinstance(value, (str, os.PathLike)) or not str(value):
                raise UsageError(f"{where}: {name} must be a file path, not {value!r}")
            path = Path(value).expanduser()
            if base_dir is not None and not path.is_absolute():
                path = Path(base_dir) / path
            values[name] = str(path)
        creds = cls(**values)
        if (creds.cert is None) != (creds.key is None):
            given, missing = ("cert", "key") if creds.cert else ("key", "cert")
            raise UsageError(f"{where}: {given} is given but {missing} is not: a client certificate needs its key")
        if creds.cert is not None and creds.ca is None:
            raise UsageError(
                f"{where}: a client certificate is used over TLS, which needs ca (the CA that signed the agent's "
                "certificate)"
            )
        return creds

    @property
    def tls(self) -> bool:
        return self.ca is not None

    def check_for(self, host: str, address: str) -> None:
        if self.token_file is not None and not self.tls and not is_loopback(host):
            raise UsageError(
                f"agent {address}: refusing to send the bearer token in clear text off loopback: give ca (the CA "
                "that signed the agent's certificate) so the connection uses TLS"
            )

    def connect_options(self) -> dict[str, Any]:
        """Keyword arguments of ``flight.connect`` (files read now)."""
        options: dict[str, Any] = {}
        if self.ca is not None:
            options["tls_root_certs"] = _read(self.ca, "CA certificate")
        if self.cert is not None and self.key is not None:
            options["cert_chain"] = _read(self.cert, "client certificate")
            options["private_key"] = _read(self.key, "client key")
        return options

    def headers(self) -> list[tuple[bytes, bytes]]:
        if self.token_file is None:
            return []
        return [(b"authorization", b"Bearer " + read_token(self.token_file))]


def diagnose(host: str, port: int, credentials: ClientCredentials, timeout_s: float = 2.0) -> str | None:
    """Why a connection the agent did not accept failed, found out with a TLS handshake of our own
    (gRPC says only "unavailable"): a plaintext client against a TLS agent, a TLS client against
    a plaintext agent, an agent certificate the client's CA did not sign, a client certificate the
    agent refused. None when nothing listens or nothing specific shows."""
    try:
        raw = socket.create_connection((host, port), timeout=timeout_s)
    except OSError:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    if credentials.cert is not None and credentials.key is not None:
        with contextlib.suppress(OSError, ssl.SSLError):
            context.load_cert_chain(credentials.cert, credentials.key)
    with raw:
        try:
            tls = context.wrap_socket(raw, server_hostname=host)
        except ssl.SSLError as exc:
            if credentials.tls:
                return (
                    f"the agent does not speak TLS ({exc.reason or exc}), but this client connects with TLS (ca given)"
                )
            return None
        except OSError:
            return None
        with tls:
            peer = tls.getpeercert(binary_form=True)
            if not credentials.tls:
                return (
                    "the agent requires TLS and this client connected in plaintext: give the CA that signed the "
                    "agent's certificate (ca, --agent-ca) and this client's certificate and key or token"
                )
            verdict = _verify_peer(peer, credentials.ca, host)
            if verdict is not None:
                return verdict
            # TLS 1.3: the agent checks the client's certificate after the handshake; a gRPC agent
            # that accepts it speaks first (HTTP/2 settings), one that refuses it closes the connection.
            try:
                tls.settimeout(timeout_s)
                refused = tls.recv(1) == b""
            except ssl.SSLError as exc:
                refused = "certificate" in (exc.reason or str(exc)).lower()
            except OSError:
                refused = False
            if refused:
                if credentials.cert is None:
                    return (
                        "the agent requires a client certificate (mutual TLS) and this client gave none: "
                        "give cert and key"
                    )
                return (
                    f"the agent refused this client's certificate {credentials.cert}: it is not signed by the CA the "
                    "agent trusts (its client_ca)"
                )
    return None


def _verify_peer(der: bytes | None, ca_path: str | None, host: str) -> str | None:
    """Whether the agent's certificate is signed by the client's CA and names ``host``."""
    from cryptography import x509
    from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

    if der is None or ca_path is None:
        return None
    try:
        store = Store([_load_cert(ca_path, "CA certificate")])
        leaf = x509.load_der_x509_certificate(der)
    except (UsageError, ValueError):
        return None
    try:
        subject: Any = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        subject = x509.DNSName(host)
    builder = PolicyBuilder().store(store)
    try:
        builder.build_server_verifier(subject).verify(leaf, [])
        return None
    except VerificationError:
        pass
    # Signed by the CA but for other names? Verify it again for a name it does carry.
    try:
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        names = []
    for name in names:
        try:
            builder.build_server_verifier(name).verify(leaf, [])
        except (VerificationError, ValueError, TypeError):
            continue
        named = ", ".join(str(getattr(n, "value", n)) for n in names)
        return (
            f"the agent's certificate names {named}, not {host}: address the agent by one of those, or make its "
            f"certificate with `pxq agent certs --hosts {host},...`"
        )
    return (
        f"the agent's certificate ({leaf.subject.rfc4514_string()}, issued by {leaf.issuer.rfc4514_string()}) "
        f"is not signed by the CA in {ca_path}"
    )


# ---------------------------------------------------------------------------------------------
# Certificates for a small deployment.


def _name(common_name: str) -> Any:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pxq"), x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    )


def _write(path: Path, data: bytes, secret: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(path, flags, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600 if secret else 0o644)  # an existing file keeps its mode on open: set it


def parse_hosts(text: str) -> list[str]:
    hosts = [h.strip() for h in text.split(",") if h.strip()]
    if not hosts:
        raise UsageError("--hosts needs at least one host name or IP address")
    for host in hosts:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if not all(part and (part.replace("-", "").isalnum()) for part in host.rstrip(".").split(".")):
                raise UsageError(f"--hosts: {host!r} is neither an IP address nor a DNS name") from None
    return hosts


def make_certs(
    directory: str | Path, hosts: list[str], days: int = DEFAULT_CERT_DAYS, force: bool = False
) -> dict[str, Path]:
    """A CA, a server certificate for ``hosts`` (DNS names and IP addresses as subject alternative
    names), a client certificate and a random token, in ``directory``; keys and token 0600.
    Refuses to overwrite any of them unless ``force``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
    from cryptography.x509.oid import ExtendedKeyUsageOID

    if not 1 <= days <= 36500:
        raise UsageError(f"--days must be 1..36500, not {days}")
    out = Path(directory)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} exists and is not a directory")
    existing = [name for name in CERT_FILES if (out / name).exists()]
    if existing and not force:
        raise UsageError(f"{out} already holds {', '.join(existing)}: refusing to overwrite (--force replaces them)")
    out.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)  # a little clock skew
    until = now + datetime.timedelta(days=days)

    def key_pem(key: Any) -> bytes:
        return bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))

    def builder(subject: Any, issuer: Any, public_key: Any) -> Any:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(until)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("pxq agent CA")
    ca_cert = (
        builder(ca_name, ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # key_cert_sign, crl_sign
        .sign(ca_key, hashes.SHA256())
    )
    authority = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())

    def leaf(common_name: str, usage: Any, names: list[Any]) -> tuple[Any, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            builder(_name(common_name), ca_name, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
            )  # digital_signature
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(authority, critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
        )
        return key, cert.sign(ca_key, hashes.SHA256())

    names: list[Any] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    server_key, server_cert = leaf(hosts[0], ExtendedKeyUsageOID.SERVER_AUTH, names)
    # A name for the client too: RFC 5280 validators (cryptography's among them) want a SAN in every leaf.
    client_key, client_cert = leaf("pxq-client", ExtendedKeyUsageOID.CLIENT_AUTH, [x509.DNSName("pxq-client")])
    files = {
        CA_CERT: (ca_cert.public_bytes(Encoding.PEM), False),
        CA_KEY: (key_pem(ca_key), True),
        SERVER_CERT: (server_cert.public_bytes(Encoding.PEM), False),
        SERVER_KEY: (key_pem(server_key), True),
        CLIENT_CERT: (client_cert.public_bytes(Encoding.PEM), False),
        CLIENT_KEY: (key_pem(client_key), True),
        TOKEN_FILE: (secrets.token_urlsafe(32).encode() + b"\n", True),
    }
    for name, (data, secret) in files.items():
        _write(out / name, data, secret)
    return {name: out / name for name in files}


__all__ = [
    "BearerTokenMiddlewareFactory",
    "ClientCredentials",
    "ServerSecurity",
    "diagnose",
    "is_loopback",
    "make_certs",
    "read_token",
]
