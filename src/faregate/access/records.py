"""The in-memory shapes of keys, users and teams, as the hot path reads them.

A row of `keys`, `users` or `teams` (storage/tables.py) becomes one frozen record here; the
directory (access/directory.py) holds them by key hash and id, so authenticating a request is
one HMAC and one dict lookup — no database on the request path.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

BudgetPeriod = Literal["day", "week", "month"]
SubjectKind = Literal["key", "user", "team"]


@dataclass(frozen=True, slots=True)
class Limits:
    """What one key, user or team is allowed. None: no limit of this kind."""

    models: frozenset[str] | None = None  # model groups it may call
    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None
    budget_nusd: int | None = None  # nano-USD per `budget_period` (or for its lifetime)
    budget_period: BudgetPeriod | None = None
    conversation_max_requests: int | None = None
    conversation_max_cost_nusd: int | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Limits:
        models = row.get("models")
        return cls(
            models=frozenset(models) if models is not None else None,
            rpm=row.get("rpm"),
            tpm=row.get("tpm"),
            max_parallel=row.get("max_parallel"),
            budget_nusd=row.get("budget_nusd"),
            budget_period=row.get("budget_period"),
            conversation_max_requests=row.get("conversation_max_requests"),
            conversation_max_cost_nusd=row.get("conversation_max_cost_nusd"),
        )


@dataclass(frozen=True, slots=True)
class Subject:
    """A key, user or team: something limits and budgets are counted against."""

    kind: SubjectKind
    id: str
    limits: Limits = field(default_factory=Limits)
    scope: str = field(init=False, compare=False)  # counters' name: 'key:abc', 'user:alice', 'team:ml'

    def __post_init__(self) -> None:
        object.__setattr__(self, "scope", f"{self.kind}:{self.id}")


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str
    key_hash: str
    name: str | None = None
    user_id: str | None = None
    team_id: str | None = None
    limits: Limits = field(default_factory=Limits)
    expires_at: dt.datetime | None = None
    revoked: bool = False
    metadata: Mapping[str, Any] | None = None

    @property
    def subject(self) -> Subject:
        return Subject("key", self.id, self.limits)

    def expired(self, now: dt.datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> KeyRecord:
        expires = row.get("expires_at")
        if expires is not None and expires.tzinfo is None:  # SQLite returns naive UTC
            expires = expires.replace(tzinfo=dt.UTC)
        return cls(
            id=row["id"], key_hash=row["key_hash"], name=row.get("name"), user_id=row.get("user_id"),
            team_id=row.get("team_id"), limits=Limits.from_row(row), expires_at=expires,
            revoked=row.get("revoked_at") is not None, metadata=row.get("metadata"),
        )


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, as authenticate leaves it on the Call: never the secret itself.

    `subjects` are what limits and budgets apply to, tightest first is not implied — every one
    of them must admit the request (key, then its user, then its team, when they exist).
    """

    id: str  # "master", "anonymous" or a key id
    key: KeyRecord | None = None
    subjects: tuple[Subject, ...] = ()
    is_master: bool = False
    plan: AccessPlan = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "plan", AccessPlan.of(self.subjects))

    @property
    def user_id(self) -> str | None:
        return self.key.user_id if self.key else None

    @property
    def team_id(self) -> str | None:
        return self.key.team_id if self.key else None

    def may_call(self, model_group: str) -> bool:
        for s in self.subjects:
            models = s.limits.models
            if models is not None and model_group not in models:
                return False
        return True


@dataclass(frozen=True, slots=True)
class AccessPlan:
    """Which of a principal's subjects carry which limit, worked out once per principal (the
    directory caches principals), so admission per request touches only what applies."""

    rpm: tuple[Subject, ...] = ()
    tpm: tuple[Subject, ...] = ()
    parallel: tuple[Subject, ...] = ()
    spend: tuple[Subject, ...] = ()  # budgets, and the key itself (its spend is always kept)
    budgeted: bool = False  # some subject has a real budget (not only the key's spend counter)
    models_restricted: bool = False
    conversation_max_requests: int | None = None  # the tightest of the subjects'
    conversation_max_cost_nusd: int | None = None
    needs_tokens: bool = False  # a TPM limit or a budget needs the prompt estimated
    limited: bool = False  # some subject has an RPM, TPM or parallel limit

    @property
    def empty(self) -> bool:
        return not (self.rpm or self.tpm or self.parallel or self.spend or self.models_restricted
                    or self.conversation_max_requests or self.conversation_max_cost_nusd)

    @classmethod
    def of(cls, subjects: tuple[Subject, ...]) -> AccessPlan:
        lims = [s.limits for s in subjects]
        conv_req = [x.conversation_max_requests for x in lims if x.conversation_max_requests is not None]
        conv_cost = [x.conversation_max_cost_nusd for x in lims if x.conversation_max_cost_nusd is not None]
        budgeted = any(x.budget_nusd is not None for x in lims)
        return cls(
            rpm=tuple(s for s in subjects if s.limits.rpm),
            tpm=tuple(s for s in subjects if s.limits.tpm),
            parallel=tuple(s for s in subjects if s.limits.max_parallel),
            spend=tuple(s for s in subjects if s.limits.budget_nusd is not None or s.kind == "key"),
            budgeted=budgeted,
            models_restricted=any(x.models is not None for x in lims),
            conversation_max_requests=min(conv_req) if conv_req else None,
            conversation_max_cost_nusd=min(conv_cost) if conv_cost else None,
            needs_tokens=budgeted or bool(conv_cost) or any(x.tpm for x in lims),
            limited=any(x.rpm or x.tpm or x.max_parallel for x in lims),
        )


MASTER = Principal("master", is_master=True)
ANONYMOUS = Principal("anonymous")
