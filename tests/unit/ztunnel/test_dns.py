"""ztunnel's name server, asked by dnspython (an independent DNS implementation) over real UDP
and TCP sockets on loopback, with an upstream server of the test's own for names it does not own."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
import pytest_asyncio

from dataplane.ztunnel.dns import NameServer, Resolver, upstreams_from
from dataplane.ztunnel.dns_message import MessageError, Rcode, error, parse_query
from dataplane.ztunnel.state.store import ADDRESS_TYPE_URL, StateStore
from tests import harness
from tests.unit.ztunnel import builders as b

WEB = b.svc_key("web")
HEADLESS = b.svc_key("db")


def _store() -> StateStore:
    store = StateStore()
    external = b.service("api", ["198.19.9.9"], {443: 443}, namespace="shop")
    external.hostname = "API.example.test"  # a ServiceEntry's host, in any case
    messages = [
        b.service("web", ["198.19.0.10", "198.19.0.11", "fd00:19::10"], {80: 8080}),
        b.workload("web-1", ["198.18.2.10"], services={WEB: {80: 8080}}),
        b.service("db", [], {5432: 5432}),
        b.workload("db-0", ["198.18.1.7"], services={HEADLESS: {5432: 5432}}),
        b.workload("db-1", ["198.18.2.8"], services={HEADLESS: {5432: 5432}}),
        external,
    ]
    assert store.apply(ADDRESS_TYPE_URL, b.resources(*messages)) == []
    return store


class _Upstream(asyncio.DatagramProtocol):
    """A stand-in for the node's own name server: answers every A question with 192.0.2.1."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        query = dns.message.from_wire(data)
        reply = dns.message.make_response(query)
        reply.answer.append(dns.rrset.from_text(query.question[0].name, 60, "IN", "A", "192.0.2.1"))
        self.transport.sendto(reply.to_wire(), addr)


@pytest_asyncio.fixture
async def server() -> AsyncIterator[tuple[str, int]]:
    loop = asyncio.get_running_loop()
    upstream, _ = await loop.create_datagram_endpoint(_Upstream, local_addr=("127.0.0.2", 53))
    port = harness.free_port()
    name_server = NameServer(Resolver(_store(), upstreams=("127.0.0.2",)), "127.0.0.1", port)
    await name_server.start()
    try:
        yield "127.0.0.1", port
    finally:
        await name_server.close()
        upstream.close()


async def _ask(where: tuple[str, int], name: str, rdtype: str = "A", tcp: bool = False) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    ask = dns.query.tcp if tcp else dns.query.udp
    return await asyncio.to_thread(ask, query, where[0], timeout=3, port=where[1])


def _addresses(answer: dns.message.Message) -> list[str]:
    return sorted(r.address for rrset in answer.answer for r in rrset)


async def test_a_service_name_is_its_ipv4_vips_over_udp_and_tcp(server: tuple[str, int]) -> None:
    for tcp in (False, True):
        answer = await _ask(server, "web.default.svc.cluster.local.", tcp=tcp)
        assert answer.rcode() == dns.rcode.NOERROR and answer.flags & dns.flags.AA
        assert _addresses(answer) == ["198.19.0.10", "198.19.0.11"]


async def test_other_types_of_a_known_name_are_empty_and_unknown_cluster_names_do_not_exist(
    server: tuple[str, int],
) -> None:
    aaaa = await _ask(server, "web.default.svc.cluster.local.", "AAAA")
    assert aaaa.rcode() == dns.rcode.NOERROR and aaaa.answer == []
    # The search list's first tries (`web.default.svc.cluster.local.svc.cluster.local`, ...).
    for name in ("web.default.svc.cluster.local.svc.cluster.local.", "nothing.default.svc.cluster.local."):
        missing = await _ask(server, name)
        assert missing.rcode() == dns.rcode.NXDOMAIN and missing.flags & dns.flags.AA


async def test_a_headless_service_is_its_workloads_and_a_service_entry_host_resolves_in_any_case(
    server: tuple[str, int],
) -> None:
    assert _addresses(await _ask(server, "db.default.svc.cluster.local.")) == ["198.18.1.7", "198.18.2.8"]
    assert _addresses(await _ask(server, "api.EXAMPLE.test.")) == ["198.19.9.9"]


async def test_names_outside_the_cluster_are_relayed_upstream(server: tuple[str, int]) -> None:
    answer = await _ask(server, "www.example.org.")
    assert answer.rcode() == dns.rcode.NOERROR and _addresses(answer) == ["192.0.2.1"]


async def test_without_an_upstream_that_answers_outside_names_fail_at_once() -> None:
    resolver = Resolver(_store(), upstreams=("127.0.0.3",))  # nothing listens: refused
    query = dns.message.make_query("www.example.org.", "A")
    answer = dns.message.from_wire(await asyncio.wait_for(resolver.answer(query.to_wire()), 1.5))
    assert answer.rcode() == dns.rcode.SERVFAIL and answer.id == query.id


@pytest.mark.parametrize(
    ("mutate", "rcode"),
    [
        (lambda wire: wire[:5], None),  # not even a header: no answer
        (lambda wire: wire[:2] + bytes([wire[2] | 0x80]) + wire[3:], None),  # a response: no answer
        (lambda wire: wire[:2] + bytes([wire[2] | 0x10]) + wire[3:], Rcode.NOTIMP),  # opcode 2
        (lambda wire: wire[:4] + b"\x00\x02" + wire[6:], Rcode.FORMERR),  # two questions
        (lambda wire: wire[:-6], Rcode.FORMERR),  # the question cut short
    ],
)
def test_a_query_that_cannot_be_read_gets_a_bare_error_or_nothing(mutate, rcode: Rcode | None) -> None:
    wire = mutate(dns.message.make_query("web.default.svc.cluster.local.", "A").to_wire())
    with pytest.raises(MessageError) as caught:
        parse_query(wire)
    reply = error(wire, caught.value.rcode)
    if rcode is None:
        assert reply is None
    else:
        assert dns.message.from_wire(reply, question_only=True).rcode() == rcode


def test_upstreams_come_from_resolv_conf_without_this_server(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("# host\nnameserver 10.0.0.2\nnameserver fd00::53\nnameserver 198.18.1.1\nsearch x\n")
    assert upstreams_from(conf, skip="198.18.1.1") == ("10.0.0.2",)
    assert upstreams_from(tmp_path / "missing") == ()
    assert ipaddress.ip_address(upstreams_from(conf)[-1]) == ipaddress.ip_address("198.18.1.1")


async def test_before_the_first_xds_answer_cluster_names_are_a_failure_to_retry_not_absent() -> None:
    synced = False
    resolver = Resolver(StateStore(), synced=lambda: synced)
    query = dns.message.make_query("web.default.svc.cluster.local.", "A").to_wire()
    assert dns.message.from_wire(await resolver.answer(query)).rcode() == dns.rcode.SERVFAIL
    synced = True
    assert dns.message.from_wire(await resolver.answer(query)).rcode() == dns.rcode.NXDOMAIN


async def test_a_new_ztunnel_answers_while_the_old_one_drains() -> None:
    port = harness.free_port()
    old, new = NameServer(Resolver(_store()), "127.0.0.1", port), NameServer(Resolver(_store()), "127.0.0.1", port)
    await old.start()
    await new.start()  # SO_REUSEPORT: both bound, as during an upgrade
    await old.close()
    try:
        for tcp in (False, True):
            answer = await _ask(("127.0.0.1", port), "web.default.svc.cluster.local.", tcp=tcp)
            assert _addresses(answer) == ["198.19.0.10", "198.19.0.11"]
    finally:
        await new.close()
