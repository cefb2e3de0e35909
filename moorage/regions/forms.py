"""Forms of the regions pages."""

from __future__ import annotations

from django import forms

from moorage.regions.choices import Runtime


class RegionForm(forms.Form):
    slug = forms.CharField(max_length=32, help_text="Like eu-1: lower-case letters, digits, -.")
    name = forms.CharField(max_length=100, required=False)
    runtime = forms.ChoiceField(choices=Runtime.choices, initial=Runtime.DOCKER)
    registry = forms.CharField(
        max_length=255, required=False, label="Region registry",
        help_text="Swarm regions: HOST[:PORT] where builds are pushed and every node pulls "
                  "them from. Without one, apps built from source are refused there.")
    registry_username = forms.CharField(max_length=255, required=False,
                                        label="Registry username")
    registry_password = forms.CharField(
        required=False, label="Registry password",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}))
    for_new_accounts = forms.BooleanField(required=False,
                                          label="Enable for accounts created from now on")
    for_all_accounts = forms.BooleanField(required=False,
                                          label="Enable for every existing account now")
