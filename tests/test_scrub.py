"""Instance ids never reach a log, a metric or an echoed path, however the client spells them.

Ids are bearer capabilities. The attacks are the spellings a server still serves (a percent-encoded
character) or that are plainly the id (braces, ``urn:uuid:``, a trailing ``%20``/``%00``/``;x``, an
encoded ``../``). They are sent over a raw socket, as an HTTP client would normalise some of them,
to real processes, and their log files are searched for any form of the id.
"""

from __future__ import annotations

import re
import socket
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcp.server.scrub import scrub_path
from tests.conftest import ADMIN_TOKEN, ApiClient
from tests.support import http

ID = "66bf1524-1a2b-4c3d-8e9f-0123456789ab"
UUID_RE = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}", re.I)


def encode_first(iid: str) -> str:
    return f"%{ord(iid[0]):02X}{iid[1:]}"


def spellings(iid: str) -> list[str]:
    """An id as a client may write it in the instance position."""
    return [encode_first(iid), f"%{ord(iid[0]):02x}{iid[1:]}", f"{iid}%20", f"{iid}%00", f"%7B{iid}%7D",
            f"urn:uuid:{iid}", f"{iid};jsessionid=1", f"..%2F{iid}", f"%252F{iid}", f"{iid.upper()}%0A",
            iid.replace("-", "")]


def decoded(text: str) -> str:
    for _ in range(8):
        text, before = unquote(text), text
        if text == before:
            break
    return text


def leaks(text: str, iid: str) -> list[str]:
    """Each form of ``iid`` found in ``text``: plain, any case, any 8-hex run of it, percent-decoded."""
    hexes = iid.replace("-", "").lower()
    needles = {iid.lower()} | {hexes[i:i + 8] for i in range(len(hexes) - 7)}
    needles |= {iid.lower()[i:i + 13] for i in range(len(iid) - 12)}
    hay = [text.lower(), decoded(text).lower()]
    hay.append(re.sub(r"[-%\s{}]", "", hay[1]))
    return sorted({n for n in needles for h in hay if n in h})


def offending_lines(text: str, iid: str) -> list[str]:
    return [line for line in text.splitlines() if leaks(line, iid)]


def raw_request(port: int, method: str, target: str, body: bytes = b"", headers: dict[str, str] | None = None
                ) -> tuple[int, bytes]:
    """One request as bytes on a socket (the target exactly as given); the status and the body."""
    head = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close",
            f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body:
        head.append("Content-Type: application/json")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    answer = b"".join(chunks)
    status = int(answer.split(b" ", 2)[1])
    return status, answer.partition(b"\r\n\r\n")[2]


# The scrubber itself ---------------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", spellings(ID))
@pytest.mark.parametrize("template", ["/{}/mcp/call", "/{}/mcp", "/{}", "/{}/api/files/x",
                                      "/api/instances/{}", "/api/instances/{}/usage"])
def test_any_spelling_in_the_instance_position_becomes_instance(template, spelling):
    scrubbed = scrub_path(template.format(spelling))
    assert scrubbed == template.format("{instance}")
    assert not leaks(scrubbed, ID)


@pytest.mark.parametrize("spelling", [*spellings(ID), ID, ID.upper(), ID[:8], ID[-12:], f"%2566{ID[2:]}"])
@pytest.mark.parametrize("template", ["/x/api/files/{}", "/x/mcp/{}", "/health/{}", "/api/users/{}/instances",
                                      "/{}/{}", "/api/x/{}"])
def test_any_other_segment_that_could_be_an_id_becomes_segment(template, spelling):
    scrubbed = scrub_path(template.format(spelling, spelling))
    assert "{segment}" in scrubbed and not leaks(scrubbed, ID), scrubbed


@pytest.mark.parametrize("path,expected", [
    ("/health", "/health"), ("/metrics", "/metrics"), ("/", "/"),
    (f"/{ID}/mcp/call", "/{instance}/mcp/call"), (f"/{ID}/api/files/abc123XYZ", "/{instance}/api/files/abc123XYZ"),
    (f"/{ID}/api/files/%61bc", "/{instance}/api/files/abc"),  # decoded before it is judged
    ("/api/services/status", "/api/services/status"), ("/api/instances", "/api/instances"),
    ("/api/users/ada@example.com/instances", "/api/users/{segment}/instances"),
    (f"/{ID}/x/%0Aforged 200 GET", "/{instance}/x/{segment}"),  # no line breaks or spaces in a log line
    (f"/{ID}/" + "a" * 65, "/{instance}/{segment}"), (f"/{ID}/" + "%41" * 200, "/{instance}/{segment}"),
    ("/health/" + "%67" * 64, "/health/" + "g" * 64),
    (f"/{ID}/%2525252541", "/{instance}/{segment}"),  # still encoded after the decoding rounds
    ("/health/deadbeef", "/health/{segment}"),
    ("*", "{segment}"),
])
def test_safe_segments_are_kept_and_the_rest_replaced(path, expected):
    assert scrub_path(path) == expected


def test_a_path_of_many_segments_is_cut_short():
    scrubbed = scrub_path("/x" + "/a" * 1000)
    assert scrubbed.count("/") <= 34 and scrubbed.endswith("/{segment}")


# Real processes ---------------------------------------------------------------------------------------


def test_a_service_logs_echoes_and_measures_no_spelling_of_an_id(admin, spawn, figma):
    service = spawn("services.figma", "FIGMA_PORT", {"LOG_LEVEL": "DEBUG"})
    iid = admin.create_instance(credentials={"api_key": "figd_scrub"})["instance_id"]
    call = b'{"name": "get_me"}'
    # Percent-encoding one character is still this instance: served, so logged on every call.
    status, body = raw_request(service.port, "POST", f"/{encode_first(iid)}/mcp/call", call)
    assert status == 200 and b'"isError":false' in body.replace(b" ", b"")
    answers = {}
    for spelling in spellings(iid):
        for method, suffix, payload in [("POST", "/mcp/call", call), ("GET", "/mcp/tools", b""),
                                        ("GET", "/no/such/endpoint", b"")]:
            target = f"/{spelling}{suffix}"
            answers[target] = raw_request(service.port, method, target, payload)
    # The id in a later segment: a direct endpoint's argument, and an unrouted path echoed in a 404.
    for target in [f"/{iid}/api/files/{encode_first(iid)}", f"/{iid}/no/{encode_first(iid)}",
                   f"/{iid}/no/%7B{iid}%7D", f"/health/{iid}%20", f"/{iid}/mcp/call/{iid.upper()}"]:
        answers[target] = raw_request(service.port, "GET", target)
    echoed = {t: b for t, (_, b) in answers.items() if leaks(b.decode("utf-8", "replace"), iid)}
    assert not echoed, echoed
    assert not leaks(http("GET", service.url + "/metrics").body.decode(), iid)
    assert service.stop() == 0
    output = service.output()
    assert "POST /{instance}/mcp/call" in output and "GET /{instance}/no/{segment}" in output
    assert not offending_lines(output, iid), "\n".join(offending_lines(output, iid))


def test_the_api_logs_and_measures_no_spelling_of_an_id(spawn):
    api = spawn("services.api", "API_PORT", {"LOG_LEVEL": "DEBUG"})
    admin = ApiClient(api.url)
    iid = admin.create_instance(credentials={"api_key": "figd_scrub"})["instance_id"]
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    # Served: Tornado decodes the path argument, so these are the instance itself.
    for target in [f"/api/instances/{iid}", f"/api/instances/{encode_first(iid)}",
                   f"/api/instances/{iid.upper()}/usage", f"/api/instances/{encode_first(iid)}/usage"]:
        status, body = raw_request(api.port, "GET", target, headers=auth)
        assert status == 200, (target, body)
    for spelling in spellings(iid):
        for target in [f"/api/instances/{spelling}", f"/api/instances/{spelling}/usage", f"/{spelling}/mcp/call",
                       f"/api/nothing/{spelling}"]:
            raw_request(api.port, "GET", target, headers=auth)
    raw_request(api.port, "PATCH", f"/api/instances/{encode_first(iid)}", b'{"status": "inactive"}', auth)
    rotated = admin("POST", f"/api/instances/{iid}/rotate-id")
    assert rotated.status == 200
    new = rotated.json["instance_id"]
    admin("GET", f"/api/instances/{new}")
    metrics = http("GET", api.url + "/metrics").body.decode()
    assert not leaks(metrics, iid) and not leaks(metrics, new)
    assert api.stop() == 0
    output = api.output()
    assert "GET /api/instances/{instance}/usage" in output
    bad = offending_lines(output, iid) + offending_lines(output, new)
    assert not bad, "\n".join(bad)


SAFE_SEGMENT = re.compile(r"[A-Za-z0-9._~-]{0,64}")


def shown_safely(scrubbed: str) -> bool:
    return all(part in ("{instance}", "{segment}") or (SAFE_SEGMENT.fullmatch(part)
                                                         and not re.search(r"[0-9a-f]{8}", part, re.I))
               for part in scrubbed.split("/"))


@settings(max_examples=400, deadline=None, derandomize=True)
@given(st.lists(st.one_of(st.sampled_from(["health", "api", "instances", "mcp", "call", ID, ID.upper(), "%", "%25",
                                           "%2F", "%00", "%0A", "{", "}", ";", ":", "..", "urn:uuid:", "", "x"]),
                          st.text(max_size=12)), max_size=12).map("".join),
       st.sampled_from(["/", "", "/api/instances/"]))
def test_scrubbing_shows_only_safe_segments_and_is_stable(body, prefix):
    path = prefix + body
    scrubbed = scrub_path(path)
    assert shown_safely(scrubbed), (path, scrubbed)
    assert not leaks(scrubbed, ID), (path, scrubbed)
    assert scrub_path(scrubbed) == scrubbed  # scrubbing twice (the access log does) changes nothing


def send_method(port: int, method: str, target: str) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def test_an_id_sent_as_the_method_is_not_logged(spawn):
    # Any token is a method to Tornado: answered 405, and logged as the request's method.
    service = spawn("services.figma", "FIGMA_PORT", {"LOG_LEVEL": "DEBUG"})
    assert send_method(service.port, ID, "/health") == 405
    assert send_method(service.port, ID.upper(), f"/{ID}/mcp/tools") == 405
    assert service.stop() == 0
    output = service.output()
    assert "405 OTHER /health" in output
    assert not offending_lines(output, ID), "\n".join(offending_lines(output, ID))


def test_an_id_sent_as_the_method_is_not_measured(spawn):
    # The method is a metric label: one series per distinct method would also grow without bound.
    service = spawn("services.figma", "FIGMA_PORT")
    for n in range(5):
        assert send_method(service.port, f"{ID}{n}", "/health") == 405
    metrics = http("GET", service.url + "/metrics").body.decode()
    assert not leaks(metrics, ID), [line for line in metrics.splitlines() if leaks(line, ID)]
    assert 'method="OTHER",process="figma",status="405"} 5' in metrics


def test_a_request_tornado_refuses_is_logged_without_what_it_quoted(spawn):
    service = spawn("services.figma", "FIGMA_PORT", {"LOG_LEVEL": "DEBUG"})
    secret = "figd_PLANTED_in_a_header_9911"
    close = "Connection: close\r\n"
    refused = [
        f"GET /health HTTP/1.1\r\nHost: x\r\n{close}Referer: https://example.com/figma/{ID}/mcp\x01\r\n\r\n",
        f"GET /{ID}/mcp/tools HTTP/1.1\r\nHost: x\r\n{close}Authorization: Bearer {secret}\x7f\r\n\r\n",
        f"GET /health HTTP/1.1\r\n{close}Host: {ID}\x01\r\n\r\n",
        f"GET /health HTTP/1.1\r\n{close}Host: {secret}/{ID}\r\n\r\n",
        f"GET /health HTTP/1.1\r\nHost: x\r\n{close}{secret}\x01{ID}: 1\r\n\r\n",
        f"POST /{ID}/mcp/call HTTP/1.1\r\nHost: x\r\n{close}Transfer-Encoding: {secret}\r\n\r\n",
        f"POST /{ID}/mcp/call HTTP/1.1\r\nHost: x\r\n{close}Content-Length: {secret}\r\n\r\n",
    ]
    for raw in refused:
        with socket.create_connection(("127.0.0.1", service.port), timeout=30) as sock:
            sock.sendall(raw.encode("latin-1"))
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer[:10] in (b"HTTP/1.1 4", b"HTTP/1.0 4"), (raw, answer[:200])  # refused, one way or another
    assert service.stop() == 0
    output = service.output()
    assert "Malformed HTTP message from" in output  # the refusals are logged, with their kind
    bad = offending_lines(output, ID) + [line for line in output.splitlines() if secret.lower() in line.lower()]
    assert not bad, "\n".join(bad)
