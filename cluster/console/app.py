"""The console's ASGI app (Starlette): routes, login, CSRF, security headers, live updates.

Every route but /login and the fixed assets under /static refuses a request without a session:
pages redirect to /login, everything else answers 401. POSTs need the session's CSRF token and,
when the browser sends an Origin, this console's own. Live updates are server-sent events
(/events): the handler looks at the state's version every `poll_s` and sends what changed.
Answers carry a strict Content-Security-Policy (scripts and styles from this origin only), so
even a value that escaped escaping could not run. (Referrer-Policy is same-origin, not
no-referrer: with no-referrer browsers send `Origin: null` on form posts, failing the check.)
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cluster.console.auth import COOKIE, Session, Sessions
from cluster.console.charts import risk_chart
from cluster.console.cluster_view import ClusterView
from cluster.console.evidence import EvidenceEvent, Ref
from cluster.console.feed import SharedState
from cluster.console.pages import render
from cluster.console.state import AlertView, ConsoleState
from cluster.console.static import CSS, JS
from cluster.console.templates import TEMPLATES
from cluster.console.verdicts import VerdictError, make_verdict
from correlator.records import Verdict

__all__ = ["Services", "build_app"]

MAX_FORM_BYTES = 16_384
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"), (b"x-frame-options", b"DENY"),
                    (b"cache-control", b"no-store")]


@dataclass
class Services:
    """What the app needs from outside; `cluster.console.server` wires the Kafka-backed ones."""

    shared: SharedState
    fetch_evidence: Callable[[list[Ref]], list[EvidenceEvent]]
    send_verdict: Callable[[Verdict], None]
    cluster: ClusterView = field(default_factory=lambda: ClusterView(None))
    feed_stats: Callable[[], dict[str, Any]] = lambda: {"topics": [], "counts": {}}
    stopping: threading.Event = field(default_factory=threading.Event)  # set: live streams end
    poll_s: float = 0.5


class SecurityHeaders:
    """Adds the headers above to every answer (pure ASGI: streams pass through untouched)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


def _client(request: Request) -> str:
    return request.client.host if request.client else "?"


async def _form(request: Request) -> dict[str, str] | None:
    """An url-encoded form (the only kind the pages send), first value of each field; None when it
    is too large or of another type. Parsed here: no multipart parser is needed."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=20)
    return {key: values[0] for key, values in fields.items()}


def _same_origin(request: Request) -> bool:
    """A POST from a page of this console: the Origin a browser sends must be ours (absent: a
    non-browser client, which still needs the CSRF token)."""
    origin = request.headers.get("origin")
    return origin is None or origin == f"{request.url.scheme}://{request.headers.get('host', '')}"


def _int_param(value: str | None, low: int, high: int) -> int | None:
    try:
        number = int(value or "")
    except ValueError:
        return None
    return number if low <= number <= high else None


def build_app(services: Services, sessions: Sessions) -> ASGIApp:
    shared = services.shared

    def session_of(request: Request) -> Session | None:
        return sessions.get(request.cookies.get(COOKIE))

    def refuse(request: Request) -> Response:
        if request.method == "GET" and request.headers.get("accept", "").startswith("text/html"):
            return RedirectResponse("/login", status_code=303)
        return PlainTextResponse("login required", status_code=401)

    Handler = Callable[[Request, Session], Awaitable[Response]]

    def guarded(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            session = session_of(request)
            if session is None:
                return refuse(request)
            return await handler(request, session)

        return endpoint

    def page(name: str, request: Request, session: Session, active: str, stream: str, status_code: int = 200,
             **context: Any) -> HTMLResponse:
        fragment = name.replace(".html", "_live.html")
        if request.query_params.get("fragment") and fragment in TEMPLATES:
            return HTMLResponse(render(fragment, **context))
        summary = shared.read(ConsoleState.summary)
        return HTMLResponse(render(name, csrf=session.csrf, analyst=session.analyst, active=active, stream=stream,
                                   summary=summary, **context), status_code=status_code)

    # -- login -------------------------------------------------------------------------------
    async def login_form(request: Request) -> Response:
        return HTMLResponse(render("login.html", error=""))

    async def login(request: Request) -> Response:
        client = _client(request)
        if not _same_origin(request):
            return PlainTextResponse("cross-origin login refused", status_code=403)
        if sessions.blocked(client):
            return HTMLResponse(render("login.html", error="Too many wrong tokens: wait a minute."), status_code=429)
        form = await _form(request)
        session = sessions.login(client, (form or {}).get("token", ""), (form or {}).get("analyst", ""))
        if session is None:
            return HTMLResponse(render("login.html", error="Wrong token."), status_code=401)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, session.session_id, max_age=int(sessions.lifetime_s), path="/", httponly=True,
                            samesite="strict", secure=request.url.scheme == "https")
        return response

    async def logout(request: Request) -> Response:
        session = session_of(request)
        if session is None:
            return refuse(request)
        form = await _form(request)
        if not _same_origin(request) or not sessions.csrf_ok(session, (form or {}).get("csrf")):
            return PlainTextResponse("CSRF check failed", status_code=403)
        sessions.logout(session.session_id)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    # -- pages -------------------------------------------------------------------------------
    def queue_filters(request: Request) -> dict[str, Any]:
        params = request.query_params
        filters = {"priority": _int_param(params.get("priority"), 1, 4), "entity": (params.get("entity") or "")[:200],
                   "tactic": (params.get("tactic") or "")[:100], "open_only": params.get("open") == "1"}
        filters["any"] = bool(filters["priority"] or filters["entity"] or filters["tactic"] or filters["open_only"])
        return filters

    def stream_url(view: str, since: int, **params: Any) -> str:
        query = {"view": view, "since": since, **{k: v for k, v in params.items() if v not in (None, "", False)}}
        return "/events?" + urlencode(query)

    async def queue(request: Request, session: Session) -> Response:
        filters = queue_filters(request)
        limit = 500

        def read(state: ConsoleState) -> tuple[list[AlertView], dict[str, int], list[str], int]:
            alerts = state.queue(filters["priority"], filters["entity"], filters["tactic"], limit,
                                 include_closed=not filters["open_only"])
            folds = {view.alert_id: len(state.folded_under(view)) for view in alerts if view.is_case}
            return alerts, folds, state.tactics(), state.version

        alerts, folds, tactics, version = shared.read(read)
        stream = stream_url("queue", version, priority=filters["priority"], entity=filters["entity"],
                            tactic=filters["tactic"], open="1" if filters["open_only"] else "")
        return page("queue.html", request, session, "/", stream, alerts=alerts, folds=folds, tactics=tactics,
                    filters=filters, limit=limit)

    async def alert_page(request: Request, session: Session) -> Response:
        alert_id = request.path_params["alert_id"]
        found = shared.read(lambda state: (state.alerts.get(alert_id), state.version))
        alert, version = found
        if alert is None:
            return PlainTextResponse("no such alert (not read yet, or forgotten)", status_code=404)
        fragment = request.query_params.get("fragment")
        if fragment:
            return HTMLResponse(render("alert_head.html" if fragment == "head" else "alert_live.html", alert=alert))
        evidence = await run_in_threadpool(services.fetch_evidence, alert.evidence_refs)
        recorded = request.query_params.get("recorded", "")
        notice = f"Verdict {recorded} recorded and sent to the correlator." if recorded in ("tp", "fp", "benign") else ""
        return page("alert.html", request, session, "/", stream_url("alert", version, id=alert_id), alert=alert,
                    evidence=evidence, notice=notice, error="")

    async def verdict(request: Request, session: Session) -> Response:
        alert_id = request.path_params["alert_id"]
        form = await _form(request)
        if form is None or not _same_origin(request) or not sessions.csrf_ok(session, form.get("csrf")):
            return PlainTextResponse("CSRF check failed: reload the page and try again", status_code=403)
        alert = shared.read(lambda state: state.alerts.get(alert_id))
        if alert is None:
            return PlainTextResponse("no such alert", status_code=404)
        hours_text = form.get("suppress_hours", "").strip()
        try:
            hours = float(hours_text) if hours_text else None
            item = make_verdict(alert_id, form.get("verdict", ""), form.get("reason", "").strip(),
                                session.analyst or "console", form.get("suppress") == "1", hours)
            await run_in_threadpool(services.send_verdict, item)
        except (ValueError, VerdictError) as error:
            evidence = await run_in_threadpool(services.fetch_evidence, alert.evidence_refs)
            version = shared.read(lambda state: state.version)
            return page("alert.html", request, session, "/", stream_url("alert", version, id=alert_id), alert=alert,
                        evidence=evidence, notice="", error=str(error), status_code=400)
        with shared.lock:  # shown at once; the echo from the verdicts topic is recognized by its id
            shared.state.apply_verdict(item.to_dict())
        return RedirectResponse(f"/alerts/{quote(alert_id, safe='')}?recorded={item.verdict}", status_code=303)

    async def entities(request: Request, session: Session) -> Response:
        focus = (request.query_params.get("focus") or "")[:200]

        def read(state: ConsoleState) -> tuple[Any, ...]:
            board = state.riskiest(limit=30)
            if focus and not any(entity.name == focus for entity in board):
                board += [entity for entity in state.entities.values() if entity.name == focus]
            latest = next(reversed(state.alerts.values()), None)
            thresholds = (latest.explanation.get("priority") or {}).get("thresholds") if latest else None
            return [_copy(entity) for entity in board], thresholds or {}, state.version

        board, thresholds, version = shared.read(read)
        levels = (float(thresholds.get("p1_risk", 100.0)), float(thresholds.get("p2_risk", 60.0)),
                  float(thresholds.get("p3_risk", 25.0)))
        charts = {f"{e.entity_type}:{e.name}": risk_chart(e.points, e.name, thresholds=levels) for e in board}
        return page("entities.html", request, session, "/entities", stream_url("entities", version), entities=board,
                    charts=charts, focus=focus)

    async def attack(request: Request, session: Session) -> Response:
        hours = _int_param(request.query_params.get("hours"), 1, 24 * 90) or 24
        matrix, version = shared.read(lambda state: (state.attack_matrix(hours), state.version))
        return page("attack.html", request, session, "/attack", stream_url("attack", version), matrix=matrix,
                    hours=hours)

    async def rules(request: Request, session: Session) -> Response:
        rows, version = shared.read(lambda state: (state.rule_rows(), state.version))
        return page("rules.html", request, session, "/rules", stream_url("rules", version), rules=rows)

    async def cluster(request: Request, session: Session) -> Response:
        snapshot = await run_in_threadpool(services.cluster.snapshot)
        stats = shared.read(ConsoleState.stats)
        return page("cluster.html", request, session, "/cluster", stream_url("cluster", stats["version"]), cluster=snapshot,
                    feed=services.feed_stats(), state=stats)

    # -- live updates --------------------------------------------------------------------------
    async def events(request: Request, session: Session) -> Response:
        params = request.query_params
        view = params.get("view", "queue")
        since = _int_param(params.get("since"), 0, 2**62) or 0
        filters = queue_filters(request)
        alert_id = params.get("id", "")
        return StreamingResponse(_stream(request, session, view, since, filters, alert_id), media_type="text/event-stream",
                                 headers={"x-accel-buffering": "no"})

    async def _stream(request: Request, session: Session, view: str, since: int, filters: dict[str, Any],
                      alert_id: str) -> AsyncIterator[str]:
        version = since
        summary_html = ""
        pending = False
        last_refresh = last_ping = time.monotonic()
        yield "retry: 2000\n\n"
        while not services.stopping.is_set():
            now = time.monotonic()
            if sessions.get(session.session_id) is None:
                yield _event("login", {})
                return
            with shared.lock:
                messages, version, summary_html, changed = _changes(shared.state, view, version, filters, alert_id,
                                                                    summary_html)
            for message in messages:
                yield message
            pending = pending or changed
            periodic = view == "cluster" and now - last_refresh >= 5
            if (pending and now - last_refresh >= 1.5) or periodic:  # pages that redraw: at most every 1.5 s
                yield _event("refresh", {})
                last_refresh, pending = now, False
            if now - last_ping >= 15:
                yield ": ping\n\n"  # keeps proxies from closing an idle stream
                last_ping = now
            await asyncio.sleep(services.poll_s)

    def _changes(state: ConsoleState, view: str, version: int, filters: dict[str, Any], alert_id: str,
                 summary_html: str) -> tuple[list[str], int, str, bool]:
        """(events to send, the new version, the summary sent, whether a redrawn page changed)."""
        messages: list[str] = []
        changed_ids = state.changes_since(version)
        if changed_ids is None or version > state.version:  # too old, or from before a console restart
            return [_event("reload", {})], state.version, summary_html, False
        if changed_ids or not summary_html:
            summary = render("summary.html", summary=state.summary())
            if summary_html and summary != summary_html:
                messages.append(_event("summary", {"html": summary}))
            summary_html = summary
        changed = False
        if view == "queue":
            fold = filters["priority"] != 4  # as ConsoleState.queue folds
            for row_id, alert in state.rows_changed(changed_ids, fold).items():
                if alert is not None and alert.matches(filters["priority"], filters["entity"], filters["tactic"]) and \
                        not (filters["open_only"] and alert.status != "open") and not (fold and state.folds(alert)):
                    folds = {alert.alert_id: len(state.folded_under(alert))} if fold and alert.is_case else {}
                    messages.append(_event("row", {"id": alert.alert_id,
                                                   "html": render("row.html", alert=alert, folds=folds)}))
                else:
                    messages.append(_event("remove", {"id": row_id}))
        elif view == "alert":
            changed = alert_id in changed_ids
        else:
            changed = bool(changed_ids)
        return messages, state.version, summary_html, changed

    routes = [
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/static/console.css", lambda request: Response(CSS, media_type="text/css"), methods=["GET"]),
        Route("/static/console.js", lambda request: Response(JS, media_type="text/javascript"), methods=["GET"]),
        Route("/favicon.ico", lambda request: Response(status_code=204), methods=["GET"]),
        Route("/", guarded(queue), methods=["GET"]),
        Route("/alerts/{alert_id}", guarded(alert_page), methods=["GET"]),
        Route("/alerts/{alert_id}/verdict", guarded(verdict), methods=["POST"]),
        Route("/entities", guarded(entities), methods=["GET"]),
        Route("/attack", guarded(attack), methods=["GET"]),
        Route("/rules", guarded(rules), methods=["GET"]),
        Route("/cluster", guarded(cluster), methods=["GET"]),
        Route("/events", guarded(events), methods=["GET"]),
    ]
    return SecurityHeaders(Starlette(routes=routes))


def _event(name: str, data: Any) -> str:
    # orjson writes one line (newlines inside strings are escaped): one `data:` line per event
    return f"event: {name}\ndata: {orjson.dumps(data).decode()}\n\n"


def _copy(entity: Any) -> Any:
    """A copy of an EntityRisk to render outside the lock (the feed keeps changing the original)."""
    from dataclasses import replace

    return replace(entity, points=list(entity.points), rule_points=dict(entity.rule_points), tactics=set(entity.tactics),
                   alerts=set(entity.alerts))
