"""Image reference parsing: distribution/reference's rules, as table and property tests."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from moorage.registry import ImageReference, InvalidReference, hosts_match, parse_reference

SHA = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("text", "domain", "path", "tag", "digest", "explicit"),
    [
        ("busybox", "docker.io", "library/busybox", "latest", None, False),
        ("busybox:1.36", "docker.io", "library/busybox", "1.36", None, True),
        ("library/busybox", "docker.io", "library/busybox", "latest", None, False),
        ("docker.io/busybox", "docker.io", "library/busybox", "latest", None, False),
        ("index.docker.io/busybox", "docker.io", "library/busybox", "latest", None, False),
        ("INDEX.DOCKER.IO/user/app", "docker.io", "user/app", "latest", None, False),
        ("user/app:v2", "docker.io", "user/app", "v2", None, True),
        # registry-1.docker.io is Hub's API host but not folded by the parser.
        (
            "registry-1.docker.io/library/x",
            "registry-1.docker.io",
            "library/x",
            "latest",
            None,
            False,
        ),
        ("ghcr.io/team/app:1.0", "ghcr.io", "team/app", "1.0", None, True),
        ("ghcr.io/app", "ghcr.io", "app", "latest", None, False),
        ("localhost/app", "localhost", "app", "latest", None, False),
        ("localhost:5000/a/b/c", "localhost:5000", "a/b/c", "latest", None, False),
        ("127.0.0.1:5000/x:t", "127.0.0.1:5000", "x", "t", None, True),
        ("[::1]:5000/app", "[::1]:5000", "app", "latest", None, False),
        ("[2001:DB8::1]/app", "[2001:db8::1]", "app", "latest", None, False),
        ("Registry.local/app", "registry.local", "app", "latest", None, False),
        ("host:5000/app", "host:5000", "app", "latest", None, False),  # ':' → a domain
        ("a.b/c", "a.b", "c", "latest", None, False),
        ("localhost:5000", "docker.io", "library/localhost", "5000", None, True),
        (f"busybox@{SHA}", "docker.io", "library/busybox", None, SHA, False),
        (f"ghcr.io/a/b:1@{SHA}", "ghcr.io", "a/b", "1", SHA, True),
        (
            "a_b/c__d/e-f/g--h/i.j:T_1.x-y",
            "docker.io",
            "a_b/c__d/e-f/g--h/i.j",
            "T_1.x-y",
            None,
            True,
        ),
        ("x:" + "a" * 128, "docker.io", "library/x", "a" * 128, None, True),
        ("x:_tag", "docker.io", "library/x", "_tag", None, True),
    ],
)
def test_parse_valid(
    text: str, domain: str, path: str, tag: str | None, digest: str | None, explicit: bool
) -> None:
    ref = parse_reference(text)
    assert (ref.domain, ref.path, ref.tag, ref.digest, ref.tag_explicit) == (
        domain,
        path,
        tag,
        digest,
        explicit,
    )
    assert parse_reference(str(ref)) == ref
    assert parse_reference(ref.familiar) == ref


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "Enter an image name"),
        ("Busybox", "Uppercase letters are not allowed in a repository name"),
        ("ghcr.io/Team/app", "Uppercase letters are not allowed in a repository name"),
        ("a//b", "empty component"),
        ("a/", "empty component"),
        ("/a", "empty component"),
        ("-a/b", "not a valid repository name component"),
        ("a-/b", "not a valid repository name component"),
        ("x/a.../b", "not a valid repository name component"),
        ("a.../b", "not a valid registry host"),  # a '.' makes it a domain
        ("MyUser/app", "write 'myuser/app'"),  # docker would read 'MyUser' as a host
        ("a___b", "not a valid repository name component"),
        ("app:", "not a valid tag"),
        ("app:.x", "not a valid tag"),
        ("app:-x", "not a valid tag"),
        ("app:" + "a" * 129, "not a valid tag"),
        ("app@sha256:abc", "64 lowercase hexadecimal"),
        ("app@sha256:" + "A" * 64, "64 lowercase hexadecimal"),
        ("app@md5:" + "a" * 32, "not supported"),
        ("app@nodigest", "not a valid digest"),
        ("0123456789abcdef" * 4, "image ID"),
        ("https://ghcr.io/a", "no scheme"),
        ("ghcr.io/a b", "spaces"),
        (" busybox", "spaces"),
        ("host:0/app", "not a valid registry host"),
        ("host:70000/app", "not a valid registry host"),
        ("[::1/app", "not a valid registry host"),
        ("ex_ample.com/app", "not a valid registry host"),
        ("ghcr.io/", "missing its repository"),
        ("ghcr.io/" + "a" * 250, "longer than 255"),
        ("a" * 250, "longer than 255"),  # docker.io/library/ makes it too long in full form
    ],
)
def test_parse_invalid_says_what_to_change(text: str, message: str) -> None:
    with pytest.raises(InvalidReference) as error:
        parse_reference(text)
    assert message in str(error.value)
    assert isinstance(error.value, ValueError)


def test_pull_ref_is_never_empty_and_prefers_the_digest() -> None:
    # POST /images/create with an empty tag pulls every tag: pull_ref must always be set.
    assert parse_reference("busybox").pull_ref == "latest"
    assert parse_reference("busybox:1").pull_ref == "1"
    assert parse_reference(f"busybox:1@{SHA}").pull_ref == SHA
    assert parse_reference(f"busybox@{SHA}").pull_ref == SHA
    digest_only = ImageReference(domain="docker.io", path="library/x", digest=SHA)
    assert digest_only.pull_ref == SHA
    bare = ImageReference(domain="docker.io", path="library/x")
    assert bare.pull_ref == "latest"


def test_string_forms() -> None:
    ref = parse_reference("busybox")
    assert str(ref) == "docker.io/library/busybox:latest"
    assert ref.familiar == "busybox:latest"
    assert ref.name == "docker.io/library/busybox"
    assert ref.api_host == "registry-1.docker.io"
    assert ref.registry_host == "docker.io"
    assert str(parse_reference(f"ghcr.io/a/b@{SHA}")) == f"ghcr.io/a/b@{SHA}"
    assert parse_reference("user/app:1").familiar == "user/app:1"
    assert parse_reference("127.0.0.1:5000/x").api_host == "127.0.0.1:5000"
    assert parse_reference("registry-1.docker.io/library/x").registry_host == "docker.io"
    assert parse_reference("busybox").with_tag("2") == parse_reference("busybox:2")
    # Shortening must not turn a Hub path into a host name.
    assert parse_reference("docker.io/my.org/app").familiar == "docker.io/my.org/app:latest"
    assert parse_reference("docker.io/localhost/app").familiar == "docker.io/localhost/app:latest"


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------

_component = st.from_regex(r"\A[a-z0-9]{1,4}(?:(?:[._]|__|-{1,2})[a-z0-9]{1,4}){0,2}\Z")
_label = st.from_regex(r"\A[a-z0-9](?:[a-z0-9-]{0,6}[a-z0-9])?\Z")
_port = st.integers(min_value=1, max_value=65535)
_domain = st.one_of(
    st.sampled_from(
        ["docker.io", "index.docker.io", "ghcr.io", "localhost", "127.0.0.1", "[::1]", "LOCALHOST"]
    ),
    st.builds(lambda a, b: f"{a}.{b}", _label, _label),
    st.builds(lambda a, p: f"{a}:{p}", _label, _port),
    st.builds(lambda p: f"[fe80::1]:{p}", _port),
)
_tag = st.from_regex(r"\A[\w][\w.-]{0,20}\Z", fullmatch=True).filter(str.isascii)
_digest = st.sampled_from([SHA, "sha512:" + "ab" * 64, "sha256:" + "f" * 64])


@st.composite
def references(draw: st.DrawFn) -> str:
    """Valid reference texts in every shape: with or without domain, tag, digest."""
    components = draw(st.lists(_component, min_size=1, max_size=3))
    text = "/".join(components)
    if draw(st.booleans()):
        text = f"{draw(_domain)}/{text}"
    if draw(st.booleans()):
        text += f":{draw(_tag)}"
    if draw(st.booleans()):
        text += f"@{draw(_digest)}"
    return text


@given(references())
def test_round_trip_through_the_full_form(text: str) -> None:
    try:
        ref = parse_reference(text)
    except InvalidReference:
        # A one-component name that is 64 hex digits is refused on purpose.
        assume(False)
        raise
    assert parse_reference(str(ref)) == ref
    assert parse_reference(ref.familiar) == ref
    assert ref.pull_ref
    assert ref.domain == ref.domain.lower()
    assert hosts_match(ref.domain, ref.registry_host)


@given(st.text(max_size=80))
def test_arbitrary_text_is_refused_cleanly_or_round_trips(text: str) -> None:
    try:
        ref = parse_reference(text)
    except InvalidReference as error:
        assert str(error)
        return
    assert parse_reference(str(ref)) == ref
