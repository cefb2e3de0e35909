"""Registry host normalisation: what people paste → one canonical host, or a clear refusal."""

from __future__ import annotations

import subprocess
import sys
from ipaddress import IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from moorage.registry import (
    InvalidRegistryHost,
    api_base_url,
    api_host,
    docker_config_key,
    hosts_match,
    is_loopback,
    normalize_registry_host,
    parse_reference,
    server_address,
)


@pytest.mark.parametrize(
    ("pasted", "canonical"),
    [
        ("docker.io", "docker.io"),
        ("index.docker.io", "docker.io"),
        ("https://index.docker.io/v1/", "docker.io"),
        ("https://index.docker.io/v1", "docker.io"),
        ("HTTPS://INDEX.DOCKER.IO/V1/", "docker.io"),
        ("registry-1.docker.io", "docker.io"),
        ("https://registry-1.docker.io/", "docker.io"),
        ("DOCKER.IO", "docker.io"),
        ("ghcr.io", "ghcr.io"),
        ("https://ghcr.io/", "ghcr.io"),
        ("https://ghcr.io", "ghcr.io"),
        ("GHCR.IO", "ghcr.io"),
        ("  ghcr.io\n", "ghcr.io"),  # a pasted line end is forgiven
        ("registry.example.com:5000", "registry.example.com:5000"),
        ("Registry.Example.com:5000", "registry.example.com:5000"),
        ("https://registry.example.com:443/", "registry.example.com:443"),  # ports are kept
        ("localhost:5000", "localhost:5000"),
        ("LOCALHOST:5000", "localhost:5000"),
        ("localhost", "localhost"),
        ("127.0.0.1:5000", "127.0.0.1:5000"),
        ("http://127.0.0.1:5000/", "127.0.0.1:5000"),
        ("127.0.0.1:05000", "127.0.0.1:5000"),
        ("[::1]:5000", "[::1]:5000"),
        ("[0:0:0:0:0:0:0:1]:5000", "[::1]:5000"),
        ("[2001:DB8::1]", "[2001:db8::1]"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        (
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
        ),
    ],
)
def test_normalize_accepts_what_people_paste(pasted: str, canonical: str) -> None:
    assert normalize_registry_host(pasted) == canonical
    assert normalize_registry_host(canonical) == canonical


@pytest.mark.parametrize(
    ("pasted", "code"),
    [
        ("", "server_empty"),
        ("   ", "server_empty"),
        ("ghcr.io/team", "server_has_path"),
        ("https://ghcr.io/v2/", "server_has_path"),
        ("https://ghcr.io/v1/", "server_has_path"),  # /v1/ is Hub's key only
        ("ghcr.io/team/app:1", "server_has_path"),
        ("ghcr.io?x=1", "server_has_query"),
        ("https://ghcr.io/#top", "server_has_query"),
        ("user@ghcr.io", "server_has_userinfo"),
        ("https://user:secret@ghcr.io/", "server_has_userinfo"),
        ("ftp://ghcr.io", "server_scheme_invalid"),
        ("ssh://git@ghcr.io", "server_scheme_invalid"),
        ("docker://ghcr.io", "server_scheme_invalid"),
        ("file:///etc/passwd", "server_scheme_invalid"),
        ("https:ghcr.io", "server_invalid"),
        ("ghcr .io", "server_invalid"),
        ("gh\tcr.io", "server_invalid"),
        ("under_score.example", "server_invalid"),
        ("-bad.example", "server_invalid"),
        ("bad-.example", "server_invalid"),
        ("a..b", "server_invalid"),
        ("bücher.example", "server_invalid"),
        ("https://", "server_invalid"),
        (":5000", "server_invalid"),
        ("[::1", "server_invalid"),
        ("[nothex]:5000", "server_invalid"),
        ("[::1]x", "server_invalid"),
        ("ghcr.io:", "server_port_invalid"),
        ("ghcr.io:0", "server_port_invalid"),
        ("ghcr.io:65536", "server_port_invalid"),
        ("ghcr.io:http", "server_port_invalid"),
        ("ghcr.io:-1", "server_port_invalid"),
        ("[::1]:99999", "server_port_invalid"),
        ("a" * 254, "server_too_long"),
        ("a." * 1100, "server_too_long"),
    ],
)
def test_normalize_refuses_with_a_stable_code(pasted: str, code: str) -> None:
    with pytest.raises(InvalidRegistryHost) as error:
        normalize_registry_host(pasted)
    assert error.value.code == code
    assert isinstance(error.value, ValueError)
    assert error.value.message and str(error.value) == error.value.message
    assert "secret" not in str(error.value)  # user-info is never echoed back


def test_docker_hub_derivations() -> None:
    for spelling in ("docker.io", "index.docker.io", "https://index.docker.io/v1/"):
        assert docker_config_key(spelling) == "https://index.docker.io/v1/"
        assert api_host(spelling) == "registry-1.docker.io"
        assert api_base_url(spelling) == "https://registry-1.docker.io"
        assert server_address(spelling) == "index.docker.io"
    assert docker_config_key("ghcr.io") == "ghcr.io"
    assert server_address("https://ghcr.io/") == "ghcr.io"
    assert api_host("ghcr.io") == "ghcr.io"


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("ghcr.io", "https://ghcr.io"),
        ("registry.example.com:5000", "https://registry.example.com:5000"),
        ("localhost", "http://localhost"),
        ("localhost:5000", "http://localhost:5000"),
        ("127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("127.9.8.7:5000", "http://127.9.8.7:5000"),
        ("[::1]:5000", "http://[::1]:5000"),
        ("128.0.0.1:5000", "https://128.0.0.1:5000"),
        ("10.0.0.1:5000", "https://10.0.0.1:5000"),  # private is not loopback: TLS
        ("localhost.example.com", "https://localhost.example.com"),
        ("[::2]:5000", "https://[::2]:5000"),
    ],
)
def test_api_base_url_uses_plain_http_only_on_loopback(host: str, url: str) -> None:
    assert api_base_url(host) == url
    assert is_loopback(host) == url.startswith("http://")


def test_hosts_match_is_exact_on_the_canonical_host() -> None:
    assert hosts_match("https://index.docker.io/v1/", "docker.io")
    assert hosts_match("docker.io", parse_reference("busybox").domain)
    assert hosts_match("docker.io", parse_reference("registry-1.docker.io/library/x").domain)
    assert hosts_match("GHCR.io", "https://ghcr.io/")
    assert hosts_match("127.0.0.1:5000", parse_reference("127.0.0.1:5000/x").domain)
    # I4: a credential goes to its own host only.
    assert not hosts_match("docker.io", "ghcr.io")
    assert not hosts_match("ghcr.io", parse_reference("busybox").domain)
    assert not hosts_match("127.0.0.1:5000", "127.0.0.1:5001")
    assert not hosts_match("127.0.0.1:5000", "localhost:5000")
    assert not hosts_match("registry.example.com", "registry.example.com:443")
    assert not hosts_match("example.com", "registry.example.com")
    # Invalid input never matches (fail closed), even against itself.
    assert not hosts_match("ghcr.io/team", "ghcr.io/team")
    assert not hosts_match("", "")


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------

_label = st.from_regex(r"\A[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,8}[a-zA-Z0-9])?\Z")
_name = st.lists(_label, min_size=1, max_size=4).map(".".join)


def _not_ipv4_mapped(address: IPv6Address) -> bool:
    return address.ipv4_mapped is None


_ipv6 = st.builds(IPv6Address, st.integers(min_value=0, max_value=2**128 - 1))
_ipv6_host = _ipv6.filter(_not_ipv4_mapped).map(lambda a: f"[{a}]")
_host = st.one_of(_name, _ipv6_host, st.sampled_from(["docker.io", "index.docker.io", "localhost"]))
_port = st.integers(min_value=1, max_value=65535).map(str)


@st.composite
def pasted_hosts(draw: st.DrawFn) -> str:
    """Valid hosts with the decorations people add: scheme, port, trailing slash, case."""
    text = draw(_host)
    if draw(st.booleans()):
        text += ":" + draw(_port)
    if draw(st.booleans()):
        text = draw(st.sampled_from(["https://", "http://", "HTTPS://"])) + text
        text += draw(st.sampled_from(["", "/"]))
    return text


@given(pasted_hosts())
def test_normalize_is_idempotent_and_config_keys_round_trip(text: str) -> None:
    canonical = normalize_registry_host(text)
    assert normalize_registry_host(canonical) == canonical
    assert canonical == canonical.lower()
    assert normalize_registry_host(docker_config_key(canonical)) == canonical
    assert normalize_registry_host(server_address(canonical)) == canonical
    assert hosts_match(text, canonical)
    assert api_base_url(canonical).startswith(("https://", "http://"))


@given(pasted_hosts())
def test_an_accepted_host_is_the_domain_of_its_image_names(text: str) -> None:
    canonical = normalize_registry_host(text)
    domain_part = canonical if canonical != "localhost" else "localhost"
    ref = parse_reference(f"{domain_part}/team/app:1")
    if "." in canonical or ":" in canonical or canonical == "localhost":
        assert hosts_match(canonical, ref.domain)


@given(st.text(max_size=60))
def test_arbitrary_text_is_refused_with_a_code_or_normalized_idempotently(text: str) -> None:
    try:
        canonical = normalize_registry_host(text)
    except InvalidRegistryHost as error:
        assert error.code.startswith("server_")
        return
    assert normalize_registry_host(canonical) == canonical


def test_the_package_does_not_import_django() -> None:
    code = (
        "import sys, moorage.registry, moorage.registry.access, moorage.registry.auth, "
        "moorage.registry.dockerconfig, moorage.registry.hosts, moorage.registry.reference; "
        "bad = sorted(m for m in sys.modules if m == 'django' or m.startswith('django.')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "django" not in result.stdout.replace("[]", "")
