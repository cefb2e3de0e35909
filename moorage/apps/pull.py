"""Which credential a deploy pulls with (invariants I5 and I4), in one place.

The App page's preview, ``GET /api/v1/apps/{id}/pull-credential`` and ``deployment_create``
all call :func:`resolve_pull`, so what the page promises is what the deploy does.

"Use account default" follows docker's config.json and kubelet's imagePullSecrets: the
default is used when it is for the image's registry; for an image on another registry the
pull is anonymous (a public image just works), and the plan says which registry the default
is for. A credential chosen by name for another registry is refused instead: the user asked
for it explicitly, so silently pulling without it would hide a mistake.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.utils import timezone

from moorage.accounts.models import Account
from moorage.apps.choices import RuntimePull
from moorage.credentials.logins import token_of, token_summary
from moorage.credentials.models import Credential
from moorage.credentials.selectors import default_credential
from moorage.registry.hosts import hosts_match
from moorage.registry.reference import ImageReference, InvalidReference, parse_reference


@dataclass(frozen=True)
class PullPlan:
    """How an image will be pulled: with which credential (or none), and why.

    ``mismatch`` is set when an explicitly chosen credential is for another registry than
    the image: the deploy is then refused (``credential_host_mismatch``) before any network
    call. ``default_elsewhere`` is the account default when "Use account default" is chosen
    but the default is for another registry: the pull is then anonymous.
    """

    reference: ImageReference | None
    credential: Credential | None
    source: RuntimePull
    mismatch: bool = False
    invalid_image: str | None = None  # the parse error, when the image is not valid
    default_elsewhere: Credential | None = None

    @property
    def anonymous(self) -> bool:
        return self.credential is None

    @property
    def default_host(self) -> str | None:
        """The account default's registry, when the default was not used for this image."""
        return self.default_elsewhere.server if self.default_elsewhere else None

    def describe(self) -> str:
        """The sentence the App page shows under the select."""
        if self.invalid_image:
            return f"The image is not valid: {self.invalid_image}"
        if self.reference is None:
            return "Enter an image to see how deploys will pull it."
        image = str(self.reference.familiar)
        if self.default_elsewhere is not None:
            default = self.default_elsewhere
            return (f"Deploys will pull {image} anonymously: the account default "
                    f"{default.name!r} is for {default.server}, and {image} is on "
                    f"{self.reference.domain}. If the image is private, choose a credential "
                    f"for {self.reference.domain}.")
        if self.credential is None:
            if self.source is RuntimePull.ACCOUNT_DEFAULT:
                return (f"Deploys will pull {image} without a credential: the account has no "
                        "default registry credential.")
            return f"Deploys will pull {image} without a credential (public image)."
        if self.mismatch:
            return (f"{self.credential.name!r} is for {self.credential.server}, but {image} is "
                    f"on {self.reference.domain}: deploys will be refused. Choose a credential "
                    f"for {self.reference.domain}, or None for a public image.")
        return (f"Deploys will pull {image} with {self.credential.name!r} "
                f"({self.credential.server}){_login_note(self.credential)}.")


def _login_note(credential: Credential) -> str:
    """For an exchanged credential: ", ECR token, refreshed 10:42, valid until 22:42"."""
    token = token_of(credential)
    return "" if token is None else f", {token_summary(credential, token, timezone.now())}"


def resolve_pull(
    *, account: Account, image: str, runtime_pull: str, credential: Credential | None
) -> PullPlan:
    """Resolve the pull of ``image`` for an app of ``account`` configured as given.

    Runtime pull (I5): the explicit credential, else the account default when "Use account
    default" is chosen and the default is for the image's registry, else anonymous. A
    credential is only ever matched to the image's registry by
    :func:`moorage.registry.hosts_match` (I4). The host machine's own docker login never
    enters.
    """
    source = RuntimePull(runtime_pull)
    reference: ImageReference | None = None
    invalid: str | None = None
    if image.strip():
        try:
            reference = parse_reference(image.strip())
        except InvalidReference as exc:
            invalid = exc.message
    if source is RuntimePull.CREDENTIAL:
        chosen = credential
    elif source is RuntimePull.ACCOUNT_DEFAULT:
        chosen = default_credential(account=account)
    else:
        chosen = None
    matches = chosen is None or reference is None or hosts_match(chosen.server, reference.domain)
    if source is RuntimePull.ACCOUNT_DEFAULT and not matches:
        return PullPlan(reference=reference, credential=None, source=source,
                        invalid_image=invalid, default_elsewhere=chosen)
    return PullPlan(reference=reference, credential=chosen, source=source,
                    mismatch=not matches, invalid_image=invalid)
