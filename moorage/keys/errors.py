"""The error when a sealed value cannot be opened, in words an operator can act on."""

from __future__ import annotations

from moorage.errors import ApplicationError
from moorage.sealing import SealedDataError


class SecretUnavailable(ApplicationError):
    """A sealed secret cannot be opened: the key it was sealed with is not in the keyring, or
    the value does not belong where it is. ``detail["reason"]`` is the sealing error's code
    (``sealed_key_unknown``, ``sealed_tampered``, ``sealed_malformed``).

    A conflict with the installation's state, not a bug: the message says what to do.
    """

    status = 409
    default_code = "secret_unavailable"


def unavailable(what: str, exc: SealedDataError, **detail: object) -> SecretUnavailable:
    """The error for ``what`` (a credential's secret, an env value...) failing to open, with
    what the operator does about it."""
    if exc.code == "sealed_key_unknown":
        advice = ("Put that key back in the keyring (MOORAGE_KEYS or the key file; "
                  "'moorage keys list' shows what is missing), or set the value again.")
    else:
        advice = "Set the value again."
    return SecretUnavailable(f"{what[:1].upper()}{what[1:]} cannot be opened: {exc} {advice}",
                             detail={"reason": exc.code, **detail})
