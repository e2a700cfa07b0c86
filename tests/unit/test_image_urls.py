"""
Image URLs Letta would fetch: only data: images and https URLs on public addresses, checked after DNS resolution.

No test here connects anywhere; names other than `localhost` are resolved by a stand-in resolver.
"""

from __future__ import annotations

import asyncio

import pytest

from letta_hayhooks.errors import OpenAIError
from letta_hayhooks.openai_request import RequestLimits, check_image_urls, to_letta_content, validate_chat_request

PIXEL = "data:image/png;base64,iVBORw0KGgo="


def image_request(*urls: str, limits: RequestLimits | None = None):
    content = [{"type": "text", "text": "look"}, *({"type": "image_url", "image_url": {"url": u}} for u in urls)]
    messages = [{"role": "user", "content": content}]
    return validate_chat_request("agent", messages, {"messages": messages}, limits=limits)


def refused(*urls: str, limits: RequestLimits | None = None) -> OpenAIError:
    with pytest.raises(OpenAIError) as error:
        image_request(*urls, limits=limits)
    assert error.value.status == 400 and error.value.param == "messages[0].content[1]"
    return error.value


def resolving_to(*addresses: str):
    asked: list[tuple[str, int]] = []

    async def resolver(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return list(addresses)

    resolver.asked = asked  # type: ignore[attr-defined]
    return resolver


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/x.png", "https://127.1.2.3:8283/v1/agents/", "https://10.0.0.1/a.png",
        "https://172.16.0.9/a.png", "https://192.168.1.1/a.png", "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/a.png", "https://[fd00:ec2::254]/latest", "https://[fe80::1]/a.png",
        "https://[::ffff:127.0.0.1]/a.png", "https://[::ffff:169.254.169.254]/", "https://[64:ff9b::a9fe:a9fe]/",
        "https://[2002:7f00:1::]/", "https://0.0.0.0/", "https://224.0.0.1/", "https://100.64.0.1/",
        "https://240.0.0.1/", "https://metadata.google.internal/computeMetadata/v1/", "https://metadata/",
        "https://2130706433/", "https://0x7f000001/", "https://0177.0.0.1/", "https://127.1/",
        "http://example.com/a.png", "http://93.184.216.34/a.png",
        "file:///etc/passwd", "gopher://127.0.0.1:6379/_INFO", "javascript:alert(1)", "ftp://example.com/a.png",
        "https://user:pw@example.com/a.png", "https://example.com@127.0.0.1/", "https://ex ample.com/a.png",
        "https:\\\\127.0.0.1\\a.png", "https://[::1/a.png", "https:///a.png",
    ],
)
def test_non_public_and_non_https_urls_are_refused_before_any_lookup(url: str) -> None:
    assert refused(url).code == "image_url_not_allowed"


@pytest.mark.parametrize("url", ["data:image/png;base64,!!!!", "data:image/png;base64,", "data:text/plain;base64,AA==",
                                 "data:image/png;base64,iVBORw0KGgo", "data:image/png,rawbytes"])
def test_bad_data_urls_are_refused(url: str) -> None:
    assert refused(url).code == "invalid_image_url"


def test_public_literal_addresses_and_data_images_pass_without_a_lookup() -> None:
    request = image_request(PIXEL, "https://93.184.216.34/cat.png", "https://[2606:4700::1111]/dog.png")
    assert request.image_hosts == {}


def test_public_names_are_resolved_once_each_and_pass() -> None:
    request = image_request("https://images.example.com/a.png", "https://images.example.com/b.png",
                            "https://cdn.example.org:8443/c.png")
    resolver = resolving_to("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946")
    asyncio.run(check_image_urls(request, resolver=resolver))
    assert sorted(resolver.asked) == [("cdn.example.org", 8443), ("images.example.com", 443)]


@pytest.mark.parametrize("addresses", [["127.0.0.1"], ["93.184.216.34", "10.0.0.1"], ["169.254.169.254"],
                                       ["fd00:ec2::254"], ["::1"], [], ["not-an-address"]])
def test_a_name_resolving_to_any_non_public_address_is_refused(addresses: list[str]) -> None:
    request = image_request("https://images.example.com/a.png")
    with pytest.raises(OpenAIError) as error:
        asyncio.run(check_image_urls(request, resolver=resolving_to(*addresses)))
    assert error.value.code == "image_url_not_allowed" and error.value.param == "messages[0].content[1]"


def test_localhost_is_refused_after_real_resolution() -> None:
    request = image_request("https://localhost:8283/v1/agents/")
    assert request.image_hosts == {"localhost": (8283, "messages[0].content[1]")}
    with pytest.raises(OpenAIError) as error:
        asyncio.run(check_image_urls(request))
    assert error.value.code == "image_url_not_allowed" and "resolves to" in error.value.message


def test_an_unresolvable_name_is_refused() -> None:
    async def failing(host: str, port: int) -> list[str]:
        raise OSError("no such host")

    with pytest.raises(OpenAIError) as error:
        asyncio.run(check_image_urls(image_request("https://nowhere.example/a.png"), resolver=failing))
    assert error.value.code == "image_url_not_allowed" and "could not be resolved" in error.value.message


def test_too_many_distinct_hosts_are_refused() -> None:
    with pytest.raises(OpenAIError) as error:
        image_request(*(f"https://h{i}.example.com/a.png" for i in range(17)))
    assert error.value.code == "image_url_not_allowed"


def test_allowed_hosts_may_be_private_and_http() -> None:
    limits = RequestLimits(image_url_allowed_hosts=frozenset({"images.internal", "10.0.0.7"}))
    request = image_request("http://images.internal:8080/a.png", "https://10.0.0.7/b.png", limits=limits)
    assert request.image_hosts == {}
    assert refused("http://other.internal/a.png", limits=limits).code == "image_url_not_allowed"


def test_policy_off_allows_only_data_images() -> None:
    limits = RequestLimits(image_urls="off", image_url_allowed_hosts=frozenset({"images.internal"}))
    assert image_request(PIXEL, limits=limits).image_hosts == {}
    for url in ("https://93.184.216.34/a.png", "https://images.internal/a.png"):
        error = refused(url, limits=limits)
        assert error.code == "image_url_not_allowed" and "LETTA_HAYHOOKS_IMAGE_URLS=off" in error.message


def test_accepted_urls_are_forwarded_unchanged() -> None:
    request = image_request("https://cdn.example/i@2x.png")
    parts = to_letta_content(request.messages[0])
    assert parts[1] == {"type": "image", "source": {"type": "url", "url": "https://cdn.example/i@2x.png"}}
