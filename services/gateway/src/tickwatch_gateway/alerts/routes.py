"""``/alerts``: a user's price alerts, and the history of their triggers with delivery status.

The owner is always the authenticated principal; another user's alert answers 404 like a
missing one. Writes need the ``alerts:write`` scope for an API key, reads ``read``. Each rule an
alert breaks answers 422 naming the field; going over the cap on active alerts answers 409.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    Strict,
    ValidationError,
)
from pydantic.config import JsonDict, JsonValue
from tickwatch_common.events.alerts import AlertStatus, ChannelName, Condition, Frequency
from tickwatch_common.events.base import now_ms
from tickwatch_common.note_template import ALLOWED_TEXT, KnownPlaceholders
from tickwatch_common.ssrf import check_webhook_target, resolve_host
from tickwatch_common.text import CleanText

from tickwatch_gateway.accounts import require
from tickwatch_gateway.alerts.domain import (
    MAX_COOLDOWN_S,
    MAX_URL_LENGTH,
    MAX_WINDOW_S,
    AlertInvalid,
    AlertSpec,
    FieldError,
    apply_patch,
    check_rules,
    patch_needs_future_expiry,
)
from tickwatch_gateway.alerts.keys import ALERT_CACHE, ALERT_SETTINGS, ALERT_STORE
from tickwatch_gateway.alerts.store import ActiveCapReached, Alert, AlertEvent
from tickwatch_gateway.http.api_types import (
    PositiveDecimal,
    Timestamp,
    decimal_str,
    optional_decimal_str,
)
from tickwatch_gateway.http.openapi import Api
from tickwatch_gateway.http.problems import ProblemError, parse_body, parse_query
from tickwatch_gateway.market import SYMBOLS
from tickwatch_gateway.runtime.clock import iso_from_ms, ms_from_datetime

DecimalOut = Annotated[str, Field(examples=["67012.34"], description="exact decimal string")]
SymbolIn = Annotated[str, CleanText(min_length=1, max_length=41), Field(examples=["BTC-USDT"])]
Url = Annotated[
    str,
    CleanText(max_length=2048, pattern=r"[Hh][Tt][Tt][Pp][Ss]?://[^\s\x00-\x1f\x7f]+"),
    Field(description="an http or https URL whose host resolves to a public address"),
]
NOTE_DESCRIPTION = (
    "Free text (at most 500 characters, newlines allowed) added to the e-mail and the webhook."
    f" Placeholders are filled from the trigger: {ALLOWED_TEXT} (`{{{{ price }}}}` with spaces"
    " too; `time` is ISO-8601 UTC, `rsi` is empty until indicator alerts exist). Nothing else"
    " between `{{` and `}}` is evaluated: an unknown name or a `{{` that opens no placeholder"
    " is refused (422)."
)
Note = Annotated[
    str,
    CleanText(max_length=500, multiline=True),
    KnownPlaceholders(),
    Field(examples=["take profit at {{price}} ({{time}})"]),
]
Channels = Annotated[list[ChannelName], Field(min_length=1, max_length=2)]
UniqueChannels = Annotated[
    list[ChannelName], Field(min_length=1, max_length=2, json_schema_extra={"uniqueItems": True})
]
Percent = Annotated[
    str,
    CleanText(pattern=r"[0-9]{1,3}(\.[0-9]{1,18})?|1000"),
    Field(
        examples=["5"],
        description="a positive percentage, at most 1000, as an exact decimal string",
    ),
]
DeliveryState = Literal["pending", "sent", "retrying", "failed"]

ID_PARAM = {"id": "the alert's id"}


def _absent(**extra: Any) -> Any:
    """An optional field that may be left out but not set to ``null``."""

    def schema(s: dict[str, Any]) -> None:
        s.pop("default", None)
        s.update(extra)

    return Field(default=None, json_schema_extra=schema)


class _AlertCreateBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    symbol: SymbolIn
    frequency: Frequency = "once"
    cooldown_seconds: Annotated[int, Strict()] = Field(default=0, ge=0, le=MAX_COOLDOWN_S)
    expires_at: AwareDatetime | None = None
    channels: UniqueChannels = ["email"]
    webhook_url: Url | None = None
    note: Note | None = Field(default=None, description=NOTE_DESCRIPTION)


class PriceAlertCreate(_AlertCreateBase):
    """Fires on the price: at or past ``target_price`` (above/below), or crossing it."""

    condition: Literal["above", "below", "crosses_up", "crosses_down"]
    target_price: PositiveDecimal


class PctAlertCreate(_AlertCreateBase):
    """Fires when the price moves by ``pct`` percent or more within ``window_seconds``."""

    condition: Literal["pct_change"]
    pct: Percent
    window_seconds: Annotated[int, Strict()] = Field(ge=1, le=MAX_WINDOW_S)


class AlertCreate(RootModel[PriceAlertCreate | PctAlertCreate]):
    """``pct_change`` takes ``pct`` and ``window_seconds``; the others take ``target_price``."""

    root: Annotated[PriceAlertCreate | PctAlertCreate, Field(discriminator="condition")]


def _when_condition(conditions: list[JsonValue], **types: str) -> JsonDict:
    """If the body names one of ``conditions``, each field given must be of its JSON type."""
    return {
        "if": {"required": ["condition"], "properties": {"condition": {"enum": conditions}}},
        "then": {"properties": {name: {"type": kind} for name, kind in types.items()}},
    }


PATCH_KEEPS_ITS_CONDITIONS_FIELDS: JsonDict = {
    "allOf": [
        _when_condition(
            ["above", "below", "crosses_up", "crosses_down"],
            target_price="string",
            pct="null",
            window_seconds="null",
        ),
        _when_condition(
            ["pct_change"], target_price="null", pct="string", window_seconds="integer"
        ),
    ]
}
"""A PATCH naming the condition may not, in the same body, clear what that condition needs or
set what it refuses (whether the result is complete also depends on the stored alert)."""


class AlertPatch(BaseModel):
    """Only the fields given change; ``null`` clears an optional one. ``status`` pauses or
    (re-)activates the alert."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=PATCH_KEEPS_ITS_CONDITIONS_FIELDS)

    symbol: SymbolIn = _absent()
    condition: Condition = _absent()
    target_price: PositiveDecimal | None = None
    pct: Percent | None = None
    window_seconds: Annotated[int, Strict()] | None = Field(default=None, ge=1, le=MAX_WINDOW_S)
    frequency: Frequency = _absent()
    cooldown_seconds: Annotated[int, Strict(), Field(ge=0, le=MAX_COOLDOWN_S)] = _absent()
    expires_at: AwareDatetime | None = None
    channels: Channels = _absent(uniqueItems=True)
    webhook_url: Url | None = None
    note: Note | None = Field(default=None, description=NOTE_DESCRIPTION)
    status: Literal["active", "paused"] = _absent()


class AlertOut(BaseModel):
    id: str
    symbol: str
    condition: Condition
    target_price: DecimalOut | None
    pct: DecimalOut | None
    window_seconds: int | None
    frequency: Frequency
    cooldown_seconds: int
    expires_at: Timestamp | None
    channels: list[ChannelName]
    webhook_url: str | None
    note: str | None
    status: AlertStatus
    created_at: Timestamp
    updated_at: Timestamp
    triggered_at: Timestamp | None
    trigger_count: int


class AlertWithSecret(AlertOut):
    webhook_secret: str | None = Field(
        default=None,
        description=(
            "The webhook signing secret; answered once, when the alert gets a webhook. Each"
            " webhook POST carries `X-Tickwatch-Timestamp` (epoch seconds), `X-Tickwatch-Event-Id`"
            " and `X-Tickwatch-Signature: sha256=<hex>`, the HMAC-SHA256 under this secret of"
            " `<timestamp>.<raw body>`; compare in constant time and reject old timestamps."
        ),
    )


class AlertList(BaseModel):
    items: list[AlertOut]
    page: int
    per_page: int
    total: int


class AlertListQuery(BaseModel):
    page: int = Field(default=1, ge=1, le=100_000)
    per_page: int = Field(default=20, ge=1, le=100)
    status: AlertStatus | None = None
    symbol: Annotated[str, CleanText(max_length=41)] | None = None


class PageQuery(BaseModel):
    page: int = Field(default=1, ge=1, le=100_000)
    per_page: int = Field(default=50, ge=1, le=200)


class DeliveryOut(BaseModel):
    channel: ChannelName
    status: DeliveryState
    attempts: int
    detail: str
    updated_at: Timestamp | None


class AlertEventOut(BaseModel):
    event_id: str
    sequence: int
    symbol: str
    condition: Condition
    threshold: DecimalOut
    price: DecimalOut
    ts_event: Timestamp
    triggered_at: Timestamp
    deliveries: list[DeliveryOut]


class AlertEventList(BaseModel):
    items: list[AlertEventOut]
    page: int
    per_page: int
    total: int


# ---------------------------------------------------------------- conversions


def alert_json(alert: Alert, now_ms: int) -> dict[str, Any]:
    return {
        "id": alert.id,
        "symbol": alert.symbol,
        "condition": alert.condition,
        "target_price": optional_decimal_str(alert.target_price),
        "pct": optional_decimal_str(alert.pct),
        "window_seconds": alert.window_seconds,
        "frequency": alert.frequency,
        "cooldown_seconds": alert.cooldown_seconds,
        "expires_at": None if alert.expires_at_ms is None else iso_from_ms(alert.expires_at_ms),
        "channels": list(alert.channels),
        "webhook_url": alert.webhook_url,
        "note": alert.note,
        "status": alert.effective_status(now_ms),
        "created_at": iso_from_ms(alert.created_at_ms),
        "updated_at": iso_from_ms(alert.updated_at_ms),
        "triggered_at": None
        if alert.triggered_at_ms is None
        else iso_from_ms(alert.triggered_at_ms),
        "trigger_count": alert.trigger_count,
    }


def event_json(event: AlertEvent) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "sequence": event.sequence,
        "symbol": event.symbol,
        "condition": event.condition,
        "threshold": decimal_str(event.threshold),
        "price": decimal_str(event.price),
        "ts_event": iso_from_ms(event.ts_event_ms),
        "triggered_at": iso_from_ms(event.triggered_at_ms),
        "deliveries": [
            {
                "channel": d.channel,
                "status": d.status,
                "attempts": d.attempts,
                "detail": d.detail,
                "updated_at": None if d.ts_ms is None else iso_from_ms(d.ts_ms),
            }
            for d in event.deliveries
        ],
    }


class RawBody(RootModel[dict[str, Any]]):
    pass


CONDITIONS = frozenset({"above", "below", "crosses_up", "crosses_down", "pct_change"})


def alert_body_problem(exc: ValidationError) -> ProblemError:
    """The fields at fault, named as the client wrote them (without the union's tag)."""
    errors = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = [str(p) for p in err["loc"]]
        if loc and loc[0] in CONDITIONS:
            loc = loc[1:]
        if err["type"].startswith("union_tag"):
            loc = ["condition"]
        errors.append(FieldError(".".join(loc) or "body", err["msg"]))
    return invalid(errors)


def invalid(errors: list[FieldError]) -> ProblemError:
    """422 in the shape :func:`tickwatch_gateway.problems.validation_problem` gives."""
    listed = [{"field": e.field, "in": "body", "message": e.message} for e in errors]
    return ProblemError(422, f"invalid body: {errors[0].field}: {errors[0].message}", errors=listed)


def _ms(value: datetime | None) -> int | None:
    if value is None:
        return None
    ms = ms_from_datetime(value)
    if not 0 <= ms < 2**53:
        raise invalid([FieldError("expires_at", "out of range")])
    return ms


def _decimal(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def _now_ms() -> int:
    return int(now_ms())


async def _check_webhook(request: web.Request, url: str | None) -> None:
    if url is None:
        return
    allow = request.app[ALERT_SETTINGS].alerts_allow_private_webhooks
    problem = await check_webhook_target(
        url, allow_private=allow, resolve=resolve_host, max_length=MAX_URL_LENGTH
    )
    if problem:
        raise invalid([FieldError("webhook_url", problem)])


def _validated(request: web.Request, spec: AlertSpec, *, check_expiry: bool = True) -> AlertSpec:
    try:
        return check_rules(
            spec,
            known_symbol=request.app[SYMBOLS].resolve,
            now_ms=_now_ms(),
            check_expiry=check_expiry,
        )
    except AlertInvalid as exc:
        raise invalid(exc.errors) from None


def _alert_id(request: web.Request) -> str:
    return request.match_info["id"]


def _not_found() -> ProblemError:
    return ProblemError(404, "no such alert")


def _cap(exc: ActiveCapReached) -> ProblemError:
    return ProblemError(
        409,
        f"you have {exc.limit} active alerts, the most allowed; pause or delete one first",
        limit=exc.limit,
    )


# ---------------------------------------------------------------- handlers


async def create_alert(request: web.Request) -> web.Response:
    principal = require(request, scope="alerts:write")
    raw = (await parse_body(request, RawBody)).root
    try:
        body = AlertCreate.model_validate(raw).root
    except ValidationError as exc:
        raise alert_body_problem(exc) from None
    spec = AlertSpec(
        symbol=body.symbol,
        condition=body.condition,
        target_price=_decimal(getattr(body, "target_price", None)),
        pct=_decimal(getattr(body, "pct", None)),
        window_seconds=getattr(body, "window_seconds", None),
        frequency=body.frequency,
        cooldown_seconds=body.cooldown_seconds,
        expires_at_ms=_ms(body.expires_at),
        channels=tuple(body.channels),
        webhook_url=body.webhook_url,
        note=body.note,
    )
    spec = _validated(request, spec)
    await _check_webhook(request, spec.webhook_url)
    try:
        alert = await request.app[ALERT_STORE].create(principal.user_id, spec)
    except ActiveCapReached as exc:
        raise _cap(exc) from None
    await request.app[ALERT_CACHE].invalidate(principal.user_id)
    answer = {**alert_json(alert, _now_ms())}
    if alert.webhook_secret is not None:
        answer["webhook_secret"] = alert.webhook_secret
    return web.json_response(
        answer,
        status=201,
        headers={"Location": f"/api/v1/alerts/{alert.id}", "Cache-Control": "no-store"},
    )


async def list_alerts(request: web.Request) -> web.Response:
    principal = require(request, scope="read")
    query = parse_query(request, AlertListQuery)
    symbol = None
    if query.symbol is not None:
        symbol = request.app[SYMBOLS].resolve(query.symbol) or query.symbol.strip().upper()
    cache = request.app[ALERT_CACHE]
    key = cache.page_key(query.page, query.per_page, query.status, symbol)
    version = await cache.version(principal.user_id)
    headers = {"Cache-Control": "private, no-cache"}
    if version is not None:
        cached = await cache.get(principal.user_id, version, key)
        if cached is not None:
            return web.Response(body=cached, content_type="application/json", headers=headers)
    alerts, total = await request.app[ALERT_STORE].search(
        principal.user_id,
        page=query.page,
        per_page=query.per_page,
        status=query.status,
        symbol=symbol,
    )
    now = _now_ms()
    body = web.json_response(
        {
            "items": [alert_json(a, now) for a in alerts],
            "page": query.page,
            "per_page": query.per_page,
            "total": total,
        }
    ).body
    assert isinstance(body, bytes)
    if version is not None:
        await cache.set(principal.user_id, version, key, body)
    return web.Response(body=body, content_type="application/json", headers=headers)


async def get_alert(request: web.Request) -> web.Response:
    principal = require(request, scope="read")
    alert = await request.app[ALERT_STORE].get(principal.user_id, _alert_id(request))
    if alert is None:
        raise _not_found()
    return web.json_response(alert_json(alert, _now_ms()))


async def update_alert(request: web.Request) -> web.Response:
    principal = require(request, scope="alerts:write")
    patch = await parse_body(request, AlertPatch)
    given = patch.model_fields_set
    if "webhook_url" in given:
        await _check_webhook(request, patch.webhook_url)
    expires_ms = _ms(patch.expires_at)

    changes: dict[str, object] = {}
    for name in given:
        value = getattr(patch, name)
        if name in ("target_price", "pct"):
            value = _decimal(value)
        elif name == "channels":
            value = tuple(value)
        elif name == "expires_at":
            name, value = "expires_at_ms", expires_ms
        changes[name] = value

    def merge(current: Alert) -> AlertSpec:
        spec = apply_patch(current.spec(), changes)
        check_expiry = patch_needs_future_expiry(spec, changes)
        return _validated(request, spec, check_expiry=check_expiry)

    try:
        result = await request.app[ALERT_STORE].update(principal.user_id, _alert_id(request), merge)
    except ActiveCapReached as exc:
        raise _cap(exc) from None
    if result is None:
        raise _not_found()
    alert, secret = result
    await request.app[ALERT_CACHE].invalidate(principal.user_id)
    answer = alert_json(alert, _now_ms())
    if secret is not None:
        answer["webhook_secret"] = secret
    return web.json_response(answer, headers={"Cache-Control": "no-store"})


async def delete_alert(request: web.Request) -> web.Response:
    principal = require(request, scope="alerts:write")
    if not await request.app[ALERT_STORE].delete(principal.user_id, _alert_id(request)):
        raise _not_found()
    await request.app[ALERT_CACHE].invalidate(principal.user_id)
    return web.Response(status=204)


async def list_alert_events(request: web.Request) -> web.Response:
    principal = require(request, scope="read")
    query = parse_query(request, PageQuery)
    store = request.app[ALERT_STORE]
    alert = await store.get(principal.user_id, _alert_id(request))
    if alert is None:
        raise _not_found()
    events, total = await store.events(alert.id, page=query.page, per_page=query.per_page)
    return web.json_response(
        {
            "items": [event_json(e) for e in events],
            "page": query.page,
            "per_page": query.per_page,
            "total": total,
        }
    )


def register(api: Api) -> None:
    common: dict[str, Any] = {"tag": "alerts", "auth": "user"}
    api.add(
        "POST",
        "/alerts",
        create_alert,
        summary="Create a price alert",
        body=AlertCreate,
        response=AlertWithSecret,
        status=201,
        scope="alerts:write",
        **common,
    )
    api.add(
        "GET",
        "/alerts",
        list_alerts,
        summary="Your alerts, newest first",
        query=AlertListQuery,
        response=AlertList,
        scope="read",
        **common,
    )
    api.add(
        "GET",
        "/alerts/{id}",
        get_alert,
        summary="One of your alerts",
        response=AlertOut,
        scope="read",
        path_params=ID_PARAM,
        **common,
    )
    api.add(
        "PATCH",
        "/alerts/{id}",
        update_alert,
        summary="Change, pause or re-activate an alert",
        body=AlertPatch,
        response=AlertWithSecret,
        scope="alerts:write",
        path_params=ID_PARAM,
        **common,
    )
    api.add(
        "DELETE",
        "/alerts/{id}",
        delete_alert,
        summary="Delete an alert",
        status=204,
        scope="alerts:write",
        path_params=ID_PARAM,
        **common,
    )
    api.add(
        "GET",
        "/alerts/{id}/events",
        list_alert_events,
        summary="An alert's triggers with the delivery status of each channel, newest first",
        query=PageQuery,
        response=AlertEventList,
        scope="read",
        path_params=ID_PARAM,
        **common,
    )
