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
    #: How the credential logs in (``moorage.registry.logins``): the form shows its fields.
    login_source: str = "static"


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
        "gar", "Google Artifact Registry / GCR", "europe-docker.pkg.dev", "",
        "Moorage logs in as oauth2accesstoken with short-lived access tokens it gets from the "
        "key and refreshes; regions never receive the key. Set the server to your "
        "repository's host, e.g. us-docker.pkg.dev or gcr.io.",
        "Service account JSON key", "Paste the whole JSON key file; its newlines are kept. "
        "The service account needs the Artifact Registry Reader role.",
        multiline_secret=True, login_source="gcp_service_account",
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
        "ecr", "Amazon ECR", "", "",
        "Moorage logs in as AWS with 12-hour tokens it gets from the access key and "
        "refreshes; regions never receive the key.", "Secret access key",
        "The secret access key of an IAM user allowed ecr:GetAuthorizationToken (and to pull: "
        "the AmazonEC2ContainerRegistryReadOnly policy).", login_source="aws_ecr",
    ),
    Preset(
        "acr", "Azure Container Registry", "myregistry.azurecr.io", "",
        "A service principal's application (client) id, or the registry's admin user.",
        "Service principal password",
        "Service principals log in with a plain username and password, so this is a static "
        "credential: Moorage does not exchange Azure AD tokens. Give it the AcrPull role.",
    ),
    Preset(
        "generic", "Other registry", "", "", "The user name the registry expects.",
        "Password or token", "",
    ),
)

BY_KEY = {p.key: p for p in PRESETS}
