"""The REST API: a FastAPI application over the same service layer as the CLI.

Every endpoint calls service methods; nothing here decides anything about guests, images or the
host. Errors come out as `{"error": message}` with the status of the CorralError (or 401, 403,
404, 405, 422, 429 from the HTTP layer itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Query, Request, Response, WebSocket
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect

from corral.api.auth import (
    CSRF_HEADER,
    PUBLIC_PATHS,
    SESSION_COOKIE,
    TICKET_TTL_S,
    Authenticator,
    AuthMiddleware,
    Principal,
    TooManyAttempts,
)
from corral.api.live import LiveStats
from corral.core.errors import AdmissionRefused, CorralError, InvalidInput
from corral.core.spec import GuestSpec, spec_from_mapping
from corral.core.validate import check_domain_name, check_name
from corral.monitoring.collector import parse_duration
from corral.planning.errors import PlanningError
from corral.planning.report import summary_lines
from corral.services.context import Corral
from corral.services.users import UserStore, users_path

if TYPE_CHECKING:
    from corral.adapters.console import SerialConsole

log = logging.getLogger("corral.api")
try:
    __version__ = importlib.metadata.version("corral")
except importlib.metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"

# The pattern is documented in the schema (clients and fuzzers see the shape of a name) but checked by
# the core's check_name(), so a bad name gets the same one-line message as in the CLI.
NAME_SCHEMA = {"pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"}


def _name_param(what: str) -> Any:
    return PathParam(description=what, max_length=200, json_schema_extra=NAME_SCHEMA)


NameParam = Annotated[str, _name_param("Domain name")]
SnapshotParam = Annotated[str, _name_param("Snapshot name")]
ImageParam = Annotated[str, _name_param("Image name")]
PlanParam = Annotated[str, _name_param("Plan name (its file name in <data_dir>/plans/ without .json)")]


# --- request bodies -------------------------------------------------------------------------------
class LoadBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cpu: float = Field(0, description="% of each vCPU kept busy")
    disk: float = Field(0, description="KiB/s read + written")
    net: float = Field(0, description="KiB/s sent")


class SpecBody(BaseModel):
    """The fields of a TOML spec file (and of `corral create`'s options)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"name": "web", "image": "tiny", "vcpus": 1, "memory": 256, "load": {"cpu": 15}}]})
    name: str = Field(max_length=200)
    image: str = Field(max_length=200)
    vcpus: int = 1
    memory: int = Field(256, description="MiB")
    disk: float | None = Field(None, description="GiB")
    iso: str | None = Field(None, description="absolute path of an ISO on the host, attached as a CD-ROM",
                            max_length=4096)
    load: LoadBody | str | None = Field(None, description="tiny image only: {cpu, disk, net} or 'cpu=15,net=32'")


class ErrorBody(BaseModel):
    """Every error: the one line the CLI would print."""

    error: str


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No or bad credentials"},
    403: {"model": ErrorBody, "description": "Missing or wrong X-CSRF-Token (cookie sessions)"},
    404: {"model": ErrorBody, "description": "No such domain, snapshot, image or plan"},
    409: {"model": ErrorBody, "description": "Wrong state, or the name is taken"},
    422: {"model": ErrorBody, "description": "Invalid name, spec, body or query"},
    502: {"model": ErrorBody, "description": "libvirt, QEMU or a host tool failed"},
    504: {"model": ErrorBody, "description": "The guest did not come up or shut down in time"},
    507: {"model": ErrorBody, "description": "Admission refused: what would be exceeded"},
}


class LoginBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str = Field(max_length=200)
    password: str = Field(max_length=1024)


class NameBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=200)


class ImportBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=200)
    path: str = Field(max_length=4096, description="a qcow2 or raw disk image, or an ISO, on the host")


# --- helpers --------------------------------------------------------------------------------------
def _spec(body: SpecBody) -> GuestSpec:
    data = body.model_dump(exclude_none=True)
    if body.iso is not None and not Path(body.iso).is_absolute():
        raise InvalidInput(f"iso {body.iso!r} must be an absolute path on the host")
    return spec_from_mapping(data)


def _principal(request: Request) -> Principal:
    principal: Principal = request.state.principal
    return principal


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body" or len(error.get("loc", ())) == 1)
        parts.append(f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg", "invalid")))
    return "invalid request: " + "; ".join(parts[:5])


# The report is static HTML + inline CSS + SVG: nothing in it may run or load anything.
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox; frame-ancestors 'self'"
SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer")]

# The web UI: static files (vanilla JS modules, CSS, and the vendored xterm.js / noVNC that
# scripts/setup copies into static/vendor/). "/" is its page; "/ui/..." its assets. They are public (the
# page itself logs in through /api/login); everything they do goes through the API.
WEB_DIR = Path(__file__).resolve().parent.parent / "web" / "static"
UI_PREFIX = "/ui/"
UI_CSP = ("default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
          "frame-src 'self'; "
          "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


class WebUI:
    """Serves `/` (the UI's page) and `/ui/...` (its assets) from WEB_DIR, before authentication; passes
    everything else on."""

    def __init__(self, app: ASGIApp, directory: Path = WEB_DIR) -> None:
        self.app = app
        self.files = StaticFiles(directory=directory, check_dir=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == "/" or path.startswith(UI_PREFIX)):
            await self.app(scope, receive, send)
            return
        inner = {**scope, "path": "/index.html" if path == "/" else path[len(UI_PREFIX) - 1:], "root_path": ""}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"cache-control", b"no-cache"),
                                                  (b"content-security-policy", UI_CSP.encode())]}
            await send(message)

        try:
            await self.files(inner, receive, send_with_headers)
        except StarletteHTTPException as exc:  # 404, 405: raised before anything was sent
            await _error(exc.status_code, "no such file of the web UI" if exc.status_code == 404 else str(exc.detail),
                         dict(exc.headers) if exc.headers else None)(scope, receive, send)


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})


def host_of(header: str) -> str:
    """The host part of a Host header: `[::1]:8080` -> `[::1]`, `localhost:8080` -> `localhost`."""
    if header.startswith("["):
        return header[:header.find("]") + 1] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class SecurityHeaders:
    """nosniff, no framing, no referrer, and no caching of API answers, on every HTTP response; and,
    when `allowed_hosts` is given, only requests naming one of them in Host (defeats DNS rebinding
    of a server on loopback)."""

    def __init__(self, app: ASGIApp, allowed_hosts: frozenset[str] | None = None) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.allowed_hosts is not None and scope["type"] in ("http", "websocket"):
            host = dict(scope.get("headers", [])).get(b"host", b"").decode("latin-1").lower()
            if host_of(host) not in self.allowed_hosts:
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 4400, "reason": "unexpected Host header"})
                else:
                    await _error(400, f"unexpected Host header {host!r}")(scope, receive, send)
                return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        no_store = scope["path"].startswith("/api/") or scope["path"] == "/metrics"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", [])) + SECURITY_HEADERS
                if scope["path"].startswith("/api/plans/") and scope["path"].endswith("/report"):
                    # The web console shows a plan's report in a frame of its own page (same origin only).
                    headers = [(k, b"SAMEORIGIN" if k == b"x-frame-options" else v) for k, v in headers]
                if no_store:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _reason(text: str) -> str:
    """A WebSocket close reason: at most 123 bytes of UTF-8."""
    return text.encode()[:123].decode(errors="ignore")


async def _bridge_console(websocket: WebSocket, console: SerialConsole) -> None:
    """Guest output to the socket (a reader thread per console), socket input to the guest."""
    loop = asyncio.get_running_loop()
    output: asyncio.Queue[bytes] = asyncio.Queue()

    def pump() -> None:
        while True:
            data = console.read(0.5)
            if data:
                loop.call_soon_threadsafe(output.put_nowait, data)
            elif console.closed.is_set() and console.output.empty():
                loop.call_soon_threadsafe(output.put_nowait, b"")
                return

    reader = threading.Thread(target=pump, name=f"console-{console.name}", daemon=True)
    reader.start()

    async def to_socket() -> None:
        while data := await output.get():
            await websocket.send_bytes(data)
        await websocket.close(1000, "the console closed")

    sender = asyncio.ensure_future(to_socket())
    try:
        while not sender.done():
            receive = asyncio.ensure_future(websocket.receive())
            await asyncio.wait({receive, sender}, return_when=asyncio.FIRST_COMPLETED)
            if not receive.done():
                receive.cancel()
                break
            message = receive.result()
            if message["type"] == "websocket.disconnect":
                break
            data = message.get("bytes") or (message.get("text") or "").encode()
            if data:
                await asyncio.to_thread(console.send, data)
    except (WebSocketDisconnect, CorralError, RuntimeError):
        pass
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        await asyncio.to_thread(console.close)
        await asyncio.to_thread(reader.join, 2.0)


async def _bridge_tcp(websocket: WebSocket, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Bytes of a TCP connection to the socket and back, until either side closes."""

    async def to_socket() -> None:
        while data := await reader.read(65536):
            await websocket.send_bytes(data)

    async def to_tcp() -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes") or (message.get("text") or "").encode()
            writer.write(data)
            await writer.drain()

    tasks = {asyncio.ensure_future(to_socket()), asyncio.ensure_future(to_tcp())}
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        with contextlib.suppress(RuntimeError):
            await websocket.close(1000)


# --- the application ------------------------------------------------------------------------------
def create_app(corral: Corral, *, sampler: bool = False, sample_interval_s: float | None = None,
               authenticator: Authenticator | None = None, allowed_hosts: frozenset[str] | None = None) -> FastAPI:
    """The API over `corral`. With `sampler`, the monitoring sampler runs while the app does; with
    `allowed_hosts`, requests whose Host header names another host are refused (400)."""
    auth = authenticator or Authenticator(UserStore(users_path(corral.settings.data_dir)))
    live = LiveStats(corral.monitoring, sample_interval_s)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if sampler:
            live.start()
        try:
            yield
        finally:
            live.stop()

    app = FastAPI(title="Corral", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url="/api/openapi.json", lifespan=lifespan,
                  description="Run guests on one host, measure them, plan the consolidation. "
                              "See docs/api.md for the authentication model.")
    app.state.corral = corral
    app.state.auth = auth
    app.state.live = live
    app.add_middleware(AuthMiddleware, auth=auth)
    app.add_middleware(WebUI)
    app.add_middleware(SecurityHeaders, allowed_hosts=allowed_hosts)

    @app.get("/api/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        """The interactive API documentation, from the Swagger UI files scripts/setup vendored (no CDN)."""
        return get_swagger_ui_html(openapi_url="/api/openapi.json", title="Corral API",
                                   swagger_js_url="/ui/vendor/swagger/swagger-ui-bundle.js",
                                   swagger_css_url="/ui/vendor/swagger/swagger-ui.css",
                                   swagger_favicon_url="data:,")

    # --- errors -----------------------------------------------------------------------------------
    @app.exception_handler(CorralError)
    async def corral_error(_request: Request, exc: CorralError) -> JSONResponse:
        return _error(exc.status, exc.message)

    @app.exception_handler(PlanningError)
    async def planning_error(_request: Request, exc: PlanningError) -> JSONResponse:
        return _error(422, str(exc).replace("\n", " "))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), dict(exc.headers) if exc.headers else None)

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", exc_info=exc)
        return _error(500, f"internal error: {type(exc).__name__}")

    api = APIRouter(prefix="/api", responses=ERRORS)

    @api.get("/health", tags=["session"])
    def health() -> dict[str, Any]:
        """Liveness; no authentication."""
        return {"status": "ok", "version": __version__}

    @api.post("/login", tags=["session"], responses={429: {"model": ErrorBody, "description": "Too many failures"}})
    def login(body: LoginBody, request: Request, response: Response) -> dict[str, Any]:
        """Start a session: sets the session cookie and returns the CSRF token to send as X-CSRF-Token."""
        try:
            session = auth.login(body.user, body.password)
        except TooManyAttempts as exc:
            retry = max(1, int(exc.retry_after_s + 0.999))
            raise StarletteHTTPException(429, f"too many failed logins for {body.user!r}: retry in {retry} s",
                                         headers={"Retry-After": str(retry)}) from None
        if session is None:
            raise StarletteHTTPException(401, "wrong user name or password")
        response.set_cookie(SESSION_COOKIE, session.key, httponly=True, samesite="strict", path="/",
                            secure=request.url.scheme == "https")
        return {"user": session.user, "csrf_token": session.csrf, "idle_timeout_s": auth.session_idle_s}

    @api.post("/logout", tags=["session"])
    def logout(request: Request, response: Response) -> dict[str, Any]:
        """End this session (a no-op for a bearer token)."""
        principal = _principal(request)
        if principal.session_key is not None:
            auth.logout(principal.session_key)
            response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict",
                                   secure=request.url.scheme == "https")
        return {"logged_out": principal.session_key is not None}

    @api.get("/session", tags=["session"])
    def whoami(request: Request) -> dict[str, Any]:
        """Who is asking, and how (session or token)."""
        principal = _principal(request)
        return {"user": principal.user, "via": principal.via}

    # --- host ---------------------------------------------------------------------------------------
    @api.get("/host", tags=["host"])
    def host() -> dict[str, Any]:
        """The host: CPU, memory, engine (KVM or TCG, and why), capacity limits and what is free."""
        return corral.host.report().as_dict()

    # --- domains ------------------------------------------------------------------------------------
    @api.get("/domains", tags=["domains"])
    def list_domains() -> list[dict[str, Any]]:
        """Domain-0 first, then every guest, like `corral list --json`; CPU % since the background
        sampler's last reading."""
        return [row.as_dict() for row in corral.guests.listing(since=corral.monitoring.sampler.latest_counters)]

    @api.post("/domains", tags=["domains"], status_code=201)
    def create_domain(body: SpecBody, start: bool = False, wait: bool = False) -> dict[str, Any]:
        """Define a guest from a spec (and start it with ?start=true; wait until up with &wait=true).
        Refused with 507 when it would overload the host."""
        return corral.guests.create(_spec(body), start=start, wait=wait).as_dict()

    @api.post("/domains/check", tags=["domains"])
    def check_domain(body: SpecBody, start: bool = True) -> dict[str, Any]:
        """Would this guest fit? Beside the running guests (?start=true, the default) or on an empty
        host (?start=false, what `create` without `start` checks)."""
        spec = _spec(body)
        try:
            corral.guests.check_admission(spec.name, spec.vcpus, spec.memory_mib, spec.load.declared_cpu_pct,
                                          beside_running=start)
        except AdmissionRefused as exc:
            return {"fits": False, "exceeded": exc.message, "beside_running": start}
        return {"fits": True, "exceeded": None, "beside_running": start}

    @api.get("/domains/{name}", tags=["domains"])
    def domain_info(name: NameParam) -> dict[str, Any]:
        """Everything about one guest, like `corral info --json`."""
        return corral.guests.info(check_domain_name(name)).as_dict()

    @api.delete("/domains/{name}", tags=["domains"])
    def delete_domain(name: NameParam, keep_disks: bool = False) -> dict[str, Any]:
        """Delete a guest (powered off first): the domain, its overlay disks, its console log."""
        kept = corral.guests.delete(check_domain_name(name), keep_disks=keep_disks)
        return {"deleted": name, "kept": kept}

    @api.post("/domains/{name}/start", tags=["domains"])
    def start_domain(name: NameParam, wait: bool = False) -> dict[str, Any]:
        """Start a guest (507 when it would overload the host); ?wait=true returns when it is up."""
        return corral.guests.start(check_domain_name(name), wait=wait).as_dict()

    @api.post("/domains/{name}/shutdown", tags=["domains"])
    def shutdown_domain(name: NameParam, timeout: Annotated[float, Query(gt=0, le=3600)] = 60,
                        force: bool = False) -> dict[str, Any]:
        """ACPI power button, then wait up to `timeout` s; with force, power off what is still running."""
        return corral.guests.shutdown(check_domain_name(name), timeout_s=timeout, force=force).as_dict()

    @api.post("/domains/{name}/poweroff", tags=["domains"])
    def poweroff_domain(name: NameParam) -> dict[str, Any]:
        """Pull the plug."""
        return corral.guests.poweroff(check_domain_name(name)).as_dict()

    @api.post("/domains/{name}/reboot", tags=["domains"])
    def reboot_domain(name: NameParam) -> dict[str, Any]:
        return corral.guests.reboot(check_domain_name(name)).as_dict()

    @api.post("/domains/{name}/pause", tags=["domains"])
    def pause_domain(name: NameParam) -> dict[str, Any]:
        return corral.guests.pause(check_domain_name(name)).as_dict()

    @api.post("/domains/{name}/resume", tags=["domains"])
    def resume_domain(name: NameParam) -> dict[str, Any]:
        return corral.guests.resume(check_domain_name(name)).as_dict()

    @api.post("/domains/{name}/clone", tags=["domains"], status_code=201)
    def clone_domain(name: NameParam, body: NameBody) -> dict[str, Any]:
        """Copy a shut-off guest under a new name (`{"name": "copy"}`)."""
        return corral.guests.clone(check_domain_name(name), body.name).as_dict()

    @api.get("/domains/{name}/snapshots", tags=["snapshots"])
    def list_snapshots(name: NameParam) -> list[dict[str, Any]]:
        return [s.__dict__ for s in corral.guests.snapshot_list(check_domain_name(name))]

    @api.post("/domains/{name}/snapshots", tags=["snapshots"], status_code=201)
    def create_snapshot(name: NameParam, body: NameBody) -> dict[str, Any]:
        """Snapshot a guest (`{"name": "before-upgrade"}`), memory too when it runs."""
        return dict(corral.guests.snapshot_create(check_domain_name(name), body.name).__dict__)

    @api.post("/domains/{name}/snapshots/{snapshot}/revert", tags=["snapshots"])
    def revert_snapshot(name: NameParam, snapshot: SnapshotParam) -> dict[str, Any]:
        return corral.guests.snapshot_revert(check_domain_name(name), snapshot).as_dict()

    @api.delete("/domains/{name}/snapshots/{snapshot}", tags=["snapshots"])
    def delete_snapshot(name: NameParam, snapshot: SnapshotParam) -> dict[str, Any]:
        corral.guests.snapshot_delete(check_domain_name(name), snapshot)
        return {"deleted": snapshot, "domain": name}

    @api.post("/domains/{name}/console-ticket", tags=["domains"])
    def console_ticket(name: NameParam, request: Request) -> dict[str, Any]:
        """A one-time ticket (valid 30 s, tied to this session or token) for the guest's console."""
        info = corral.guests.info(check_domain_name(name))  # NotFound for an unknown domain
        ticket = auth.issue_ticket(_principal(request), info.name)
        return {"ticket": ticket, "domain": info.name, "state": info.state, "expires_in_s": TICKET_TTL_S}

    # --- images -------------------------------------------------------------------------------------
    @api.get("/images", tags=["images"])
    def list_images() -> list[dict[str, Any]]:
        return [r.as_dict() for r in corral.images.records()]

    @api.post("/images", tags=["images"], status_code=201)
    def import_image(body: ImportBody) -> dict[str, Any]:
        """Register a disk image or ISO where it is (`{"name", "path"}`); it is never written to."""
        return corral.images.import_image(body.name, body.path).as_dict()

    @api.post("/images/tiny/build", tags=["images"])
    def build_tiny(force: bool = False) -> dict[str, Any]:
        """Build the built-in tiny image (returns when done; a cached build returns at once)."""
        return corral.images.build_tiny(force=force).as_dict()

    @api.delete("/images/{name}", tags=["images"])
    def remove_image(name: ImageParam) -> dict[str, Any]:
        """Forget an image (409 while guests use it). A built image's files go too; an imported file stays."""
        check_name(name, "image name")
        corral.guests.remove_image(name)
        return {"deleted": name}

    # --- monitoring -----------------------------------------------------------------------------------
    @api.get("/stats", tags=["stats"])
    def live_stats() -> dict[str, Any]:
        """The latest interval's samples of every domain, from the sampler running inside `corral serve`."""
        return {"sampler": live.running, "interval_s": live.interval_s or corral.settings.monitor.interval_s,
                "error": live.error, "samples": live.latest}

    @api.get("/stats/{domain}", tags=["stats"])
    def stats_history(domain: Annotated[str, _name_param("A guest, or Domain-0 for the host")],
                      since: Annotated[str, Query(max_length=32)] = "1h",
                      resource: Literal["cpu", "mem", "disk", "net"] | None = None,
                      resolution: Literal["auto", "raw", "rollup"] = "auto") -> list[dict[str, Any]]:
        """History from the store, like `corral stats NAME --json`."""
        check_name(domain, "domain name")
        return corral.monitoring.history(domain, parse_duration(since, "since"), resource, resolution)

    # --- plans ----------------------------------------------------------------------------------------
    @api.get("/plans", tags=["plans"])
    def list_plans() -> list[dict[str, Any]]:
        """The plan library (<data_dir>/plans/): plans kept by `corral plan --save NAME` and the demo."""
        return corral.plans.names()

    @api.get("/plans/{name}", tags=["plans"])
    def get_plan(name: PlanParam) -> dict[str, Any]:
        """The plan JSON, plus its one-line summary as `summary`."""
        data = corral.plans.read(name)
        return {**data, "summary": summary_lines(data)}

    @api.get("/plans/{name}/report", tags=["plans"], response_class=HTMLResponse)
    def plan_report(name: PlanParam) -> HTMLResponse:
        """The self-contained HTML report of a plan."""
        return HTMLResponse(corral.plans.report_html(name), headers={"Content-Security-Policy": REPORT_CSP})

    # --- WebSocket ------------------------------------------------------------------------------------
    @api.websocket("/ws/stats")
    async def ws_stats(websocket: WebSocket) -> None:
        """Each interval's samples as one JSON array; the latest interval right away, if there is one."""
        await websocket.accept()
        queue = live.subscribe()
        try:
            if live.latest:
                await websocket.send_json(live.latest)
            while True:
                receive = asyncio.ensure_future(websocket.receive())
                get = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({receive, get}, return_when=asyncio.FIRST_COMPLETED)
                if receive in done:
                    get.cancel()
                    if receive.result().get("type") == "websocket.disconnect":
                        return
                    continue
                receive.cancel()
                await websocket.send_json(get.result())
        except WebSocketDisconnect:
            return
        finally:
            live.unsubscribe(queue)

    async def _open_with_ticket(websocket: WebSocket, name: str, ticket: str) -> bool:
        """Accept the socket, then check the name and redeem the ticket; False (socket closed) if either fails."""
        principal: Principal = websocket.scope["state"]["principal"]
        await websocket.accept()
        try:
            check_domain_name(name)
        except CorralError as exc:
            await websocket.close(4000 + exc.status, _reason(exc.message))
            return False
        if auth.redeem_ticket(ticket, name, principal.key) is None:
            await websocket.close(4403, "invalid or expired console ticket: ask for a new one")
            return False
        return True

    @api.websocket("/ws/console/{name}")
    async def ws_console(websocket: WebSocket, name: str, ticket: str = "") -> None:
        """A guest's serial console: binary frames both ways (text frames are sent as UTF-8). Needs a
        one-time ticket (POST /api/domains/{name}/console-ticket) of the same session or token."""
        if not await _open_with_ticket(websocket, name, ticket):
            return
        try:
            console = await asyncio.to_thread(corral.guests.open_console, name)
        except CorralError as exc:
            await websocket.close(4000 + exc.status, _reason(exc.message))
            return
        await _bridge_console(websocket, console)

    @api.websocket("/ws/vnc/{name}")
    async def ws_vnc(websocket: WebSocket, name: str, ticket: str = "") -> None:
        """A guest's display: the bytes of its VNC server (on loopback) in binary frames, for noVNC. Needs a
        one-time ticket like the serial console."""
        if not await _open_with_ticket(websocket, name, ticket):
            return
        try:
            info = await asyncio.to_thread(corral.guests.info, name)
        except CorralError as exc:
            await websocket.close(4000 + exc.status, _reason(exc.message))
            return
        host, _, port = (info.vnc or "").rpartition(":")
        if host != "127.0.0.1" or not port.isdigit():
            await websocket.close(4409, _reason(f"{name} has no display now (it is {info.state})"))
            return
        try:
            reader, writer = await asyncio.open_connection(host, int(port))
        except OSError as exc:
            await websocket.close(4502, _reason(f"cannot reach the display of {name}: {exc.strerror or exc}"))
            return
        await _bridge_tcp(websocket, reader, writer)

    app.include_router(api)

    @app.get("/metrics", tags=["metrics"], response_class=PlainTextResponse)
    def metrics() -> PlainTextResponse:
        """Prometheus text exposition; needs `Authorization: Bearer <token>`."""
        return PlainTextResponse(corral.monitoring.prometheus_text(),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer", "description": "an API token: corral user token"},
                "session": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE,
                            "description": f"from POST /api/login; unsafe methods also need {CSRF_HEADER}"},
            }
            for path, operations in schema.get("paths", {}).items():
                for operation in operations.values():
                    if path in PUBLIC_PATHS:
                        operation["security"] = []
                    elif path == "/metrics":
                        operation["security"] = [{"bearer": []}]
                    else:
                        operation["security"] = [{"bearer": []}, {"session": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
