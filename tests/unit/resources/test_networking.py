"""Schemas and Istio validation rules of the networking.istio.io/v1 kinds."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from mesh.resources.kind import InvalidObject, ResourceKind, check_document
from mesh.resources.networking import (
    DESTINATION_RULE,
    NETWORKING_KINDS,
    SERVICE_ENTRY,
    VIRTUAL_SERVICE,
    WORKLOAD_ENTRY,
)
from mesh.resources.networking.common import duration_nanos
from mesh.resources.registry import default_registry

pytestmark = pytest.mark.unit

VS, DR, SE, WE = VIRTUAL_SERVICE, DESTINATION_RULE, SERVICE_ENTRY, WORKLOAD_ENTRY


def doc(kind: ResourceKind, spec: Any, **extra: Any) -> dict[str, Any]:
    """A document of `kind` named `example` in namespace `default`."""
    obj: dict[str, Any] = {
        "apiVersion": kind.api_version,
        "kind": kind.kind,
        "metadata": {"name": "example", "namespace": "default"},
        "spec": spec,
    }
    obj.update(extra)
    return obj


def spec_of(text: str) -> Any:
    """A spec written as YAML, as in Istio's documentation."""
    return yaml.safe_load(text)


TO_A = "route: [{destination: {host: a}}]"


def http(route: str) -> str:
    """A VirtualService spec for host `a` with one HTTP route given as flow-style YAML fields."""
    return "hosts: [a]\nhttp: [{" + route + "}]"


def causes_of(kind: ResourceKind, obj: dict[str, Any]) -> dict[str, str]:
    """The reasons `obj` is refused, keyed by field path."""
    with pytest.raises(InvalidObject) as info:
        check_document(kind, obj)
    return {c.field: c.reason for c in info.value.causes}


# --- valid documents, in the shapes of Istio's traffic-management documentation ------------------

VALID: list[tuple[str, ResourceKind, str]] = [
    (
        "reviews-90-10-split",
        VS,
        """
        hosts: [reviews]
        http:
        - route:
          - destination: {host: reviews, subset: v1}
            weight: 90
          - destination: {host: reviews, subset: v2}
            weight: 10
        """,
    ),
    (
        "header-match-end-user",
        VS,
        """
        hosts: [reviews]
        http:
        - match:
          - headers:
              end-user:
                exact: jason
          route:
          - destination: {host: reviews, subset: v2}
        - route:
          - destination: {host: reviews, subset: v1}
        """,
    ),
    (
        "fault-delay",
        VS,
        """
        hosts: [ratings]
        http:
        - match:
          - headers:
              end-user: {exact: jason}
          fault:
            delay:
              percentage: {value: 100.0}
              fixedDelay: 7s
          route:
          - destination: {host: ratings, subset: v1}
        - route:
          - destination: {host: ratings, subset: v1}
        """,
    ),
    (
        "fault-abort",
        VS,
        """
        hosts: [ratings]
        http:
        - match:
          - headers:
              end-user: {exact: jason}
          fault:
            abort:
              percentage: {value: 100.0}
              httpStatus: 500
          route:
          - destination: {host: ratings, subset: v1}
        - route:
          - destination: {host: ratings, subset: v1}
        """,
    ),
    (
        "retries-and-timeout",
        VS,
        """
        hosts: [ratings]
        http:
        - route:
          - destination: {host: ratings, subset: v1}
          timeout: 10s
          retries:
            attempts: 3
            perTryTimeout: 2s
            retryOn: gateway-error,connect-failure,refused-stream
            retryRemoteLocalities: true
            retryIgnorePreviousHosts: true
            backoff: 0.25s
        """,
    ),
    (
        "gateway-uri-match-rewrite-cors-mirror",
        VS,
        """
        hosts: ["bookinfo.example.com"]
        gateways: [bookinfo-gateway, mesh]
        exportTo: ["."]
        http:
        - name: productpage
          match:
          - uri: {exact: /productpage}
          - uri: {prefix: /static}
          - uri: {regex: '^/api/v1/products/[0-9]+$'}
            method: {exact: GET}
            ignoreUriCase: true
            queryParams:
              debug: {exact: "1"}
            withoutHeaders:
              x-canary: {}
          rewrite: {uri: /, authority: productpage.default.svc.cluster.local}
          corsPolicy:
            allowOrigins:
            - exact: https://example.com
            - regex: "https://.*\\\\.example\\\\.com"
            allowMethods: [POST, GET]
            allowCredentials: false
            allowHeaders: [X-Foo-Bar]
            maxAge: 24h
            unmatchedPreflights: IGNORE
          headers:
            request:
              set: {x-forwarded-proto: https}
              add: {x-request-start: "t=%START_TIME(%s.%3f)%"}
            response:
              remove: [server]
          mirror: {host: productpage, subset: v2}
          mirrorPercentage: {value: 50.0}
          route:
          - destination:
              host: productpage
              port: {number: 9080}
        """,
    ),
    (
        "redirect-and-direct-response",
        VS,
        """
        hosts: ["*.example.com"]
        gateways: [istio-system/public-gateway]
        http:
        - match:
          - uri: {exact: /v1/getProductRatings}
          redirect: {uri: /v1/bookRatings, authority: newratings.default.svc.cluster.local, redirectCode: 301}
        - match:
          - uri: {prefix: /health}
          directResponse:
            status: 200
            body: {string: ok}
        - route:
          - destination: {host: ratings.default.svc.cluster.local}
        """,
    ),
    (
        "tcp-80-20-and-tls-sni",
        VS,
        """
        hosts: ["*.bookinfo.com", tcp-echo]
        tcp:
        - match:
          - port: 31400
          route:
          - destination: {host: tcp-echo, port: {number: 9000}, subset: v1}
            weight: 80
          - destination: {host: tcp-echo, port: {number: 9000}, subset: v2}
            weight: 20
        tls:
        - match:
          - port: 443
            sniHosts: [login.bookinfo.com]
          route:
          - destination: {host: login.prod.svc.cluster.local}
        """,
    ),
    (
        "delegate-root",
        VS,
        """
        hosts: [bookinfo.com]
        gateways: [mygateway]
        http:
        - match:
          - uri: {prefix: /productpage}
          delegate: {name: productpage, namespace: nsa}
        """,
    ),
    (
        "delegate-target-without-hosts",
        VS,
        """
        http:
        - match:
          - uri: {prefix: /productpage/v1/}
          route:
          - destination: {host: productpage-v1.nsa.svc.cluster.local}
        - route:
          - destination: {host: productpage.nsa.svc.cluster.local}
        """,
    ),
    (
        "subsets-istio-mutual-circuit-breaker",
        DR,
        """
        host: reviews
        trafficPolicy:
          tls: {mode: ISTIO_MUTUAL}
          connectionPool:
            tcp: {maxConnections: 1, connectTimeout: 30ms, tcpKeepalive: {time: 7200s, interval: 75s}}
            http:
              http1MaxPendingRequests: 1
              maxRequestsPerConnection: 1
              h2UpgradePolicy: UPGRADE
              idleTimeout: 1h
          outlierDetection:
            consecutive5xxErrors: 1
            interval: 1s
            baseEjectionTime: 3m
            maxEjectionPercent: 100
        subsets:
        - name: v1
          labels: {version: v1}
        - name: v2
          labels: {version: v2}
          trafficPolicy:
            loadBalancer: {simple: ROUND_ROBIN}
        - name: v3
          labels: {version: v3}
        """,
    ),
    (
        "consistent-hash-locality-port-level",
        DR,
        """
        host: bookinfo-ratings.prod.svc.cluster.local
        trafficPolicy:
          loadBalancer:
            consistentHash:
              httpCookie: {name: user, ttl: 0s}
            localityLbSetting:
              enabled: true
              distribute:
              - from: us-west/zone1/*
                to: {"us-west/zone1/*": 80, "us-west/zone2/*": 20}
          portLevelSettings:
          - port: {number: 80}
            loadBalancer: {simple: LEAST_REQUEST, warmupDurationSecs: 100s}
          - port: {number: 9080}
            tls: {mode: SIMPLE, sni: ratings.example.com, credentialName: ratings-ca}
        exportTo: ["*"]
        """,
    ),
    (
        "external-https-dns",
        SE,
        """
        hosts: [www.google.com]
        location: MESH_EXTERNAL
        ports:
        - number: 443
          name: https
          protocol: HTTPS
        resolution: DNS
        """,
    ),
    (
        "mesh-internal-workload-selector",
        SE,
        """
        hosts: [details.bookinfo.com]
        location: MESH_INTERNAL
        ports:
        - number: 80
          name: http
          protocol: HTTP
          targetPort: 8080
        resolution: STATIC
        workloadSelector:
          labels: {app: details-legacy}
        """,
    ),
    (
        "static-endpoints-with-addresses",
        SE,
        """
        hosts: [mymongodb.somedomain]
        addresses: [192.192.192.192/24]
        ports:
        - {number: 27018, name: mongodb, protocol: MONGO}
        location: MESH_INTERNAL
        resolution: STATIC
        endpoints:
        - address: 2.2.2.2
        - address: 3.3.3.3
          ports: {mongodb: 27019}
          labels: {app: mongo}
        exportTo: ["~"]
        """,
    ),
    (
        "dns-endpoints-multiple-http-hosts",
        SE,
        """
        hosts: [foo.bar.com, bar.foo.com]
        ports:
        - {number: 80, name: http, protocol: HTTP}
        - {number: 443, name: https, protocol: TLS}
        resolution: DNS
        endpoints:
        - address: us.foo.bar.com
          ports: {http: 8080}
        - address: uk.foo.bar.com
          locality: europe/uk
          weight: 3
        """,
    ),
    (
        "vm-workload-entry",
        WE,
        """
        serviceAccount: details-legacy
        address: 2.2.2.2
        network: vm-network
        locality: us-west/zone1
        labels: {app: details-legacy, instance-id: vm1}
        ports: {http: 8080}
        """,
    ),
    ("workload-entry-fqdn-address", WE, "address: vm1.example.com"),
    ("workload-entry-network-only", WE, "network: remote-network"),
]


@pytest.mark.parametrize(("name", "kind", "spec"), VALID, ids=[v[0] for v in VALID])
def test_valid_documents(name: str, kind: ResourceKind, spec: str) -> None:
    result = check_document(kind, doc(kind, spec_of(spec)))
    assert result.unknown == []
    # The stored object is the document as sent, not a re-serialisation of the model.
    assert result.obj["spec"] == spec_of(spec)


def test_status_is_accepted() -> None:
    status = {"conditions": [{"type": "Reconciled", "status": "True"}], "observedGeneration": "1"}
    obj = doc(DR, {"host": "reviews"}, status=status)
    assert check_document(DR, obj).obj["status"] == status


# --- invalid documents: each refused at the exact field Istio blames -----------------------------

INVALID: list[tuple[str, ResourceKind, str, str, str]] = [
    # VirtualService
    (
        "destination-host-missing",
        VS,
        http("route: [{destination: {subset: v1}}]"),
        "spec.http[0].route[0].destination.host",
        "FieldValueRequired",
    ),
    (
        "destination-host-empty",
        VS,
        http("route: [{destination: {host: ''}}]"),
        "spec.http[0].route[0].destination.host",
        "FieldValueRequired",
    ),
    (
        "negative-weight",
        VS,
        http("route: [{destination: {host: a}, weight: 110}, {destination: {host: b}, weight: -10}]"),
        "spec.http[0].route[1].weight",
        "FieldValueInvalid",
    ),
    (
        "all-weights-zero",
        VS,
        http("route: [{destination: {host: a}, weight: 0}, {destination: {host: b}, weight: 0}]"),
        "spec.http[0].route",
        "FieldValueInvalid",
    ),
    (
        "redirect-with-route",
        VS,
        http("redirect: {uri: /x}, " + TO_A),
        "spec.http[0].route",
        "FieldValueForbidden",
    ),
    (
        "redirect-with-direct-response",
        VS,
        http("redirect: {uri: /x}, directResponse: {status: 200}"),
        "spec.http[0].directResponse",
        "FieldValueForbidden",
    ),
    (
        "no-action",
        VS,
        http("match: [{uri: {prefix: /}}]"),
        "spec.http[0].route",
        "FieldValueRequired",
    ),
    (
        "fault-percentage-over-100",
        VS,
        http("fault: {abort: {httpStatus: 503, percentage: {value: 150}}}, " + TO_A),
        "spec.http[0].fault.abort.percentage.value",
        "FieldValueInvalid",
    ),
    (
        "abort-status-out-of-range",
        VS,
        http("fault: {abort: {httpStatus: 700}}, " + TO_A),
        "spec.http[0].fault.abort.httpStatus",
        "FieldValueInvalid",
    ),
    (
        "abort-two-error-types",
        VS,
        http("fault: {abort: {httpStatus: 503, grpcStatus: UNAVAILABLE}}, " + TO_A),
        "spec.http[0].fault.abort.grpcStatus",
        "FieldValueForbidden",
    ),
    (
        "empty-fault",
        VS,
        http("fault: {}, " + TO_A),
        "spec.http[0].fault",
        "FieldValueRequired",
    ),
    (
        "negative-retry-attempts",
        VS,
        http("retries: {attempts: -1}, " + TO_A),
        "spec.http[0].retries.attempts",
        "FieldValueInvalid",
    ),
    (
        "bad-retry-on",
        VS,
        http("retries: {attempts: 2, retryOn: '5xx,sometimes'}, " + TO_A),
        "spec.http[0].retries.retryOn",
        "FieldValueInvalid",
    ),
    (
        "timeout-below-1ms",
        VS,
        http("timeout: 0s, " + TO_A),
        "spec.http[0].timeout",
        "FieldValueInvalid",
    ),
    (
        "timeout-not-a-duration",
        VS,
        http("timeout: ten seconds, " + TO_A),
        "spec.http[0].timeout",
        "FieldValueInvalid",
    ),
    (
        "delegate-with-gateways",
        VS,
        "gateways: [gw]\nhttp: [{route: [{destination: {host: a}}]}]",
        "spec.gateways",
        "FieldValueForbidden",
    ),
    (
        "mesh-wildcard-host",
        VS,
        "hosts: ['*']\nhttp: [{route: [{destination: {host: a}}]}]",
        "spec.hosts[0]",
        "FieldValueInvalid",
    ),
    (
        "overlapping-hosts",
        VS,
        "hosts: ['*.foo.com', bar.foo.com]\nhttp: [{route: [{destination: {host: a}}]}]",
        "spec.hosts[1]",
        "FieldValueInvalid",
    ),
    ("no-routes", VS, "hosts: [a]", "spec.http", "FieldValueRequired"),
    (
        "bad-regex",
        VS,
        http("match: [{uri: {regex: '(?=x)y'}}], " + TO_A),
        "spec.http[0].match[0].uri.regex",
        "FieldValueInvalid",
    ),
    (
        "string-match-two-kinds",
        VS,
        http("match: [{headers: {x: {exact: a, prefix: b}}}], " + TO_A),
        "spec.http[0].match[0].headers.x",
        "FieldValueForbidden",
    ),
    (
        "sni-not-in-hosts",
        VS,
        "hosts: [a.example.com]\ntls: [{match: [{sniHosts: [b.example.com]}], route: [{destination: {host: b}}]}]",
        "spec.tls[0].match[0].sniHosts[0]",
        "FieldValueInvalid",
    ),
    (
        "string-weight",
        VS,
        http("route: [{destination: {host: a}, weight: '90'}]"),
        "spec.http[0].route[0].weight",
        "FieldValueInvalid",
    ),
    # DestinationRule
    ("dr-host-missing", DR, "subsets: [{name: v1}]", "spec.host", "FieldValueRequired"),
    ("dr-host-empty", DR, "host: ''", "spec.host", "FieldValueRequired"),
    (
        "dr-duplicate-subset",
        DR,
        "host: reviews\nsubsets: [{name: v1, labels: {version: v1}}, {name: v1, labels: {version: v2}}]",
        "spec.subsets[1].name",
        "FieldValueDuplicate",
    ),
    (
        "dr-subset-not-dns-label",
        DR,
        "host: reviews\nsubsets: [{name: v_1}]",
        "spec.subsets[0].name",
        "FieldValueInvalid",
    ),
    (
        "dr-simple-and-consistent-hash",
        DR,
        "host: reviews\ntrafficPolicy: {loadBalancer: {simple: RANDOM, consistentHash: {useSourceIp: true}}}",
        "spec.trafficPolicy.loadBalancer.consistentHash",
        "FieldValueForbidden",
    ),
    (
        "dr-unknown-tls-mode",
        DR,
        "host: reviews\ntrafficPolicy: {tls: {mode: STRICT}}",
        "spec.trafficPolicy.tls.mode",
        "FieldValueNotSupported",
    ),
    (
        "dr-mutual-without-certificates",
        DR,
        "host: reviews\ntrafficPolicy: {tls: {mode: MUTUAL}}",
        "spec.trafficPolicy.tls.clientCertificate",
        "FieldValueRequired",
    ),
    (
        "dr-empty-traffic-policy",
        DR,
        "host: reviews\ntrafficPolicy: {}",
        "spec.trafficPolicy",
        "FieldValueRequired",
    ),
    (
        "dr-ejection-percent",
        DR,
        "host: reviews\nsubsets: [{name: v1, trafficPolicy: {outlierDetection: {maxEjectionPercent: 101}}}]",
        "spec.subsets[0].trafficPolicy.outlierDetection.maxEjectionPercent",
        "FieldValueInvalid",
    ),
    (
        "dr-locality-weights",
        DR,
        """
        host: r
        trafficPolicy:
          loadBalancer:
            localityLbSetting:
              distribute: [{from: a/*, to: {a/*: 60, b/*: 20}}]
        """,
        "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to",
        "FieldValueInvalid",
    ),
    # ServiceEntry
    ("se-hosts-missing", SE, "ports: [{number: 80, name: http}]", "spec.hosts", "FieldValueRequired"),
    ("se-hosts-empty", SE, "hosts: []", "spec.hosts", "FieldValueRequired"),
    (
        "se-duplicate-port-number",
        SE,
        (
            "hosts: [a.com]\n"
            "ports: [{number: 80, name: http, protocol: HTTP}, {number: 80, name: http2, protocol: HTTP2}]"
        ),
        "spec.ports[1].number",
        "FieldValueDuplicate",
    ),
    (
        "se-duplicate-port-name",
        SE,
        "hosts: [a.com]\nports: [{number: 80, name: http, protocol: HTTP}, {number: 81, name: http, protocol: HTTP}]",
        "spec.ports[1].name",
        "FieldValueDuplicate",
    ),
    (
        "se-unknown-protocol",
        SE,
        "hosts: [a.com]\nports: [{number: 21, name: ftp, protocol: FTP}]",
        "spec.ports[0].protocol",
        "FieldValueInvalid",
    ),
    (
        "se-selector-and-endpoints",
        SE,
        "hosts: [a.com]\nresolution: STATIC\nworkloadSelector: {labels: {app: a}}\nendpoints: [{address: 1.1.1.1}]",
        "spec.endpoints",
        "FieldValueForbidden",
    ),
    (
        "se-bad-address",
        SE,
        "hosts: [a.com]\naddresses: [300.1.1.1]",
        "spec.addresses[0]",
        "FieldValueInvalid",
    ),
    (
        "se-cidr-with-dns",
        SE,
        "hosts: [a.com]\naddresses: [10.0.0.0/16]\nresolution: DNS\nports: [{number: 80, name: http}]",
        "spec.addresses[0]",
        "FieldValueInvalid",
    ),
    (
        "se-wildcard-with-dns",
        SE,
        "hosts: ['*.google.com']\nresolution: DNS\nports: [{number: 443, name: https, protocol: HTTPS}]",
        "spec.hosts[0]",
        "FieldValueInvalid",
    ),
    (
        "se-unknown-resolution",
        SE,
        "hosts: [a.com]\nresolution: AUTO",
        "spec.resolution",
        "FieldValueNotSupported",
    ),
    (
        "se-static-endpoint-name",
        SE,
        (
            "hosts: [a.com]\nresolution: STATIC\n"
            "ports: [{number: 80, name: http}]\nendpoints: [{address: a.example.com}]"
        ),
        "spec.endpoints[0].address",
        "FieldValueInvalid",
    ),
    (
        "se-endpoint-port-not-declared",
        SE,
        (
            "hosts: [a.com]\nresolution: STATIC\n"
            "ports: [{number: 80, name: http}]\nendpoints: [{address: 1.1.1.1, ports: {grpc: 90}}]"
        ),
        "spec.endpoints[0].ports.grpc",
        "FieldValueInvalid",
    ),
    (
        "se-endpoints-with-none",
        SE,
        "hosts: [a.com]\nresolution: NONE\nendpoints: [{address: 1.1.1.1}]",
        "spec.endpoints",
        "FieldValueForbidden",
    ),
    (
        "se-multiple-hosts-tcp",
        SE,
        "hosts: [a.com, b.com]\nresolution: DNS\nports: [{number: 3306, name: tcp, protocol: TCP}]",
        "spec.ports[0].protocol",
        "FieldValueInvalid",
    ),
    # WorkloadEntry
    ("we-no-address", WE, "labels: {app: vm}", "spec.address", "FieldValueRequired"),
    (
        "we-port-out-of-range",
        WE,
        "address: 1.2.3.4\nports: {http: 70000}",
        "spec.ports.http",
        "FieldValueInvalid",
    ),
    (
        "we-unix-with-ports",
        WE,
        "address: unix:///var/run/app.sock\nports: {http: 80}",
        "spec.ports",
        "FieldValueForbidden",
    ),
    ("we-bad-address", WE, "address: not_a_host!", "spec.address", "FieldValueInvalid"),
]


@pytest.mark.parametrize(
    ("name", "kind", "spec", "field", "reason"),
    INVALID,
    ids=[v[0] for v in INVALID],
)
def test_invalid_documents(name: str, kind: ResourceKind, spec: str, field: str, reason: str) -> None:
    causes = causes_of(kind, doc(kind, spec_of(spec)))
    assert field in causes, causes
    assert causes[field] == reason


def test_several_causes_are_reported_together() -> None:
    spec = spec_of("hosts: []\nports: [{number: 80, name: http}, {number: 80, name: web}]\naddresses: [nope]")
    causes = causes_of(SE, doc(SE, spec))
    assert {"spec.hosts", "spec.ports[1].number", "spec.addresses[0]"} <= set(causes)


def test_missing_spec_is_required() -> None:
    obj = doc(VS, None)
    del obj["spec"]
    assert causes_of(VS, obj) == {"spec": "FieldValueRequired"}


# --- Istio-specific leniency: what Istio accepts must pass ---------------------------------------


@pytest.mark.parametrize(
    ("kind", "spec"),
    [
        # Weights are relative now; they need not add up to 100.
        (
            VS,
            http("route: [{destination: {host: a}, weight: 3}, {destination: {host: b}, weight: 1}]"),
        ),
        # An abort without an error type only draws a warning from Istio.
        (
            VS,
            http("fault: {abort: {percentage: {value: 1}}}, " + TO_A),
        ),
        # Istio's DNS labels allow capitals, and hosts may be IPs.
        (VS, "hosts: [Reviews, 10.1.2.3]\nhttp: [{route: [{destination: {host: Reviews, subset: V1}}]}]"),
        # STATIC resolution with neither endpoints nor selector is accepted (endpoints may come later).
        (SE, "hosts: [a.com]\nresolution: STATIC\nports: [{number: 80, name: http}]"),
        # Durations in Go syntax, as in Istio's DestinationRule reference.
        (DR, "host: r\ntrafficPolicy: {outlierDetection: {interval: 5m, baseEjectionTime: 15m}}"),
        # An idle timeout of 0s turns the TCP idle timeout off.
        (DR, "host: r\ntrafficPolicy: {connectionPool: {tcp: {idleTimeout: 0s}}}"),
    ],
)
def test_istio_accepts(kind: ResourceKind, spec: str) -> None:
    check_document(kind, doc(kind, spec_of(spec)))


def test_irregular_camel_case_names() -> None:
    spec = spec_of(
        """
        host: r
        trafficPolicy:
          outlierDetection: {consecutive5xxErrors: 5, consecutiveGatewayErrors: 2}
          connectionPool:
            http:
              http1MaxPendingRequests: 1
              http2MaxRequests: 10
              maxRequestsPerConnection: 1
        """
    )
    assert check_document(DR, doc(DR, spec)).unknown == []
    generated = spec_of("host: r\ntrafficPolicy: {outlierDetection: {consecutive5XxErrors: 5}}")
    result = check_document(DR, doc(DR, generated))
    assert result.unknown == ["spec.trafficPolicy.outlierDetection.consecutive5XxErrors"]


def test_python_keyword_fields() -> None:
    spec = spec_of(
        """
        host: r
        trafficPolicy:
          loadBalancer:
            localityLbSetting:
              failover: [{from: us-east, to: eu-west}]
        """
    )
    assert check_document(DR, doc(DR, spec)).unknown == []


def test_unknown_fields_are_reported_not_refused() -> None:
    spec = spec_of("hosts: [a]\nhttp: [{route: [{destination: {host: a}}], retry: {attempts: 3}}]\nfoo: 1")
    result = check_document(VS, doc(VS, spec))
    assert result.unknown == ["spec.foo", "spec.http[0].retry"]
    assert "retry" not in result.obj["spec"]["http"][0]


def test_unknown_fields_do_not_hide_real_errors() -> None:
    spec = spec_of("hosts: [a]\nhttp: [{route: [{destination: {host: a}, weight: -1}], bogus: true}]")
    assert causes_of(VS, doc(VS, spec)) == {"spec.http[0].route[0].weight": "FieldValueInvalid"}


def test_duration_parsing() -> None:
    assert duration_nanos("1.5s") == 1_500_000_000
    assert duration_nanos("1m30s") == 90_000_000_000
    assert duration_nanos("30ms") == 30_000_000
    assert duration_nanos("0") == 0
    assert duration_nanos("5") is None
    assert duration_nanos("s") is None


# --- kinds, registry, printer columns ------------------------------------------------------------


def test_kinds_are_registered() -> None:
    registry = default_registry()
    expected = {
        "virtualservices": ("VirtualService", ("vs",)),
        "destinationrules": ("DestinationRule", ("dr",)),
        "serviceentries": ("ServiceEntry", ("se",)),
        "workloadentries": ("WorkloadEntry", ("we",)),
    }
    assert [k.plural for k in NETWORKING_KINDS] == list(expected)
    for plural, (kind_name, short) in expected.items():
        kind = registry.by_path("networking.istio.io", "v1", plural)
        assert kind is not None and kind.kind == kind_name
        assert kind.short_names == short
        assert kind.categories == ("istio-io", "networking-istio-io")
        assert kind.namespaced and kind.status_subresource and not kind.strategic_merge


def cells(kind: ResourceKind, obj: dict[str, Any]) -> dict[str, Any]:
    """Column name → cell value for one object."""
    return {c.name: c.get(obj) for c in kind.columns}


def test_virtual_service_columns() -> None:
    obj = doc(VS, {"hosts": ["reviews", "ratings"], "gateways": ["bookinfo-gateway"]})
    obj["metadata"]["creationTimestamp"] = "2024-01-01T00:00:00Z"
    assert [c.name for c in VS.columns] == ["Name", "Gateways", "Hosts", "Age"]
    row = cells(VS, obj)
    assert row["Gateways"] == '["bookinfo-gateway"]'
    assert row["Hosts"] == '["reviews","ratings"]'
    assert row["Age"] == "2024-01-01T00:00:00Z"
    assert cells(VS, doc(VS, {"hosts": ["a"]}))["Gateways"] is None


def test_other_columns() -> None:
    assert [c.name for c in DR.columns] == ["Name", "Host", "Age"]
    assert cells(DR, doc(DR, {"host": "reviews"}))["Host"] == "reviews"
    se = doc(SE, {"hosts": ["a.com"], "location": "MESH_EXTERNAL", "resolution": "DNS"})
    assert [c.name for c in SE.columns] == ["Name", "Hosts", "Location", "Resolution", "Age"]
    assert cells(SE, se) | {"Age": None} == {
        "Name": "example",
        "Hosts": '["a.com"]',
        "Location": "MESH_EXTERNAL",
        "Resolution": "DNS",
        "Age": None,
    }
    assert [c.name for c in WE.columns] == ["Name", "Age", "Address"]
    assert cells(WE, doc(WE, {"address": "2.2.2.2"}))["Address"] == "2.2.2.2"
