"""Registry presets for the Add form: where the server is, and what to paste as username and
password for each well-known registry."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    """Defaults and hints the Add form shows for one kind of registry."""

    key: str
    label: str
    server: str
    username: str  # prefilled value ("" = the user types it)
    username_help: str
    secret_label: str
    secret_help: str
    multiline_secret: bool = False


PRESETS: tuple[Preset, ...] = (
    Preset(
        "dockerhub", "Docker Hub", "docker.io", "", "Your Docker ID.",
        "Access token", "A personal access token with read access (Account settings → "
        "Personal access tokens). Your account password works too, but a token can be revoked.",
    ),
    Preset(
        "ghcr", "GitHub Container Registry", "ghcr.io", "", "Your GitHub user name.",
        "Personal access token", "A classic token with the read:packages scope.",
    ),
    Preset(
        "gar", "Google Artifact Registry / GCR", "europe-docker.pkg.dev", "_json_key",
        "Keep _json_key to log in with a service account key (or oauth2accesstoken with a "
        "short-lived access token). Set the server to your repository's host, e.g. "
        "us-docker.pkg.dev or gcr.io.",
        "Service account JSON key", "Paste the whole JSON key file; its newlines are kept.",
        multiline_secret=True,
    ),
    Preset(
        "gitlab", "GitLab Container Registry", "registry.gitlab.com", "",
        "The deploy token's user name, or your GitLab user name.",
        "Deploy token or access token", "Needs the read_registry scope.",
    ),
    Preset(
        "quay", "Quay", "quay.io", "", "A robot account, like myorg+deployer.",
        "Robot token", "The robot account's token.",
    ),
    Preset(
        "ecr", "Amazon ECR", "123456789012.dkr.ecr.eu-west-1.amazonaws.com", "AWS",
        "Always AWS.", "Authorization token",
        "Paste the output of 'aws ecr get-login-password'. It expires after 12 hours; "
        "Moorage cannot renew it yet, so replace it before it runs out.",
    ),
    Preset(
        "generic", "Other registry", "", "", "The user name the registry expects.",
        "Password or token", "",
    ),
)

BY_KEY = {p.key: p for p in PRESETS}
