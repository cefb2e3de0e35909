"""The App page's Logs panel: what it asks for."""

from __future__ import annotations

from django import forms

from moorage.protocol.logs import DEFAULT_TAIL, MAX_TAIL


class LogsForm(forms.Form):
    """Show logs (a tail, then maybe a follow), or the next window of a follow (``chain``
    with the cursor in ``since``; ``follow`` is then the panel's checkbox, so unticking it
    stops the chain)."""

    region = forms.CharField(required=False, max_length=32)
    tail = forms.IntegerField(required=False, min_value=0, max_value=MAX_TAIL,
                              label="Lines")
    follow = forms.BooleanField(required=False)
    since = forms.CharField(required=False, max_length=40)
    chain = forms.BooleanField(required=False)
    windows = forms.IntegerField(required=False, min_value=0)

    def clean_tail(self) -> int:
        tail = self.cleaned_data.get("tail")
        return DEFAULT_TAIL if tail is None else int(tail)
