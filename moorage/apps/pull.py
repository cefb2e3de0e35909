"""Which credential a deploy pulls with (invariants I5 and I4), in one place.

The App page's preview, ``GET /api/v1/apps/{id}/pull-credential`` and ``deployment_create``
all call :func:`resolve_pull`, so what the page promises is what the deploy does.
"""

from __future__ import annotations

from dataclasses import dataclass

from moorage.accounts.models import Account
from moorage.apps.choices import RuntimePull
from moorage.credentials.models import Credential
from moorage.credentials.selectors import default_credential
from moorage.registry.reference import ImageReference, InvalidReference, parse_reference


@dataclass(frozen=True)
class PullPlan:
    """How an image will be pulled: with which credential (or none), and why.

    ``mismatch`` is set when the credential is for another registry than the image: the
    deploy is then refused (``credential_host_mismatch``) before any network call.
    """

    reference: ImageReference | None
    credential: Credential | None
    source: RuntimePull
    mismatch: bool = False
    invalid_image: str | None = None  # the parse error, when the image is not valid

    @property
    def anonymous(self) -> bool:
        return self.credential is None

    def describe(self) -> str:
        """The sentence the App page shows under the select."""
        if self.invalid_image:
            return f"The image is not valid: {self.invalid_image}"
        if self.reference is None:
            return "Enter an image to see how deploys will pull it."
        image = str(self.reference.familiar)
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
                f"({self.credential.server}).")


def resolve_pull(
    *, account: Account, image: str, runtime_pull: str, credential: Credential | None
) -> PullPlan:
    """Resolve the pull of ``image`` for an app of ``account`` configured as given.

    Runtime pull (I5): the explicit credential, else the account default when "Use account
    default" is chosen, else anonymous. The host machine's own docker login never enters.
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
    mismatch = bool(chosen and reference and chosen.server != reference.domain)
    return PullPlan(reference=reference, credential=chosen, source=source, mismatch=mismatch,
                    invalid_image=invalid)
