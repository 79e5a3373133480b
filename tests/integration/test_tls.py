"""TLS to a real redis-server: CA, client certificate and key from settings or URL parameters,
and every TLS failure raised at once with a message naming its cause (no minute of retries)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_shim import RedisServer, free_port
from shim_core.cli import main
from shim_core.config import Settings
from shim_core.connection import RedisConnectionManager, TLSOptions
from shim_core.errors import ConfigError, InsecureTLSWarning, TLSFailed

pytestmark = pytest.mark.shim_real_redis

#: P-256 keys: made in milliseconds where an RSA-2048 key takes a quarter of a second (four of
#: them cost 1-3 s of this module's setup); the TLS paths under test do not depend on the kind.
NEW_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")


class Certs:
    """A CA, a server certificate (127.0.0.1, localhost) and a client certificate it signed, and
    a second CA that signed nothing here."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._ca("ca")
        self._ca("other-ca")
        self._signed("server", "subjectAltName=IP:127.0.0.1,DNS:localhost")
        self._signed("client", "extendedKeyUsage=clientAuth")

    def __getitem__(self, name: str) -> str:
        return str(self.folder / name)

    def _openssl(self, *args: str) -> None:
        subprocess.run(["openssl", *args], cwd=self.folder, check=True, capture_output=True)

    def _ca(self, name: str) -> None:
        self._openssl(
            "req", "-x509", *NEW_KEY, "-nodes", "-days", "2", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.crt",
        )  # fmt: skip

    def _signed(self, name: str, extension: str) -> None:
        self._openssl(
            "req", *NEW_KEY, "-nodes", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr",
        )  # fmt: skip
        (self.folder / f"{name}.ext").write_text(extension + "\n")
        self._openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt",
        )  # fmt: skip


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make test certificates")
    return Certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def tls_server(
    shim_redis_server_factory: Callable[..., RedisServer], certs: Certs
) -> Callable[..., RedisServer]:
    """Start a TLS-only redis-server; ``clients=True`` makes it require a client certificate."""

    def start(*, clients: bool = False) -> RedisServer:
        port = free_port()
        return shim_redis_server_factory(
            port=port,
            args=[
                "--port",
                "0",
                "--tls-port",
                str(port),
                "--tls-cert-file",
                certs["server.crt"],
                "--tls-key-file",
                certs["server.key"],
                "--tls-ca-cert-file",
                certs["ca.crt"],
                "--tls-auth-clients",
                "yes" if clients else "no",
            ],
            ping_options={
                "ssl": True,
                "ssl_ca_certs": certs["ca.crt"],
                "ssl_certfile": certs["client.crt"],
                "ssl_keyfile": certs["client.key"],
            },
        )

    return start


def tls_url(server: RedisServer, query: str = "") -> str:
    return f"rediss://127.0.0.1:{server.port}/0" + (f"?{query}" if query else "")


def connects(url: str, tls: TLSOptions | None = None) -> bool:
    with RedisConnectionManager(url, retries=8, tls=tls) as manager:
        return bool(manager.get_client().ping())


# ----------------------------------------------------------------- it works
def test_ca_from_the_settings(tls_server: Callable[..., RedisServer], certs: Certs) -> None:
    """SHIM_TLS_CA names the CA that signed the server's certificate."""
    settings = Settings.load({"SHIM_TLS_CA": certs["ca.crt"]})
    assert connects(tls_url(tls_server()), TLSOptions.from_settings(settings))


def test_ca_as_a_url_parameter(tls_server: Callable[..., RedisServer], certs: Certs) -> None:
    """?ssl_ca_certs= does the same, and wins over a setting naming another CA."""
    url = tls_url(tls_server(), f"ssl_ca_certs={certs['ca.crt']}")
    assert connects(url)
    assert connects(url, TLSOptions(ca=certs["other-ca.crt"]))


def test_client_certificate_from_the_settings(
    tls_server: Callable[..., RedisServer], certs: Certs
) -> None:
    """SHIM_TLS_CERT and SHIM_TLS_KEY authenticate the client to a server that requires it."""
    env = {
        "SHIM_TLS_CA": certs["ca.crt"],
        "SHIM_TLS_CERT": certs["client.crt"],
        "SHIM_TLS_KEY": certs["client.key"],
    }
    tls = TLSOptions.from_settings(Settings.load(env))
    assert connects(tls_url(tls_server(clients=True)), tls)


def test_client_certificate_as_url_parameters(
    tls_server: Callable[..., RedisServer], certs: Certs
) -> None:
    """?ssl_certfile=&ssl_keyfile= do the same."""
    query = (
        f"ssl_ca_certs={certs['ca.crt']}&ssl_certfile={certs['client.crt']}"
        f"&ssl_keyfile={certs['client.key']}"
    )
    assert connects(tls_url(tls_server(clients=True), query))


def test_cli_takes_the_tls_settings_from_the_environment(
    tls_server: Callable[..., RedisServer],
    certs: Certs,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`shim status` on a rediss:// URL uses SHIM_TLS_CA, SHIM_TLS_CERT and SHIM_TLS_KEY."""
    monkeypatch.setenv("SHIM_TLS_CA", certs["ca.crt"])
    monkeypatch.setenv("SHIM_TLS_CERT", certs["client.crt"])
    monkeypatch.setenv("SHIM_TLS_KEY", certs["client.key"])
    main(["status", "--redis", tls_url(tls_server(clients=True)), "--namespace", "tls"])
    assert "namespace 'tls'" in capsys.readouterr().out


def test_a_restarted_tls_server_is_still_ridden_out(
    tls_server: Callable[..., RedisServer], certs: Certs
) -> None:
    """Retries still cover a TLS server that went away and came back on its port."""
    server = tls_server()
    with RedisConnectionManager(tls_url(server), tls=TLSOptions(ca=certs["ca.crt"])) as manager:
        client = manager.get_client()
        assert client.incr("n") == 1
        server.restart()
        assert client.incr("n") == 1


# ------------------------------------------------------------ it fails fast
def expect_tls_failure(url: str, tls: TLSOptions | None = None) -> str:
    """Connect with the default retries; the TLSFailed message (checked to come in seconds, not
    the minute of retries it used to take)."""
    manager = RedisConnectionManager(url, tls=tls)
    start = time.monotonic()
    with pytest.raises(TLSFailed) as info:
        manager.connect()
    assert time.monotonic() - start < 10
    assert not manager.is_connected()
    return str(info.value)


def test_a_certificate_signed_by_another_ca(
    tls_server: Callable[..., RedisServer], certs: Certs
) -> None:
    """The server's certificate does not verify against the configured CA: said so, with the
    reason and the setting to check."""
    message = expect_tls_failure(tls_url(tls_server()), TLSOptions(ca=certs["other-ca.crt"]))
    assert "failed verification" in message
    assert "SHIM_TLS_CA" in message


def test_no_client_certificate_for_a_server_that_requires_one(
    tls_server: Callable[..., RedisServer], certs: Certs
) -> None:
    """The server closes the connection for want of a client certificate: said so, with the
    settings that give one."""
    message = expect_tls_failure(tls_url(tls_server(clients=True)), TLSOptions(ca=certs["ca.crt"]))
    assert "requires a client certificate" in message
    assert "SHIM_TLS_CERT" in message


def test_a_client_certificate_the_server_does_not_trust(
    tls_server: Callable[..., RedisServer], certs: Certs
) -> None:
    """A client certificate the server's CA did not sign is reported as not accepted."""
    tls = TLSOptions(ca=certs["ca.crt"], cert=certs["other-ca.crt"], key=certs["other-ca.key"])
    message = expect_tls_failure(tls_url(tls_server(clients=True)), tls)
    assert "did not accept the client certificate" in message


def test_plain_redis_url_to_a_tls_port(tls_server: Callable[..., RedisServer]) -> None:
    """redis:// to a TLS port: the server drops the connection; the message says rediss://."""
    message = expect_tls_failure(f"redis://127.0.0.1:{tls_server().port}/0")
    assert "use rediss://" in message


def test_rediss_url_to_a_plain_port(shim_redis_server_factory: Callable[..., RedisServer]) -> None:
    """rediss:// to a plain port: no TLS handshake comes; the message says redis://."""
    message = expect_tls_failure(f"rediss://127.0.0.1:{shim_redis_server_factory().port}/0")
    assert "plain (non-TLS)" in message
    assert "redis://" in message


# ---------------------------------------------------------------- settings
def test_no_verification_is_refused_unless_asked_for(
    tls_server: Callable[..., RedisServer], certs: Certs
) -> None:
    """?ssl_cert_reqs=none is a ConfigError; with SHIM_TLS_INSECURE it connects, with a warning,
    even to a server whose certificate the CA did not sign."""
    url = tls_url(tls_server(), "ssl_cert_reqs=none")
    with pytest.raises(ConfigError, match="SHIM_TLS_INSECURE=1"):
        RedisConnectionManager(url)

    insecure = TLSOptions.from_settings(Settings.load({"SHIM_TLS_INSECURE": "1"}))
    with pytest.warns(InsecureTLSWarning, match="does not verify"):
        assert connects(url, insecure)
    with pytest.warns(InsecureTLSWarning):
        assert connects(tls_url(tls_server()), TLSOptions(ca=certs["other-ca.crt"], insecure=True))


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "unix:///tmp/r.sock", "embedded://"])
def test_tls_settings_with_a_plain_url_are_refused(url: str, certs: Certs) -> None:
    """A TLS setting next to a non-TLS URL would silently go unused: ConfigError naming it."""
    with pytest.raises(ConfigError, match=r"SHIM_TLS_CA set, but .* is not a TLS URL"):
        RedisConnectionManager(url, tls=TLSOptions(ca=certs["ca.crt"]))


def test_a_missing_tls_file_is_refused_before_connecting(certs: Certs, tmp_path: Path) -> None:
    """A TLS file that does not exist is a ConfigError naming it, not a connection failure."""
    missing = str(tmp_path / "nope.crt")
    with pytest.raises(ConfigError, match=r"nope\.crt"):
        RedisConnectionManager("rediss://127.0.0.1:1/0", tls=TLSOptions(ca=missing))
    with pytest.raises(ConfigError, match="needs its certificate"):
        RedisConnectionManager("rediss://127.0.0.1:1/0", tls=TLSOptions(key=certs["client.key"]))


def test_tls_parameters_need_a_rediss_url(certs: Certs) -> None:
    """?ssl_ca_certs= on redis:// is a ConfigError saying rediss:// (it was a raw TypeError)."""
    with pytest.raises(ConfigError, match="needs a rediss:// URL"):
        RedisConnectionManager(f"redis://127.0.0.1:1/0?ssl_ca_certs={certs['ca.crt']}")
