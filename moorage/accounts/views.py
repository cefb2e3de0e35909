"""Pages of the accounts domain: login, account switcher, members, API tokens, password."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import login, logout, update_session_auth_hash
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from moorage.accounts import selectors, services
from moorage.accounts.auth import client_address
from moorage.accounts.forms import (
    AccountForm,
    InvitationForm,
    LoginForm,
    PasswordChangeForm,
    RoleForm,
    TokenCreateForm,
    add_application_error,
)
from moorage.accounts.middleware import SESSION_ACCOUNT_KEY, current_membership
from moorage.errors import ApplicationError


def login_view(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("home")
    form = LoginForm(request.POST or None)
    status = 200
    retry_after: object = None
    if request.method == "POST" and form.is_valid():
        try:
            user = services.login_authenticate(
                email=form.cleaned_data["email"],
                password=form.cleaned_data["password"],
                address=client_address(request),
            )
        except ApplicationError as exc:
            add_application_error(form, exc)
            status = exc.status
            retry_after = exc.detail.get("retry_after")
        else:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            target = request.GET.get("next", "")
            if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
                target = ""
            return redirect(target or "home")
    response = render(request, "accounts/login.html", {"form": form}, status=status)
    if status == 429 and retry_after is not None:
        response["Retry-After"] = str(retry_after)
    return response


@require_POST
def logout_view(request: HttpRequest) -> HttpResponse:
    logout(request)
    return redirect("login")


@login_required
@require_POST
def switch_account(request: HttpRequest) -> HttpResponse:
    membership = selectors.membership_by_slug(
        user=request.user,  # type: ignore[arg-type]
        slug=request.POST.get("account", ""),
    )
    request.session[SESSION_ACCOUNT_KEY] = membership.account_id
    messages.success(request, f"Now working in {membership.account.name}.")
    return redirect("home")


def _account_page(
    request: HttpRequest,
    *,
    invitation_form: InvitationForm | None = None,
    token_form: TokenCreateForm | None = None,
    account_form: AccountForm | None = None,
    status: int = 200,
    **extra: object,
) -> HttpResponse:
    membership = current_membership(request)
    context = {
        "members": selectors.account_members(account=membership.account),
        "tokens": selectors.api_tokens_of(user=membership.user, account=membership.account),
        "invitations": selectors.account_invitations(account=membership.account),
        "invitation_form": invitation_form or InvitationForm(),
        "token_form": token_form or TokenCreateForm(),
        "account_form": account_form or AccountForm(initial={"name": membership.account.name}),
        "role_choices": RoleForm.base_fields["role"].choices,  # type: ignore[attr-defined]
        **extra,
    }
    return render(request, "accounts/account.html", context, status=status)


@login_required
def account_view(request: HttpRequest) -> HttpResponse:
    return _account_page(request)


@login_required
@require_POST
def account_rename(request: HttpRequest) -> HttpResponse:
    membership = current_membership(request)
    form = AccountForm(request.POST)
    if form.is_valid():
        try:
            services.account_rename(
                actor=membership.user, membership=membership, name=form.cleaned_data["name"]
            )
        except ApplicationError as exc:
            if exc.status == 403:
                raise  # a role that may not rename gets the 403 page, not a form error
            add_application_error(form, exc)
        else:
            messages.success(request, "Account renamed.")
            return redirect("account")
    return _account_page(request, account_form=form, status=422)


@login_required
@require_POST
def invitation_create(request: HttpRequest) -> HttpResponse:
    membership = current_membership(request)
    form = InvitationForm(request.POST)
    if form.is_valid():
        try:
            invitation = services.invitation_create(
                actor=membership.user,
                membership=membership,
                email=form.cleaned_data["email"],
                role=form.cleaned_data["role"],
            )
        except ApplicationError as exc:
            if exc.status == 403:
                raise
            add_application_error(form, exc)
        else:
            # The same words whether or not someone already uses this e-mail here.
            messages.success(
                request,
                f"{invitation.email} is invited as {invitation.get_role_display()}. They "
                "accept on their Invitations page after logging in, by "
                f"{invitation.expires_at:%Y-%m-%d}.",
            )
            return redirect("account")
    return _account_page(request, invitation_form=form, status=422)


@login_required
@require_POST
def invitation_revoke(request: HttpRequest, invitation_id: int) -> HttpResponse:
    membership = current_membership(request)
    invitation = services.invitation_revoke(
        actor=membership.user, membership=membership, invitation_id=invitation_id
    )
    messages.success(request, f"The invitation of {invitation.email} is revoked.")
    return redirect("account")


@login_required
def my_invitations(request: HttpRequest) -> HttpResponse:
    invitations = selectors.invitations_for_user(user=request.user)  # type: ignore[arg-type]
    return render(request, "accounts/invitations.html", {"invitations": invitations})


@login_required
@require_POST
def my_invitation_accept(request: HttpRequest, invitation_id: int) -> HttpResponse:
    joined = services.invitation_accept(
        actor=request.user, invitation_id=invitation_id  # type: ignore[arg-type]
    )
    request.session[SESSION_ACCOUNT_KEY] = joined.account_id
    messages.success(request, f"You joined {joined.account.name} as {joined.get_role_display()}.")
    return redirect("home")


@login_required
@require_POST
def my_invitation_decline(request: HttpRequest, invitation_id: int) -> HttpResponse:
    services.invitation_decline(
        actor=request.user, invitation_id=invitation_id  # type: ignore[arg-type]
    )
    messages.success(request, "Invitation declined.")
    return redirect("invitations")


@login_required
@require_POST
def member_role(request: HttpRequest, member_id: int) -> HttpResponse:
    membership = current_membership(request)
    form = RoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose one of the listed roles.")
        return redirect("account")
    try:
        changed = services.member_change_role(
            actor=membership.user,
            membership=membership,
            member_id=member_id,
            role=form.cleaned_data["role"],
        )
    except ApplicationError as exc:
        if exc.status in (403, 404):
            raise
        messages.error(request, exc.message)
    else:
        messages.success(request, f"{changed.user.email} is now {changed.get_role_display()}.")
    return redirect("account")


@login_required
@require_POST
def member_remove(request: HttpRequest, member_id: int) -> HttpResponse:
    membership = current_membership(request)
    try:
        services.member_remove(actor=membership.user, membership=membership, member_id=member_id)
    except ApplicationError as exc:
        if exc.status in (403, 404):
            raise
        messages.error(request, exc.message)
    else:
        messages.success(request, "Member removed.")
    return redirect("account")


@login_required
@require_POST
def token_create(request: HttpRequest) -> HttpResponse:
    membership = current_membership(request)
    form = TokenCreateForm(request.POST)
    if form.is_valid():
        try:
            token, plaintext = services.api_token_create(
                actor=membership.user, membership=membership, name=form.cleaned_data["name"]
            )
        except ApplicationError as exc:
            if exc.status == 403:
                raise
            add_application_error(form, exc)
        else:
            return _account_page(request, new_token=plaintext, new_token_name=token.name)
    return _account_page(request, token_form=form, status=422)


@login_required
@require_POST
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    membership = current_membership(request)
    token = services.api_token_revoke(
        actor=membership.user, membership=membership, token_id=token_id
    )
    messages.success(request, f"Token {token.name!r} revoked.")
    return redirect("account")


@login_required
def password_change(request: HttpRequest) -> HttpResponse:
    form = PasswordChangeForm(request.POST or None)
    status = 200
    if request.method == "POST":
        status = 422
        if form.is_valid():
            try:
                services.password_change(
                    user=request.user,  # type: ignore[arg-type]
                    current_password=form.cleaned_data["current_password"],
                    new_password=form.cleaned_data["new_password"],
                )
            except ApplicationError as exc:
                add_application_error(form, exc)
            else:
                # Changing the password rotates the session hash; keep this session alive.
                update_session_auth_hash(request, request.user)  # type: ignore[arg-type]
                messages.success(request, "Password changed.")
                return redirect("home")
    return render(request, "accounts/password.html", {"form": form}, status=status)


@login_required
def account_new(request: HttpRequest) -> HttpResponse:
    form = AccountForm(request.POST or None)
    status = 200
    if request.method == "POST":
        status = 422
        if form.is_valid():
            try:
                account = services.account_create(
                    actor=request.user,  # type: ignore[arg-type]
                    name=form.cleaned_data["name"],
                )
            except ApplicationError as exc:
                add_application_error(form, exc)
            else:
                request.session[SESSION_ACCOUNT_KEY] = account.id
                messages.success(request, f"Account {account.name} created.")
                return redirect("home")
    return render(request, "accounts/account_new.html", {"form": form}, status=status)
