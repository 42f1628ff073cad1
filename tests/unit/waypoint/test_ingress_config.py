"""Ingress config at the edge: a chain's DownstreamTlsContext, SDS Secrets (NACKed without
echoing key material), the store's Secret subscriptions and readiness, `hbone_address`."""

from __future__ import annotations

import datetime
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2
from google.protobuf import any_pb2, struct_pb2

from dataplane.waypoint.config import LISTENER_TYPE, ROUTE_TYPE, SECRET_TYPE, ConfigStore
from dataplane.waypoint.ingress.tls_config import (
    CertificateSecret,
    DownstreamTls,
    TlsConfigError,
    ValidationSecret,
    downstream_tls,
    secret_from_proto,
    server_context,
)
from dataplane.waypoint.l7.model import ConfigError
from dataplane.waypoint.l7.upstreams import endpoints_from_assignment

CERT, CA = "kubernetes://ns/web", "kubernetes://ns/web-cacert"


def _pair(name: str = "web.example.test") -> tuple[bytes, bytes, int]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem, cert.serial_number


CHAIN_PEM, KEY_PEM, SERIAL = _pair()


def _packed(msg) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(msg)
    return out


def _cert_secret(chain: bytes = CHAIN_PEM, key: bytes = KEY_PEM) -> any_pb2.Any:
    secret = secret_pb2.Secret(name=CERT)
    secret.tls_certificate.certificate_chain.inline_bytes = chain
    secret.tls_certificate.private_key.inline_bytes = key
    return _packed(secret)


def _ca_secret(pem: bytes = CHAIN_PEM) -> any_pb2.Any:
    secret = secret_pb2.Secret(name=CA)
    secret.validation_context.trusted_ca.inline_bytes = pem
    return _packed(secret)


def _chain(client_ca: bool = False, server_names: tuple[str, ...] = ("Web.example.test",)):
    chain = listener_components_pb2.FilterChain(name="https")
    chain.filter_chain_match.destination_port.value = 443
    chain.filter_chain_match.server_names.extend(server_names)
    hcm = hcm_pb2.HttpConnectionManager(stat_prefix="https", rds=hcm_pb2.Rds(route_config_name="gateway|ns|gw|443"))
    chain.filters.add(name="envoy.filters.network.http_connection_manager", typed_config=_packed(hcm))
    tls = tls_pb2.DownstreamTlsContext()
    tls.common_tls_context.tls_certificate_sds_secret_configs.add(name=CERT).sds_config.ads.SetInParent()
    if client_ca:
        tls.require_client_certificate.value = True
        tls.common_tls_context.validation_context_sds_secret_config.name = CA
    chain.transport_socket.name = "envoy.transport_sockets.tls"
    chain.transport_socket.typed_config.Pack(tls)
    return chain


def test_downstream_tls_from_the_chain() -> None:
    assert downstream_tls(_chain()) == DownstreamTls((CERT,))
    mtls = downstream_tls(_chain(client_ca=True))
    assert mtls == DownstreamTls((CERT,), CA, True) and mtls.secret_names == (CERT, CA)
    plain = listener_components_pb2.FilterChain(name="http")
    assert downstream_tls(plain) is None


def test_tls_shapes_outside_the_contract_are_refused() -> None:
    other = _chain()
    other.transport_socket.name = "envoy.transport_sockets.raw_buffer"
    with pytest.raises(TlsConfigError, match="not supported"):
        downstream_tls(other)
    no_ca = _chain(client_ca=True)
    tls = tls_pb2.DownstreamTlsContext()
    no_ca.transport_socket.typed_config.Unpack(tls)
    tls.common_tls_context.ClearField("validation_context_sds_secret_config")
    no_ca.transport_socket.typed_config.Pack(tls)
    with pytest.raises(TlsConfigError, match="require_client_certificate without"):
        downstream_tls(no_ca)


def test_secrets_convert_and_make_a_context() -> None:
    cert = secret_from_proto(_cert_secret())
    assert isinstance(cert, CertificateSecret) and cert.serial == format(SERIAL, "x")
    assert "PRIVATE" not in repr(cert)  # the key is never shown
    ca = secret_from_proto(_ca_secret())
    assert isinstance(ca, ValidationSecret)
    ctx = server_context(DownstreamTls((CERT,), CA, True), [cert], ca)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.minimum_version == ssl.TLSVersion.TLSv1_2


@pytest.mark.parametrize(
    ("resource", "reason"),
    [
        (_cert_secret(key=_pair()[1]), "KEY_VALUES_MISMATCH"),
        (_cert_secret(chain=b"not a certificate"), "not PEM certificates"),
        (_cert_secret(key=b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), "cannot be served"),
        (_ca_secret(b"garbage"), "trusted_ca: not PEM CA certificates"),
        (_packed(secret_pb2.Secret(name="empty")), "Secret type unset is not supported"),
    ],
)
def test_bad_secrets_are_refused_without_their_data(resource: any_pb2.Any, reason: str) -> None:
    with pytest.raises(TlsConfigError) as e:
        secret_from_proto(resource)
    assert reason in str(e.value)
    key_body = b"".join(KEY_PEM.splitlines()[1:-1]).decode()
    assert "PRIVATE KEY" not in str(e.value) and key_body[:20] not in str(e.value)


def test_the_store_follows_and_awaits_the_secrets() -> None:
    store = ConfigStore()
    listener = listener_pb2.Listener(name="gateway/ns/gw", filter_chains=[_chain(client_ca=True)])
    assert store.apply(LISTENER_TYPE, {listener.name: _packed(listener)}, ()) == []
    assert store.wanted()[SECRET_TYPE] == {CERT, CA}
    (chain,) = store.chains_by_port()[443]
    assert chain.server_names == ("web.example.test",) and chain.tls is not None
    store.apply(ROUTE_TYPE, {"gateway|ns|gw|443": _packed(route_pb2.RouteConfiguration(name="gateway|ns|gw|443"))}, ())
    assert store.has_listener_and_routes and not store.complete
    rejected = store.apply(SECRET_TYPE, {CERT: _cert_secret(key=_pair()[1]), CA: _ca_secret()}, ())
    assert len(rejected) == 1 and rejected[0].startswith(f"{CERT}: ")
    assert not store.complete
    assert store.apply(SECRET_TYPE, {CERT: _cert_secret()}, ()) == []
    assert store.complete and isinstance(store.secret(CERT), CertificateSecret)


def _assignment(metadata: dict[str, str]) -> endpoint_pb2.ClusterLoadAssignment:
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name="inbound-vip|80|waypoint|web.ns.svc.cluster.local")
    lb = cla.endpoints.add().lb_endpoints.add()
    lb.endpoint.address.socket_address.address, lb.endpoint.address.socket_address.port_value = "10.96.0.5", 80
    istio = struct_pb2.Struct()
    istio.update(metadata)
    lb.metadata.filter_metadata["istio"].CopyFrom(istio)
    return cla


def test_hbone_address_from_the_endpoint_metadata() -> None:
    (endpoint,) = endpoints_from_assignment(_assignment({"tunnel": "hbone", "hbone_address": "10.1.0.9:15008"}))
    assert (endpoint.address, endpoint.port, endpoint.hbone_address) == ("10.96.0.5", 80, ("10.1.0.9", 15008))
    assert endpoint.key == ("10.96.0.5", 80, "10.1.0.9:15008")  # two waypoint pods behind one VIP stay apart
    (v6,) = endpoints_from_assignment(_assignment({"hbone_address": "[fd00::9]:15008"}))
    assert v6.hbone_address == ("fd00::9", 15008)
    (plain,) = endpoints_from_assignment(_assignment({"tunnel": "hbone"}))
    assert plain.hbone_address is None


@pytest.mark.parametrize("value", ["10.1.0.9", "pod:15008", "10.1.0.9:0", "10.1.0.9:http"])
def test_bad_hbone_address_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="hbone_address"):
        endpoints_from_assignment(_assignment({"hbone_address": value}))


def test_client_certificate_checks_it_cannot_make_are_refused() -> None:
    secret = secret_pb2.Secret(name=CA)
    secret.validation_context.trusted_ca.inline_bytes = CHAIN_PEM
    secret.validation_context.verify_certificate_spki.append("abc")
    with pytest.raises(TlsConfigError, match="verify_certificate_spki is not supported"):
        secret_from_proto(_packed(secret))
