"""Which connection errors are refusals (raised at once) and which are worth a retry, and the
message each refusal becomes."""

from __future__ import annotations

import ssl

import pytest
import redis

from shim_core.connection import (
    RefusedConnection,
    _first_command_refusal,
    _handshake_refusal,
    describe_error,
    is_refusal,
)
from shim_core.errors import AuthenticationFailed, ConnectionFailed, PermissionDenied, TLSFailed

URL = "rediss://shim:s3cret@h:6380/0"


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert", "tls-client-cert"),
        ("[SSL: SSLV3_ALERT_HANDSHAKE_FAILURE] handshake failure", "tls-client-cert"),
        ("[SSL: WRONG_VERSION_NUMBER] wrong version number", "not-tls"),
        ("[SSL: RECORD_LAYER_FAILURE] record layer failure", "not-tls"),
        ("[SSL: NO_CIPHERS_AVAILABLE] no ciphers", "tls-handshake"),
    ],
)
def test_handshake_errors_are_classified(reason: str, kind: str) -> None:
    """A failed TLS handshake says whether the server wants a certificate, speaks no TLS, or
    failed otherwise."""
    assert _handshake_refusal(ssl.SSLError(1, reason)).kind == kind


def test_errors_worth_a_retry_are_not_refusals() -> None:
    """A server loading its data, a slow one, a full one or a dropped link are retried."""
    for error in (
        redis.exceptions.BusyLoadingError("LOADING"),
        redis.TimeoutError("slow"),
        redis.ConnectionError("max number of clients reached"),
        redis.ConnectionError("Connection closed by server."),
    ):
        assert _first_command_refusal(error, tls=False) is None
        assert not is_refusal(error)


def test_refusals_on_the_first_commands() -> None:
    """Credentials refused, or a command refused while connecting (DENIED, NOPERM), are not."""
    auth = _first_command_refusal(redis.AuthenticationError("WRONGPASS"), tls=True)
    denied = _first_command_refusal(redis.ResponseError("DENIED protected mode"), tls=False)
    assert isinstance(auth, RefusedConnection)
    assert (auth.kind, is_refusal(auth)) == ("auth", True)
    assert isinstance(denied, RefusedConnection)
    assert denied.kind == "refused"


def test_a_connection_closed_at_once_is_another_protocol_until_the_server_has_answered() -> None:
    """A plain connection reset at its first command means a TLS port, at first. Once the
    server has answered this manager, it means a restart (a connection the dying server had
    accepted): worth a retry, or a worker blocked in a claim would give up on a restart."""
    try:
        try:
            raise ConnectionResetError(104, "Connection reset by peer")
        except ConnectionResetError:
            raise redis.ConnectionError("Error while reading from 127.0.0.1:6379") from None
    except redis.ConnectionError as exc:
        reset = exc
    first = _first_command_refusal(reset, tls=False)
    assert isinstance(first, RefusedConnection)
    assert first.kind == "plain-to-tls"
    assert _first_command_refusal(reset, tls=False, answered_before=True) is None


@pytest.mark.parametrize(
    ("error", "kind", "words"),
    [
        (RefusedConnection("auth", "WRONGPASS"), AuthenticationFailed, "wrong password"),
        (redis.AuthenticationError("WRONGPASS"), AuthenticationFailed, "user 'shim'"),
        (RefusedConnection("refused", "DENIED"), ConnectionFailed, "refused the connection"),
        (RefusedConnection("tls-handshake", "X"), TLSFailed, "TLS handshake"),
        (redis.exceptions.NoPermissionError("NOPERM info"), PermissionDenied, "lacks a perm"),
        (redis.ConnectionError("down"), ConnectionFailed, "cannot reach Redis"),
    ],
)
def test_describe_error_names_the_cause_without_the_password(
    error: Exception, kind: type, words: str
) -> None:
    """Each error becomes the SHIM error of its cause; the URL in it is masked."""
    described = describe_error(error, URL)
    assert type(described) is kind
    assert words in str(described)
    assert "s3cret" not in str(described)
