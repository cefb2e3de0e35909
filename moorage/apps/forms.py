"""The App page form. It shapes input; rules live in the services."""

from __future__ import annotations

import shlex
from typing import Any

from django import forms

from moorage.apps.choices import RuntimePull, SourceMode
from moorage.apps.services import REPLICAS_MAX, BuildInput, EnvInput
from moorage.credentials.models import Credential
from moorage.protocol.readiness import READY_TIMEOUT_MAX, READY_TIMEOUT_MIN

CREDENTIAL_PREFIX = "credential:"


def multi_line(value: str) -> bool:
    """Whether a value cannot be one line of a KEY=VALUE textarea (browsers send every line
    break as CRLF, so a lone CR does not survive either)."""
    return "\n" in value or "\r" in value


def _lines(text: str) -> list[str]:
    """The lines of a textarea as the browser sent them (CRLF). Only line feeds split:
    ``str.splitlines`` would also cut a value at U+2028, a form feed or the like."""
    return [line.removesuffix("\r") for line in text.split("\n")]


def pull_choices(
    credentials: list[Credential], default: Credential | None
) -> list[tuple[str, str]]:
    """The options of "Container registry for runtime pull", in the contract's order."""
    label = f"Use account default ({default.name})" if default else \
        "Use account default (none set: anonymous)"
    return (
        [(RuntimePull.ACCOUNT_DEFAULT.value, label),
         (RuntimePull.NONE.value, "None (public image)")]
        + [(f"{CREDENTIAL_PREFIX}{c.pk}", c.name) for c in credentials]
    )


def pull_value(runtime_pull: str, credential_id: int | None) -> str:
    if runtime_pull == RuntimePull.CREDENTIAL and credential_id is not None:
        return f"{CREDENTIAL_PREFIX}{credential_id}"
    return runtime_pull


def split_pull(value: str) -> tuple[str, int | None]:
    """``account_default`` / ``none`` / ``credential:ID`` → (runtime_pull, credential id)."""
    if value.startswith(CREDENTIAL_PREFIX):
        raw = value.removeprefix(CREDENTIAL_PREFIX)
        return RuntimePull.CREDENTIAL, int(raw) if raw.isdigit() else -1
    return value, None


class AppForm(forms.Form):
    name = forms.CharField(max_length=63)
    source = forms.ChoiceField(choices=SourceMode.choices, initial=SourceMode.IMAGE,
                               widget=forms.RadioSelect)
    image = forms.CharField(max_length=512, required=False)
    pull = forms.ChoiceField(label="Container registry for runtime pull")
    port = forms.IntegerField(required=False, min_value=1, max_value=65535)
    replicas = forms.IntegerField(
        required=False, min_value=1, max_value=REPLICAS_MAX,
        help_text="A swarm region spreads them over its nodes (with a port, at most one per "
                  "node); a docker region runs one.")
    ready_timeout = forms.IntegerField(
        required=False, min_value=READY_TIMEOUT_MIN, max_value=READY_TIMEOUT_MAX,
        label="Readiness timeout (seconds)",
        help_text="How long a new version may take to run and accept connections on its port. "
                  "A version that is not ready by then (or exits) is removed and the previous "
                  "one serves again.")
    # No length limit of its own: the service bounds the arguments, and a command saved
    # through the API must survive a save of the page unchanged.
    command = forms.CharField(
        required=False, help_text="Leave empty to run the image's own command. Quoted as in a "
                                  "shell: sh -c 'echo hi; exec httpd -f'.")
    # strip=False: a value's trailing spaces are part of it.
    env = forms.CharField(required=False, strip=False,
                          widget=forms.Textarea(attrs={"rows": 4}),
                          help_text="One KEY=VALUE per line; a KEY alone keeps its current "
                                    "value (a value on several lines shows so: set it with "
                                    "the API or the CLI).")
    secret_env = forms.CharField(
        required=False, strip=False,
        widget=forms.Textarea(attrs={"rows": 3, "autocomplete": "off"}),
        help_text="One KEY=VALUE per line; a KEY alone keeps its current value. Never shown "
                  "again.")
    regions = forms.MultipleChoiceField(required=False, widget=forms.CheckboxSelectMultiple)
    git_url = forms.CharField(max_length=2048, required=False, label="Repository URL")
    git_ref = forms.CharField(max_length=255, required=False, label="Branch, tag or commit")
    git_credential = forms.TypedChoiceField(required=False, coerce=int, empty_value=None,
                                            label="Git credential")
    dockerfile = forms.CharField(max_length=255, required=False, label="Dockerfile path")
    context = forms.CharField(max_length=255, required=False, label="Context directory")
    build_args = forms.CharField(required=False, strip=False,
                                 widget=forms.Textarea(attrs={"rows": 2}),
                                 label="Build arguments",
                                 help_text="One NAME=value per line; a NAME alone keeps its "
                                           "current value.")
    build_pull = forms.TypedChoiceField(required=False, coerce=int, empty_value=None,
                                        label="Container registry for build pull")
    source_upload = forms.BooleanField(
        required=False, label="Upload the source instead",
        help_text="Leave the repository empty and upload a .tar.gz or .zip of the directory on "
                  "the app's page once it is created.")

    def __init__(self, *args: Any, pull_options: list[tuple[str, str]],
                 region_options: list[tuple[str, str]],
                 registry_options: list[tuple[int, str]], git_options: list[tuple[int, str]],
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["pull"].choices = pull_options  # type: ignore[attr-defined]
        self.fields["regions"].choices = region_options  # type: ignore[attr-defined]
        # Empty means no authentication. There is no "account default" here: builds never
        # fall back to it (I5).
        build_pull = self.fields["build_pull"]
        build_pull.choices = [("", ""), *registry_options]  # type: ignore[attr-defined]
        git_credential = self.fields["git_credential"]
        git_credential.choices = [  # type: ignore[attr-defined]
            ("", "None (public repository)"), *git_options]

    def build_input(self, current_args: dict[str, str] | None = None) -> BuildInput:
        """The build settings; a build argument given by its name alone keeps its value in
        ``current_args`` (how the page shows one on several lines), else is empty."""
        data = self.cleaned_data
        args: dict[str, str] = {}
        for line in _lines(data.get("build_args") or ""):
            if line.strip():
                name, sep, value = line.partition("=")
                name = name.strip()
                args[name] = value if sep else (current_args or {}).get(name, "")
        return BuildInput(
            git_url=data.get("git_url") or "", git_ref=data.get("git_ref") or "main",
            git_credential_id=data.get("git_credential"),
            dockerfile=data.get("dockerfile") or "Dockerfile", context=data.get("context") or ".",
            build_args=args, build_pull_credential_id=data.get("build_pull"),
        )

    def clean_command(self) -> list[str] | None:
        text = self.cleaned_data.get("command") or ""
        if not text.strip():
            return None
        try:
            return shlex.split(text)
        except ValueError as exc:
            raise forms.ValidationError(
                f"The command cannot be split into arguments: {exc}. Quote it as a shell "
                "would, like sh -c 'echo hi; exec httpd -f'.") from None

    def env_inputs(self) -> list[EnvInput]:
        """Plain and secret variables as the service takes them."""
        result: list[EnvInput] = []
        for text, secret in ((self.cleaned_data.get("env") or "", False),
                             (self.cleaned_data.get("secret_env") or "", True)):
            for line in _lines(text):
                if not line.strip():
                    continue
                name, sep, value = line.partition("=")
                result.append(EnvInput(name=name.strip(), value=value if sep else None,
                                       secret=secret))
        return result
