"""Image references (``ghcr.io/team/app:1.2``), parsed the way docker does.

Follows distribution/reference's ``ParseNormalizedNamed``, which is what the engine applies to
the image name a user types, so that Moorage derives the same registry host (to choose and
check the credential, I4) and the same repository path (to check access) the pull will use:

* ``domain``: the first ``/``-separated component when it contains ``.`` or ``:``, is
  ``localhost`` or has an uppercase letter; otherwise ``docker.io``. ``index.docker.io`` is
  ``docker.io``; a one-component Docker Hub name gets ``library/``.
* path components: ``[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`` (distribution writes the dash
  separator ``[-]*``, which matches the same names; ``[-]+`` avoids a backtracking blow-up).
* tag ``[\\w][\\w.-]{0,127}``; digest ``ALGO:HEX`` with a known algorithm (``sha256`` = 64
  lowercase hex digits); ``name:tag@digest`` keeps both and pulls by digest.

Three deliberate differences from distribution, all stricter or canonical: the domain is
lower-cased (host names are case-insensitive, and credentials are matched on the canonical
host); a first component that is a domain *only* because of uppercase letters (``MyUser/app``)
is refused with a message saying how to write it (it is nearly always a mistyped Hub name, and
a lower-cased single word would read back as a Hub path); and the 255-character limit applies
to the *canonical* name (``docker.io/library/x``), so that every accepted reference can be
written out in full and parsed again.
"""

from __future__ import annotations

import dataclasses
import re

from moorage.registry.hosts import (
    DOCKER_HUB,
    InvalidRegistryHost,
    api_host,
    normalize_registry_host,
)

__all__ = [
    "DEFAULT_TAG",
    "MAX_NAME_LENGTH",
    "ImageReference",
    "InvalidReference",
    "parse_reference",
]

DEFAULT_TAG = "latest"
#: distribution's ``NameTotalLengthMax``.
MAX_NAME_LENGTH = 255

_LEGACY_HUB = "index.docker.io"
_OFFICIAL_PREFIX = "library/"

_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_PATH_COMPONENT_RE = re.compile(rf"^{_PATH_COMPONENT}$")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE = re.compile(
    rf"^(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?$"
)
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$", re.ASCII)
_DIGEST_RE = re.compile(r"^([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$")
_ANCHORED_HEX64_RE = re.compile(r"^[a-f0-9]{64}$")
#: Algorithms go-digest knows, with their hex lengths.
_DIGEST_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}


class InvalidReference(ValueError):
    """An image reference that docker would refuse; the message says what to change."""

    def __init__(self, message: str, *, reference: str) -> None:
        """Keep the message and the offending text (a reference holds no secret)."""
        super().__init__(message)
        self.message = message
        self.reference = reference


@dataclasses.dataclass(frozen=True)
class ImageReference:
    """A parsed image reference.

    ``tag`` is ``"latest"`` only when neither a tag nor a digest was written
    (``tag_explicit`` is then False); with only a digest, ``tag`` is None.
    """

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None
    #: Provenance, not identity: ``busybox`` and ``busybox:latest`` are the same image, so
    #: the flag is left out of ``==`` and ``hash``.
    tag_explicit: bool = dataclasses.field(default=False, compare=False)

    @property
    def name(self) -> str:
        """``domain/path``: the full repository name, e.g. ``docker.io/library/busybox``."""
        return f"{self.domain}/{self.path}"

    @property
    def pull_ref(self) -> str:
        """The digest if there is one, else the tag: never empty.

        Why never empty: ``POST /images/create`` with an empty ``tag`` pulls *every* tag.
        """
        if self.digest:
            return self.digest
        return self.tag or DEFAULT_TAG

    @property
    def api_host(self) -> str:
        """Where the registry API answers: ``registry-1.docker.io`` for Docker Hub."""
        return api_host(self.domain)

    @property
    def registry_host(self) -> str:
        """The canonical registry host credentials are matched on (see ``hosts``).

        Equals ``domain`` except for ``registry-1.docker.io``, which is Docker Hub.
        """
        return normalize_registry_host(self.domain)

    @property
    def familiar(self) -> str:
        """The short form people write: ``busybox:latest``, ``user/app``, ``ghcr.io/x/y:1``."""
        name = self.path
        if self.domain == DOCKER_HUB:
            if name.startswith(_OFFICIAL_PREFIX) and name.count("/") == 1:
                name = name[len(_OFFICIAL_PREFIX) :]
            first, slash, _ = name.partition("/")
            if slash and ("." in first or first == "localhost"):
                # "docker.io/my.org/app" shortened to "my.org/app" would name the host my.org
                # (distribution's FamiliarString has this trap): keep the domain.
                name = self.name
        else:
            name = self.name
        return name + self._suffix()

    def with_tag(self, tag: str) -> ImageReference:
        """The same repository with another tag and no digest."""
        if not _TAG_RE.match(tag):
            raise InvalidReference(f"{tag!r} is not a valid tag.", reference=tag)
        return dataclasses.replace(self, tag=tag, digest=None, tag_explicit=True)

    def _suffix(self) -> str:
        suffix = ""
        if self.tag is not None and (self.tag_explicit or self.digest is None):
            suffix += f":{self.tag}"
        if self.digest is not None:
            suffix += f"@{self.digest}"
        return suffix

    def __str__(self) -> str:
        """The full form, ``docker.io/library/busybox:latest``: unambiguous for every tool."""
        return self.name + self._suffix()


def parse_reference(text: str) -> ImageReference:
    """Parse an image reference as docker does; raise :class:`InvalidReference` if invalid."""
    if not isinstance(text, str):
        raise InvalidReference("An image reference must be text.", reference=repr(text))
    original = text
    if not text:
        raise InvalidReference("Enter an image name, e.g. ghcr.io/team/app:1.0.", reference=text)
    if text != text.strip() or any(ch.isspace() for ch in text):
        raise InvalidReference("An image name cannot contain spaces.", reference=original)
    if "://" in text:
        raise InvalidReference(
            "An image name has no scheme: write ghcr.io/team/app, not https://ghcr.io/team/app.",
            reference=original,
        )
    if _ANCHORED_HEX64_RE.match(text):
        raise InvalidReference(
            "A 64-character hexadecimal string is an image ID, not a repository name.",
            reference=original,
        )

    digest: str | None = None
    if "@" in text:
        text, _, digest = text.partition("@")
        _check_digest(digest, original)

    tag: str | None = None
    last_slash = text.rfind("/")
    colon = text.rfind(":")
    if colon > last_slash:
        text, tag = text[:colon], text[colon + 1 :]
        if not _TAG_RE.match(tag):
            raise InvalidReference(
                f"{tag!r} is not a valid tag: a tag is 1 to 128 letters, digits, '_', '.' or "
                "'-', and cannot start with '.' or '-'.",
                reference=original,
            )
    if not text:
        raise InvalidReference("The image name is missing its repository.", reference=original)

    domain, path = _split_domain(text, original)
    for component in path.split("/"):
        _check_component(component, original)
    name = f"{domain}/{path}"
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidReference(
            f"The repository name {name!r} is longer than {MAX_NAME_LENGTH} characters.",
            reference=original,
        )
    tag_explicit = tag is not None
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return ImageReference(
        domain=domain, path=path, tag=tag, digest=digest, tag_explicit=tag_explicit
    )


def _split_domain(name: str, original: str) -> tuple[str, str]:
    """distribution's ``splitDockerDomain``, plus host validation and lower-casing."""
    first, slash, remainder = name.partition("/")
    is_domain = bool(slash) and (
        "." in first or ":" in first or first == "localhost" or first.lower() != first
    )
    if not is_domain:
        domain, remainder = DOCKER_HUB, name
    elif "." not in first and ":" not in first and first != "localhost":
        # distribution takes an uppercase first component as a host name ("MyUser/app" means
        # the host "MyUser"): nearly always a mistyped Docker Hub user, and a host that could
        # not be written back lower-cased. Refused, saying both readings.
        raise InvalidReference(
            f"Uppercase letters are not allowed in a repository name: write "
            f"{name.lower()!r}. (With uppercase letters, {first!r} would be read as a registry "
            "host; a registry host needs a '.' or a port, e.g. registry.local:5000.)",
            reference=original,
        )
    else:
        if not _DOMAIN_RE.match(first):
            raise InvalidReference(
                f"{first!r} is not a valid registry host in an image name.", reference=original
            )
        try:
            # Canonical spelling (case, IPv6, port zeros), but registry-1.docker.io stays
            # itself: distribution does not fold it, and the engine treats it as its own host.
            normalized = normalize_registry_host(first)
        except InvalidRegistryHost as exc:
            raise InvalidReference(
                f"{first!r} is not a valid registry host in an image name: {exc.message}",
                reference=original,
            ) from None
        domain = first.lower() if first.lower() == "registry-1.docker.io" else normalized
        if first.lower() == _LEGACY_HUB:
            domain = DOCKER_HUB
    if not remainder:
        raise InvalidReference("The image name is missing its repository.", reference=original)
    if remainder.lower() != remainder:
        raise InvalidReference(
            "Uppercase letters are not allowed in a repository name: write "
            f"{remainder.lower()!r} instead of {remainder!r}.",
            reference=original,
        )
    if domain == DOCKER_HUB and "/" not in remainder:
        remainder = _OFFICIAL_PREFIX + remainder
    return domain, remainder


def _check_component(component: str, original: str) -> None:
    if not component:
        raise InvalidReference(
            "A repository name cannot contain an empty component ('//' or a '/' at either end).",
            reference=original,
        )
    if not _PATH_COMPONENT_RE.match(component):
        raise InvalidReference(
            f"{component!r} is not a valid repository name component: use lowercase letters "
            "and digits, separated by single '.', '_', '__' or dashes, starting and ending "
            "with a letter or digit.",
            reference=original,
        )


def _check_digest(digest: str, original: str) -> None:
    match = _DIGEST_RE.match(digest)
    if match is None:
        raise InvalidReference(
            f"{digest!r} is not a valid digest: write ALGORITHM:HEX, e.g. sha256: followed by "
            "64 hexadecimal digits.",
            reference=original,
        )
    algorithm, hex_part = match.groups()
    expected = _DIGEST_LENGTHS.get(algorithm)
    if expected is None:
        raise InvalidReference(
            f"The digest algorithm {algorithm!r} is not supported: use sha256.",
            reference=original,
        )
    if len(hex_part) != expected or not re.fullmatch(r"[a-f0-9]+", hex_part):
        raise InvalidReference(
            f"A {algorithm} digest is {expected} lowercase hexadecimal digits.",
            reference=original,
        )
