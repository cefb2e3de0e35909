"""Forms of the accounts pages. They only shape input; the rules live in the services."""

from __future__ import annotations

from django import forms

from moorage.accounts.choices import Role
from moorage.errors import ApplicationError


class LoginForm(forms.Form):
    email = forms.EmailField(max_length=254, widget=forms.EmailInput(attrs={"autofocus": True}))
    password = forms.CharField(max_length=512, strip=False, widget=forms.PasswordInput)


class PasswordChangeForm(forms.Form):
    current_password = forms.CharField(max_length=512, strip=False, widget=forms.PasswordInput)
    new_password = forms.CharField(max_length=512, strip=False, widget=forms.PasswordInput)
    confirm_password = forms.CharField(max_length=512, strip=False, widget=forms.PasswordInput)

    def clean(self) -> dict[str, object]:
        data = super().clean() or {}
        if data.get("new_password") != data.get("confirm_password"):
            self.add_error("confirm_password", "The two new passwords differ.")
        return data


class InvitationForm(forms.Form):
    email = forms.EmailField(max_length=254)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)


class TokenCreateForm(forms.Form):
    name = forms.CharField(max_length=100)


class AccountForm(forms.Form):
    name = forms.CharField(max_length=100)


def add_application_error(form: forms.Form, error: ApplicationError) -> None:
    """Show a service's error on the fields it names, or on the form as a whole."""
    fields = error.detail.get("fields") if isinstance(error.detail, dict) else None
    placed = False
    if isinstance(fields, dict):
        for field in fields:
            if field in form.fields:
                form.add_error(field, error.message)
                placed = True
    if not placed:
        form.add_error(None, error.message)
