"""API shapes of the accounts domain."""

from __future__ import annotations

from datetime import datetime

from ninja import Field, Schema

from moorage.accounts.choices import InvitationStatus, Role
from moorage.schemas import StrictIn


class UserOut(Schema):
    id: int
    email: str
    is_platform_staff: bool


class AccountOut(Schema):
    id: int
    name: str
    slug: str
    created_at: datetime


class MeOut(Schema):
    user: UserOut
    account: AccountOut
    role: Role
    permissions: list[str]


class AccountPatch(StrictIn):
    name: str = Field(..., max_length=100)


class MemberOut(Schema):
    id: int
    email: str
    role: Role
    created_at: datetime


class InvitationIn(StrictIn):
    email: str = Field(..., max_length=254)
    role: Role = Role.MEMBER


class InvitationOut(Schema):
    id: int
    email: str
    role: Role
    status: InvitationStatus
    invited_by: str | None = Field(None, description="E-mail of the admin who invited")
    created_at: datetime
    expires_at: datetime


class MyInvitationOut(Schema):
    id: int
    account: AccountOut
    role: Role
    invited_by: str | None
    expires_at: datetime


class JoinedOut(Schema):
    account: AccountOut
    role: Role


class MemberPatch(StrictIn):
    role: Role


class TokenOut(Schema):
    id: int
    name: str
    prefix: str
    owner: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenIn(StrictIn):
    name: str = Field(..., max_length=100)


class TokenCreatedOut(Schema):
    api_token: TokenOut
    token: str = Field(..., description="The token itself, shown only in this answer.")


class LoginTokenIn(StrictIn):
    email: str = Field(..., max_length=254)
    password: str = Field(..., max_length=512)
    account: str | None = Field(None, max_length=50, description="Account slug; default: first")
    name: str = Field(..., max_length=100, description="A name for the new token")
