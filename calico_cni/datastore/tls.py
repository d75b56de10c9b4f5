"""etcd over TLS: the TLS files checked before the first call, and a failed handshake explained.

`load_tls_credentials` reads the CA, client certificate and key and turns every problem into a
`DatastoreCredentialsError` naming the setting and the file (never "try again later": the
configuration must change). gRPC reports a TLS failure as little more than "TSI_DATA_CORRUPTED",
so `diagnose_tls` repeats the handshake with Python's ssl module to say what is wrong.

The client imports this module when it first connects over TLS: ssl (and gRPC, which
`load_tls_credentials` imports) cost tens of milliseconds to import, which a verb that never
reaches etcd must not pay. `tls_context` makes the same checks for the JSON gateway, without gRPC.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import time

from calico_cni.config import EtcdSettings, read_regular_file
from calico_cni.datastore.errors import DatastoreCredentialsError

log = logging.getLogger(__name__)

# Where a file setting can come from (config key/environment variable), for messages.
_TLS_SETTINGS = {
    "ca": "etcd_ca_cert_file/ETCD_CA_CERT_FILE",
    "cert": "etcd_cert_file/ETCD_CERT_FILE",
    "key": "etcd_key_file/ETCD_KEY_FILE",
}


def _file_problem(exc: OSError) -> str:
    """What went wrong with a file, in a few words (never the file's content)."""
    return exc.strerror or type(exc).__name__


def load_tls_credentials(settings: EtcdSettings):
    """Read and check the TLS files (CA, client certificate and key) and return gRPC channel
    credentials. Every problem is a DatastoreCredentialsError naming the setting and the file."""
    # Imported here: the JSON gateway's clients use `tls_context` alone and never load gRPC.
    import grpc  # noqa: PLC0415

    _, data = _checked_files(settings)
    try:
        return grpc.ssl_channel_credentials(data["ca"], data["key"], data["cert"])
    except Exception as exc:  # noqa: BLE001 - gRPC's own check of the same files
        raise DatastoreCredentialsError("gRPC refused the etcd TLS files", str(exc)[:200]) from None


def tls_context(settings: EtcdSettings) -> ssl.SSLContext:
    """The same checks as `load_tls_credentials`, with the same errors, returning an
    `ssl.SSLContext` (server certificate and name verified; the system's CAs when no CA file is
    set, as gRPC) for the JSON gateway's connections."""
    ctx, data = _checked_files(settings)
    if data["ca"] is None:
        ctx.load_default_certs()
    return ctx


def _checked_files(settings: EtcdSettings) -> tuple[ssl.SSLContext, dict[str, bytes | None]]:
    """The TLS files read and checked: a client context holding them, and their contents."""
    s = settings
    if bool(s.cert_file) != bool(s.key_file):
        have, missing = ("cert", "key") if s.cert_file else ("key", "cert")
        raise DatastoreCredentialsError(
            f"{_TLS_SETTINGS[have]} is set but {_TLS_SETTINGS[missing]} is not",
            "a client certificate needs its private key, and the key its certificate",
        )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    data: dict[str, bytes | None] = {"ca": None, "cert": None, "key": None}
    for which, path in (("ca", s.ca_cert_file), ("cert", s.cert_file), ("key", s.key_file)):
        if not path:
            continue
        try:
            data[which] = read_regular_file(path, 1024 * 1024 + 1)
        except OSError as exc:
            raise DatastoreCredentialsError(f"cannot read {_TLS_SETTINGS[which]} {path}: {_file_problem(exc)}") from None
        if len(data[which]) > 1024 * 1024:
            raise DatastoreCredentialsError(f"{_TLS_SETTINGS[which]} {path} is not a PEM file", "it is larger than 1 MiB")
    if s.key_file:
        try:
            mode = os.stat(s.key_file).st_mode
        except OSError:
            mode = 0
        if mode & 0o077:
            log.warning("etcd_key_file %s can be read by other users (mode %03o): chmod 600 it", s.key_file, mode & 0o777)
    if data["ca"] is not None:
        try:
            ctx.load_verify_locations(cadata=data["ca"].decode("ascii", "replace"))
        except (ssl.SSLError, ValueError) as exc:
            raise DatastoreCredentialsError(
                f"{_TLS_SETTINGS['ca']} {s.ca_cert_file} holds no usable CA certificate", f"expected PEM certificates: {exc}"
            ) from None
    if data["cert"] is not None:

        def no_passphrase() -> bytes:
            raise ValueError("the key is encrypted")

        try:
            ctx.load_cert_chain(s.cert_file, s.key_file, password=no_passphrase)
        except (ssl.SSLError, ValueError, OSError) as exc:
            reason = getattr(exc, "reason", None) or str(exc)
            if "encrypted" in str(exc) or "BAD_DECRYPT" in str(reason).upper():
                hint = "the key is protected by a passphrase; etcd clients need an unencrypted key (chmod 600 it instead)"
            elif "KEY_VALUES_MISMATCH" in str(reason).upper():
                hint = "the key does not belong to the certificate"
            else:
                hint = f"expected a PEM certificate and its PEM private key ({reason})"
            raise DatastoreCredentialsError(f"cannot use the etcd client certificate {s.cert_file} with key {s.key_file}", hint) from None
    return ctx, data


def _cert_expiry(path: str) -> str | None:
    """'expired on <date>' when the PEM certificate at `path` is out of its validity period."""
    try:
        info = ssl._ssl._test_decode_cert(path)  # noqa: SLF001 - the stdlib's only certificate parser
        not_after = ssl.cert_time_to_seconds(info["notAfter"])
        not_before = ssl.cert_time_to_seconds(info["notBefore"])
    except Exception:  # noqa: BLE001 - a diagnostic only
        return None
    now = time.time()
    if now > not_after:
        return f"it expired on {info['notAfter']}"
    if now < not_before:
        return f"it is not valid before {info['notBefore']}"
    return None


def _answers_plain_http(host: str, port: int, timeout: float) -> bool:
    """True when the endpoint answers a plain HTTP request as plain HTTP (a TLS server built with
    Go answers with a 400 saying the client spoke HTTP to an HTTPS server)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            raw.settimeout(timeout)
            raw.sendall(b"GET /version HTTP/1.1\r\nHost: etcd\r\nConnection: close\r\n\r\n")
            reply = b""
            while len(reply) < 512:
                chunk = raw.recv(512)
                if not chunk:
                    break
                reply += chunk
    except OSError:
        return False
    return reply.startswith(b"HTTP/") and b"HTTPS server" not in reply


def diagnose_tls(settings: EtcdSettings, host: str, port: int, timeout: float) -> DatastoreCredentialsError | None:
    """After a call over gRPC or the JSON gateway reported a TLS-level failure (gRPC's details are
    often just "TSI_DATA_CORRUPTED"), repeat the handshake with Python's ssl module to learn what
    is wrong. Returns the error to report, or None when the handshake works or the endpoint is
    simply unreachable."""
    s = settings
    endpoint = f"https://{host}:{port}"
    host = host.strip("[]")
    try:
        ctx = ssl.create_default_context(cafile=s.ca_cert_file) if s.ca_cert_file else ssl.create_default_context()
        if s.cert_file and s.key_file:
            ctx.load_cert_chain(s.cert_file, s.key_file)
        ctx.set_alpn_protocols(["h2"])
    except Exception:  # noqa: BLE001 - the files were checked before; a diagnostic only
        return None
    if _answers_plain_http(host, port, max(min(timeout, 2.0), 0.1)):
        return DatastoreCredentialsError(
            f"etcd at {endpoint} does not speak TLS",
            "it answers plain HTTP; use an http:// endpoint, or configure etcd with --cert-file and --key-file",
        )
    try:
        with socket.create_connection((host, port), timeout=max(min(timeout, 2.0), 0.1)) as raw:
            with ctx.wrap_socket(raw, server_hostname=host, do_handshake_on_connect=False) as tls:
                try:
                    tls.do_handshake()
                except (ssl.SSLEOFError, ConnectionResetError):
                    return DatastoreCredentialsError(
                        f"etcd at {endpoint} does not speak TLS",
                        "it closed the connection during the TLS handshake; use an http:// endpoint, or configure etcd with --cert-file and --key-file",
                    )
                # TLS 1.3: the server checks the client certificate after our handshake is done
                # and answers the first read with an alert.
                tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
                if not tls.recv(9):
                    raise ssl.SSLEOFError("closed by the server")
        return None
    except ssl.SSLCertVerificationError as exc:
        trusted = f"the CA in {_TLS_SETTINGS['ca']} {s.ca_cert_file}" if s.ca_cert_file else "the system's CAs (etcd_ca_cert_file is not set)"
        return DatastoreCredentialsError(
            f"the certificate of etcd at {endpoint} is not trusted: {exc.verify_message}",
            f"it was checked against {trusted}; the server certificate must be signed by that CA and name {host}",
        )
    except ssl.SSLError as exc:
        reason = (exc.reason or str(exc)).upper()
        said = "the server closed the connection" if isinstance(exc, ssl.SSLEOFError) else (exc.reason or str(exc))
        if "WRONG_VERSION_NUMBER" in reason or "RECORD_LAYER" in reason or "PACKET_LENGTH_TOO_LONG" in reason:
            return DatastoreCredentialsError(
                f"etcd at {endpoint} does not speak TLS", "use an http:// endpoint, or configure etcd with --cert-file and --key-file"
            )
        if not s.cert_file:
            return DatastoreCredentialsError(
                f"etcd at {endpoint} requires a client certificate and none is configured",
                f"set {_TLS_SETTINGS['cert']} and {_TLS_SETTINGS['key']} (TLS said: {said})",
            )
        expiry = _cert_expiry(s.cert_file)
        return DatastoreCredentialsError(
            f"etcd at {endpoint} rejected the client certificate {s.cert_file} ({_TLS_SETTINGS['cert']})" + (f": {expiry}" if expiry else ""),
            "it must be signed by a CA that etcd trusts (--trusted-ca-file) and be valid now" + f"; TLS said: {said}",
        )
    except (ConnectionResetError, BrokenPipeError) as exc:
        if not s.cert_file:
            return DatastoreCredentialsError(
                f"etcd at {endpoint} requires a client certificate and none is configured",
                f"set {_TLS_SETTINGS['cert']} and {_TLS_SETTINGS['key']} ({exc})",
            )
        return DatastoreCredentialsError(
            f"etcd at {endpoint} rejected the client certificate {s.cert_file} ({_TLS_SETTINGS['cert']})",
            f"the server closed the connection during the TLS handshake ({exc})",
        )
    except OSError:
        return None
