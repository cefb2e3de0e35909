"""Registry host names: one canonical spelling for what people paste, and what follows from it.

A registry credential is stored for one *host* and must only ever be sent to that host (I4),
so the host has to be compared reliably. People paste many spellings of the same registry
(``https://index.docker.io/v1/``, ``DOCKER.IO``, ``ghcr.io/``); :func:`normalize_registry_host`
turns each into one canonical host, the same string :func:`moorage.registry.parse_reference`
puts in :attr:`ImageReference.domain`.

Decisions (each one is a rule of the tools we feed, not taste):

* Docker Hub is ``docker.io`` whatever its spelling (``index.docker.io``, ``registry-1.docker.io``,
  ``https://index.docker.io/v1/``). Its config key and API host are derived from that.
* Ports are kept as written (leading zeros dropped), ``:443`` included. Docker, kubelet and the
  containerd image store treat ``example.com:443/app`` and ``example.com/app`` as names in
  different registries, and a credential for one is not looked up for the other; folding them
  together here would make :func:`hosts_match` promise a match the engine does not make.
* A scheme (``http://`` or ``https://``) is accepted and dropped: it says nothing the engine
  uses (dockerd picks the scheme itself, see :func:`api_base_url`).
* A path is refused, except Docker Hub's legacy ``/v1/`` (the key ``docker login`` writes),
  because a path would silently be ignored and mislead the user into thinking it matters.
"""

from __future__ import annotations

import ipaddress
import re

__all__ = [
    "DOCKER_HUB",
    "DOCKER_HUB_API_HOST",
    "DOCKER_HUB_CONFIG_KEY",
    "DOCKER_HUB_SERVER_ADDRESS",
    "InvalidRegistryHost",
    "api_base_url",
    "api_host",
    "docker_config_key",
    "host_name",
    "hosts_match",
    "is_docker_hub",
    "is_loopback",
    "normalize_registry_host",
    "server_address",
]

#: Canonical host of Docker Hub, as distribution/reference spells it.
DOCKER_HUB = "docker.io"
#: Where Docker Hub's registry API actually answers.
DOCKER_HUB_API_HOST = "registry-1.docker.io"
#: The only key under which the engine finds Hub credentials in config.json/X-Registry-Config.
DOCKER_HUB_CONFIG_KEY = "https://index.docker.io/v1/"
#: The host dockerd's containerd image store accepts as Hub in ``serveraddress`` on every
#: version (older versions only map ``index.docker.io``, not ``docker.io``, to Hub's API host).
DOCKER_HUB_SERVER_ADDRESS = "index.docker.io"

_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})

#: DNS limit for a host name; a registry name with its repository path must fit in 255 too.
MAX_HOST_LENGTH = 253
_MAX_INPUT_LENGTH = 2048

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):(//)?")
_LABEL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_IPV6_RE = re.compile(r"^\[([0-9a-f:]+)\]$")
_URL_SCHEMES = frozenset(
    {"http", "https", "ftp", "ftps", "sftp", "ssh", "git", "file", "mailto", "tcp", "unix"}
)


class InvalidRegistryHost(ValueError):
    """A registry host that cannot be used; ``code`` is stable, the message is for a person.

    Codes: ``server_empty``, ``server_too_long``, ``server_scheme_invalid``,
    ``server_has_userinfo``, ``server_has_path``, ``server_has_query``, ``server_port_invalid``,
    ``server_invalid``.
    """

    def __init__(self, message: str, *, code: str) -> None:
        """Keep the message and the stable code (what API clients branch on)."""
        super().__init__(message)
        self.message = message
        self.code = code


def normalize_registry_host(value: str) -> str:
    """Return the canonical registry host for what a person typed or pasted.

    ``"https://index.docker.io/v1/"`` → ``"docker.io"``, ``"GHCR.IO/"`` → ``"ghcr.io"``,
    ``"[0:0::1]:05000"`` → ``"[::1]:5000"``. Idempotent. Raises :class:`InvalidRegistryHost`.
    Surrounding whitespace is forgiven (a pasted line end); whitespace inside is not.
    """
    if not isinstance(value, str):
        raise InvalidRegistryHost("The registry server must be text.", code="server_invalid")
    text = value.strip()
    if not text:
        raise InvalidRegistryHost("Enter the registry server, e.g. ghcr.io.", code="server_empty")
    if len(text) > _MAX_INPUT_LENGTH:
        raise InvalidRegistryHost("The registry server is too long.", code="server_too_long")
    if any(ch.isspace() for ch in text):
        raise InvalidRegistryHost(
            "The registry server cannot contain spaces.", code="server_invalid"
        )

    rest = text
    scheme_match = _SCHEME_RE.match(text)
    # "localhost:5000" also looks like "scheme:rest": without "//", only a well-known URL
    # scheme counts as one; anything else is read as host:port (and a bad port says so).
    if scheme_match and (scheme_match.group(2) or scheme_match.group(1).lower() in _URL_SCHEMES):
        scheme = scheme_match.group(1).lower()
        if scheme not in ("http", "https"):
            raise InvalidRegistryHost(
                f"The registry server must be a host name such as ghcr.io, not a {scheme}:// "
                "address. Only https:// (or http://) may be written in front of it.",
                code="server_scheme_invalid",
            )
        if not scheme_match.group(2):
            raise InvalidRegistryHost(
                f"The registry server {text!r} is not a valid address.", code="server_invalid"
            )
        rest = text[scheme_match.end() :]

    authority, path, query, fragment = _split_rest(rest)
    if query is not None or fragment is not None:
        raise InvalidRegistryHost(
            "The registry server cannot contain '?' or '#': enter only its host, e.g. ghcr.io.",
            code="server_has_query",
        )
    if "@" in authority:
        raise InvalidRegistryHost(
            "The registry server cannot contain a user name ('user@'): enter the user name "
            "in its own field.",
            code="server_has_userinfo",
        )
    host = _canonical_authority(authority, original=text)
    if path not in ("", "/"):
        if host in _HUB_ALIASES and path.rstrip("/").lower() == "/v1":
            pass  # The key `docker login` writes for Docker Hub.
        else:
            raise InvalidRegistryHost(
                f"The registry server cannot contain a path ({path!r}): enter only the host, "
                f"e.g. {host}. A registry holds many repositories; the repository belongs in "
                "the image name.",
                code="server_has_path",
            )
    if host in _HUB_ALIASES:
        return DOCKER_HUB
    return host


def _split_rest(rest: str) -> tuple[str, str, str | None, str | None]:
    """Split ``authority[/path][?query][#fragment]`` (without a scheme)."""
    fragment: str | None = None
    query: str | None = None
    if "#" in rest:
        rest, fragment = rest.split("#", 1)
    if "?" in rest:
        rest, query = rest.split("?", 1)
    authority, slash, path = rest.partition("/")
    return authority, (slash + path), query, fragment


def _canonical_authority(authority: str, *, original: str) -> str:
    """Validate ``host[:port]`` and return it lower-cased, IPv6 compressed, port without zeros."""
    if not authority:
        raise InvalidRegistryHost(
            f"{original!r} has no host name: enter one such as ghcr.io.", code="server_invalid"
        )
    lowered = authority.lower()
    port: str | None = None
    if lowered.startswith("["):
        close = lowered.find("]")
        if close == -1:
            raise InvalidRegistryHost(
                f"The IPv6 address in {original!r} lacks its closing ']'.", code="server_invalid"
            )
        host_part, after = lowered[: close + 1], lowered[close + 1 :]
        if after:
            if not after.startswith(":"):
                raise InvalidRegistryHost(
                    f"{original!r} is not a valid registry address.", code="server_invalid"
                )
            port = after[1:]
        host = _canonical_ipv6(host_part, original)
    else:
        host_part, colon, port_text = lowered.partition(":")
        if colon:
            port = port_text
        host = _canonical_name(host_part, original)
    if len(host) > MAX_HOST_LENGTH:
        raise InvalidRegistryHost(
            f"The registry host name is longer than {MAX_HOST_LENGTH} characters.",
            code="server_too_long",
        )
    if port is None:
        return host
    if not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise InvalidRegistryHost(
            f"The port in {original!r} must be a number from 1 to 65535.",
            code="server_port_invalid",
        )
    return f"{host}:{int(port)}"


def _canonical_ipv6(text: str, original: str) -> str:
    match = _IPV6_RE.match(text)
    if match is None:
        raise InvalidRegistryHost(
            f"{original!r} does not hold a valid IPv6 address.", code="server_invalid"
        )
    try:
        address = ipaddress.IPv6Address(match.group(1))
    except ValueError:
        raise InvalidRegistryHost(
            f"{original!r} does not hold a valid IPv6 address.", code="server_invalid"
        ) from None
    # distribution's reference grammar allows only hex digits and colons inside brackets
    # (newer Pythons print IPv4-mapped addresses with dots: refuse rather than mis-spell).
    if "." in address.compressed or address.scope_id:
        raise InvalidRegistryHost(
            f"{original!r} does not hold a usable IPv6 address.", code="server_invalid"
        )
    return f"[{address.compressed}]"


def _canonical_name(text: str, original: str) -> str:
    if len(text) > MAX_HOST_LENGTH:
        raise InvalidRegistryHost(
            f"The registry host name is longer than {MAX_HOST_LENGTH} characters.",
            code="server_too_long",
        )
    if not text:
        raise InvalidRegistryHost(
            f"{original!r} has no host name: enter one such as ghcr.io.", code="server_invalid"
        )
    if not text.isascii():
        raise InvalidRegistryHost(
            f"The registry host {text!r} must be written in ASCII (use its xn-- form).",
            code="server_invalid",
        )
    labels = text.split(".")
    for label in labels:
        if not _LABEL_RE.match(label):
            raise InvalidRegistryHost(
                f"{text!r} is not a valid host name: use letters, digits, '-' and '.', "
                "e.g. registry.example.com.",
                code="server_invalid",
            )
    return text


def is_docker_hub(host: str) -> bool:
    """Whether ``host`` (any accepted spelling) is Docker Hub."""
    return normalize_registry_host(host) == DOCKER_HUB


def host_name(host: str) -> str:
    """The canonical host name of ``host``, without its port.

    ``127.0.0.1:5000`` → ``127.0.0.1``, ``[0::1]:5000`` → ``[::1]``, ``LOCALHOST`` →
    ``localhost``. Names are compared as written: ``localhost`` is not ``127.0.0.1``.
    """
    canonical = normalize_registry_host(host)
    if canonical.startswith("["):
        return canonical.split("]", 1)[0] + "]"
    return canonical.split(":", 1)[0]


def is_loopback(host: str) -> bool:
    """Whether ``host`` is ``localhost``, in ``127.0.0.0/8`` or ``[::1]`` (port ignored)."""
    name = host_name(host)
    if name.startswith("["):
        return name == "[::1]"
    if name == "localhost":
        return True
    try:
        return ipaddress.IPv4Address(name) in ipaddress.IPv4Network("127.0.0.0/8")
    except ValueError:
        return False


def api_host(host: str) -> str:
    """The host the registry API answers on: ``docker.io`` → ``registry-1.docker.io``."""
    canonical = normalize_registry_host(host)
    return DOCKER_HUB_API_HOST if canonical == DOCKER_HUB else canonical


def api_base_url(host: str) -> str:
    """The base URL of the registry API (no trailing slash), e.g. ``https://ghcr.io``.

    HTTPS, except plain HTTP for loopback hosts (``localhost``, ``127.0.0.0/8``, ``[::1]``):
    these are the registries dockerd talks to without TLS by default (its built-in insecure
    range is ``127.0.0.0/8``, which ``localhost`` resolves into), so a check made here uses
    the same transport the engine's pull will. Note: dockerd's default does *not* include
    ``::1``; an IPv6 loopback registry needs ``--insecure-registry`` for the engine.
    Every other registry is HTTPS only: a credential is never sent in clear over a network.
    """
    scheme = "http" if is_loopback(host) else "https"
    return f"{scheme}://{api_host(host)}"


def docker_config_key(host: str) -> str:
    """The ``auths`` key under which docker, the engine and kubelet look up ``host``.

    Docker Hub → ``https://index.docker.io/v1/`` (the only Hub key the engine reads in
    ``X-Registry-Config``), every other registry → its canonical host.
    """
    canonical = normalize_registry_host(host)
    return DOCKER_HUB_CONFIG_KEY if canonical == DOCKER_HUB else canonical


def server_address(host: str) -> str:
    """The ``serveraddress`` to send in ``X-Registry-Auth`` for ``host``: a host, no scheme.

    Docker Hub → ``index.docker.io``: the containerd image store drops credentials whose
    ``serveraddress`` is not Hub's by its rules, and only ``index.docker.io`` is mapped to
    Hub's API host by every engine version (``docker.io`` only by recent ones).
    """
    canonical = normalize_registry_host(host)
    return DOCKER_HUB_SERVER_ADDRESS if canonical == DOCKER_HUB else canonical


def hosts_match(credential_host: str, image_host: str) -> bool:
    """Whether a credential made for ``credential_host`` may be sent for ``image_host``.

    Both sides are normalised and compared exactly (ports included). An invalid host on
    either side never matches: sending a secret is fail-closed.
    """
    try:
        return normalize_registry_host(credential_host) == normalize_registry_host(image_host)
    except InvalidRegistryHost:
        return False
