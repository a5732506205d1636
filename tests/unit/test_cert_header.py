"""The forwarded client-certificate header: every proxy's format gives the RFC 8705 thumbprint."""

from __future__ import annotations

import base64
from urllib.parse import quote

import pytest

from service.jose.cert_header import CertificateHeaderError
from service.jose.cert_header import certificate_thumbprint
from tests.support import certs


@pytest.fixture(scope="module")
def client() -> certs.Issued:
    return certs.issue(certs.make_ca(), "client")


@pytest.fixture(scope="module")
def other() -> certs.Issued:
    return certs.issue(certs.make_ca("other CA"), "other")


@pytest.mark.parametrize(
    "render",
    [
        certs.nginx_escaped,
        certs.rfc9440,
        certs.envoy_xfcc,
        lambda c: certs.envoy_xfcc(c, hash_only=True),
        certs.traefik,
        lambda c: quote(certs.traefik(c), safe=""),  # Traefik URL-escapes it
        lambda c: c.pem,  # plain PEM, as a proxy that does not escape sends it
        lambda c: ":" + base64.b64encode(c.der).decode().rstrip("=") + ":",  # RFC 8941 unpadded
        lambda c: certs.nginx_escaped(c) + certs.nginx_escaped(certs.make_ca()),  # leaf + chain
        lambda c: certs.envoy_xfcc(c) + "," + certs.envoy_xfcc(certs.make_ca()),  # first element
        lambda c: certs.traefik(c) + "," + certs.traefik(certs.make_ca()),  # Traefik: leaf first
    ],
    ids=["nginx", "rfc9440", "xfcc", "xfcc-hash", "traefik", "traefik-escaped", "pem",
         "rfc9440-unpadded", "pem-chain", "xfcc-appended", "traefik-several"],
)
def test_each_proxy_format_gives_the_certificates_thumbprint(client, other, render) -> None:
    assert certificate_thumbprint(render(client)) == client.thumbprint
    assert certificate_thumbprint(render(other)) == other.thumbprint != client.thumbprint


@pytest.mark.parametrize(
    "value",
    [
        "", "   ", "hello", ":not base64!:", "::", ":aGVsbG8=:",  # base64 of 'hello', not a cert
        "-----BEGIN%20CERTIFICATE-----%0AaGVsbG8%3D%0A-----END%20CERTIFICATE-----",
        "-----BEGIN CERTIFICATE-----", "%FF%FE", "aGVsbG8=", "Hash=zz", "Hash=abcd",
        'By=x;Subject="CN=a"', 'Cert="unterminated', "Hash=" + "0" * 64 + ";Hash=" + "0" * 64,
        "A" * 40000,
    ],
)
def test_a_value_that_is_not_a_certificate_is_refused(value: str) -> None:
    with pytest.raises(CertificateHeaderError):
        certificate_thumbprint(value)


def test_xfcc_whose_hash_and_cert_disagree_is_refused(client, other) -> None:
    forged = certs.envoy_xfcc(client).replace(
        certs.envoy_xfcc(client).split(";")[1], certs.envoy_xfcc(other).split(";")[1]
    )
    with pytest.raises(CertificateHeaderError):
        certificate_thumbprint(forged)
