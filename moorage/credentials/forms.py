"""Forms of the credential pages. They shape input; the rules live in the services."""

from __future__ import annotations

from django import forms

from moorage.credentials import validation
from moorage.credentials.choices import CredentialType, LoginSource
from moorage.credentials.presets import PRESETS


class CredentialForm(forms.Form):
    """Add a credential. The secret widget never renders a value back."""

    type = forms.ChoiceField(
        choices=CredentialType.choices, initial=CredentialType.CONTAINER_REGISTRY
    )
    preset = forms.ChoiceField(
        choices=[(p.key, p.label) for p in PRESETS], required=False, initial="generic"
    )
    login_source = forms.ChoiceField(choices=LoginSource.choices, required=False,
                                     initial=LoginSource.STATIC)
    name = forms.CharField(max_length=validation.NAME_MAX,
                           help_text="Shown in the App page selects.")
    # Which fields a login source needs is the services' rule (an ECR server may be left
    # out, exchanged sources have no username): the form only shapes the input.
    server = forms.CharField(max_length=validation.SERVER_MAX, required=False)
    username = forms.CharField(max_length=validation.USERNAME_MAX, required=False)
    email = forms.CharField(max_length=validation.EMAIL_MAX, required=False)
    aws_access_key_id = forms.CharField(max_length=128, required=False)
    aws_region = forms.CharField(max_length=32, required=False)
    secret = forms.CharField(
        max_length=validation.SECRET_MAX, strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )


class CredentialEditForm(forms.Form):
    name = forms.CharField(max_length=validation.NAME_MAX)
    server = forms.CharField(max_length=validation.SERVER_MAX, required=False)
    username = forms.CharField(max_length=validation.USERNAME_MAX, required=False)
    email = forms.CharField(max_length=validation.EMAIL_MAX, required=False)
    aws_access_key_id = forms.CharField(max_length=128, required=False)
    aws_region = forms.CharField(max_length=32, required=False)
    secret = forms.CharField(
        max_length=validation.SECRET_MAX, strip=False, required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Leave empty to keep the current one.",
    )


class SecretForm(forms.Form):
    secret = forms.CharField(
        max_length=validation.SECRET_MAX, strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )


class TestForm(forms.Form):
    __test__ = False  # not a pytest test class, despite the name

    image = forms.CharField(max_length=512, required=False)
