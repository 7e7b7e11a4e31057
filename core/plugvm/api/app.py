"""cloud-hypervisor's /api/v1 as a Falcon app (notes §1.1–1.3): the same paths, bodies,
status codes and error shape (a JSON array of strings, outermost error first), so
that clients written for cloud-hypervisor work unchanged.

Device verbs (vm.add-disk, ...) are not listed here: they are the api_verb of each
installed plugin's DeviceType.
"""

from __future__ import annotations

import json
import time

import falcon
from plugvm.api import json_body
from plugvm.api.received_fds import ENVIRON_KEY, ReceivedFds
from plugvm.config import ConfigError
from plugvm.config.errors import DuplicateIdError, Where
from plugvm.config.json_fields import JsonObject
from plugvm.config.vm import VmConfig
from plugvm.logs import get_logger
from plugvm.vmm import LifecycleError, held_fds

log = get_logger(__name__)
PREFIX = "/api/v1/"
MAX_BODY = 4 << 20            # HTTP_PAYLOAD_MAX_SIZE
STATUS = {"VmNotCreated": 404, "NoDeviceToRemove": 404, "UnknownDeviceId": 404, "IdentifierNotUnique": 409,
          "InvalidConfig": 400, "VcpuPendingRemovedVcpu": 429, "DeviceAdd": 400, "HotplugNotAllowed": 400,
          "RemovalNotAllowed": 400, "RemovalPending": 409, "ResizeRefused": 400}
MAX_WAIT = 300.0              # seconds a `Prefer: wait` may hold a request


class ApiError(Exception):
    def __init__(self, status: int, *chain: str):
        super().__init__(chain[-1] if chain else str(status))
        self.status = status
        self.chain = list(chain)


class Reply:
    """A handler's answer beyond a JSON body: the status and extra headers."""

    def __init__(self, status: int, body=None, headers: dict | None = None):
        self.status, self.body, self.headers = status, body, headers or {}


def prefer_wait(header: str | None) -> float | None:
    """The seconds of an RFC 7240 `Prefer: wait=N` (None without one). Other preferences
    are ignored, as the RFC asks; a wait past MAX_WAIT is cut to it."""
    if not header:
        return None
    for preference in header.split(","):
        token, _, value = preference.split(";")[0].strip().partition("=")
        if token.strip().lower() == "wait":
            value = value.strip().strip('"')
            if not value.isdigit():
                raise ApiError(400, "Error from API", f"Prefer: wait={value!r} is not a number of seconds")
            return min(float(value), MAX_WAIT)
    return None


class Api:
    """Routes a request to the Vmm. Each route: (method, needs a body, handler(body, request)
    → a JSON body, None (204) or a Reply)."""

    def __init__(self, vmm):
        self.vmm = vmm
        self.routes = {
            "vmm.ping": ("GET", False, lambda body, req: vmm.ping()),
            "vmm.shutdown": ("PUT", False, lambda body, req: vmm.shutdown_vmm()),
            "vm.create": ("PUT", True, self._create),
            "vm.boot": ("PUT", False, lambda body, req: vmm.boot()),
            "vm.delete": ("PUT", False, lambda body, req: vmm.delete()),
            "vm.shutdown": ("PUT", False, lambda body, req: vmm.shutdown()),
            "vm.reboot": ("PUT", False, lambda body, req: vmm.reboot()),
            "vm.pause": ("PUT", False, lambda body, req: vmm.pause()),
            "vm.resume": ("PUT", False, lambda body, req: vmm.resume()),
            "vm.power-button": ("PUT", False, lambda body, req: vmm.power_button()),
            "vm.info": ("GET", False, lambda body, req: vmm.info()),
            "vm.counters": ("GET", False, lambda body, req: vmm.counters()),
            "vm.resize": ("PUT", True, self._resize),
            "vm.remove-device": ("PUT", True, self._remove_device),
        }
        self.device_verbs = {}
        for device_type in vmm.registry.ordered():
            if device_type.api_verb:
                verb = device_type.api_verb
                self.device_verbs[verb] = device_type
                self.routes[verb] = ("PUT", True, lambda body, req, t=device_type: self._add_device(t, body, req))

    def _create(self, body, req):
        # As ch: fd numbers in a body name fds of the client's process, not ours.
        for net in body.get("net") or () if isinstance(body, dict) else ():
            if isinstance(net, dict) and net.pop("fds", None) is not None:
                log.warning("fds in the vm.create body ignored: send them with vm.add-net, over SCM_RIGHTS")
        try:
            config = VmConfig.from_json(body, self.vmm.registry)
        except ConfigError as e:
            status = 409 if isinstance(e, DuplicateIdError) else 400
            raise ApiError(status, "Error from API", "The VM could not be created", str(e)) from e
        self.vmm.create(config)

    def _resize(self, body, req):
        wait = prefer_wait(req.get_header("Prefer"))
        where = Where("VmResize", json=True)
        try:
            j = JsonObject(body, where)
            values = (j.integer("desired_vcpus", None, 2**32 - 1), j.integer("desired_ram", None),
                      j.integer("desired_balloon", None))
            j.close()
        except ConfigError as e:
            raise ApiError(400, "Error from API", "The VM could not be resized", str(e)) from e
        return self._waited(self.vmm.resize(*values, wait=wait), wait, 204, None, pending={"resizing": True})

    def _add_device(self, device_type, body, req):
        wait = prefer_wait(req.get_header("Prefer"))
        received: ReceivedFds = req.env.get(ENVIRON_KEY) or ReceivedFds()
        fds = received.fds
        if isinstance(body, dict):
            # The fds a config holds are the ones sent with the request (SCM_RIGHTS), as in
            # ch: numbers in the body would name fds of the client's process, not ours.
            if body.pop("fds", None) is not None:
                log.warning("fds in the request body ignored: they are sent over SCM_RIGHTS", verb=device_type.api_verb)
            if fds:
                body["fds"] = fds
        try:
            config = device_type.from_json(body)
        except ConfigError as e:
            raise ApiError(400, "Error from API", "The device could not be added", str(e)) from e
        if fds and sorted(getattr(config, "fds", None) or ()) != sorted(fds):
            raise ApiError(400, "Error from API", "The device could not be added",
                           f"{device_type.api_verb}: {len(fds)} file descriptor(s) came with the request, but a "
                           f"{device_type.name} device takes none")
        outcome = self.vmm.add_device(device_type, config, wait)
        received.keep(held_fds(self.vmm.config))          # the VM config holds them now
        if outcome.body is None:
            return None                         # a cold add
        return self._waited(outcome, wait, 200, outcome.body)

    def _remove_device(self, body, req):
        wait = prefer_wait(req.get_header("Prefer"))
        try:
            j = JsonObject(body, Where("VmRemoveDevice", json=True))
            device_id = j.string("id")
            j.close()
        except ConfigError as e:
            raise ApiError(400, "Error from API", "The device could not be removed", str(e)) from e
        outcome = self.vmm.remove_device(device_id, wait)
        return self._waited(outcome, wait, 204, None, device_id)

    @staticmethod
    def _waited(outcome, wait, status, body, removed=None, pending=None):
        """Without a wait, cloud-hypervisor's answer. With one: the same answer, saying the
        preference was applied, once the guest finished; 202 with what is still pending
        when the time ran out."""
        if outcome.done is None:
            return Reply(status, body)
        if outcome.done:
            return Reply(status, body, {"Preference-Applied": f"wait={wait:g}"})
        if pending is None:
            pending = body if removed is None else {"id": removed, "pending_removal": True}
        return Reply(202, pending, {"Preference-Applied": f"wait={wait:g}"})

    # --- Falcon --------------------------------------------------------------------------

    def __call__(self, req: falcon.Request, resp: falcon.Response, **_) -> None:
        start = time.monotonic()
        try:
            result = self._dispatch(req)
        except ApiError as e:
            self._error(resp, e.status, e.chain)
        except LifecycleError as e:
            self._error(resp, STATUS.get(e.kind, 500), e.chain or [str(e)])
        except Exception as e:          # a bug: say so, keep serving
            log.exception("API request failed", path=req.path)
            self._error(resp, 500, ["Error from API", f"Internal error: {e}"])
        else:
            if not isinstance(result, Reply):
                result = Reply(204 if result is None else 200, result)
            resp.status = result.status
            for name, value in result.headers.items():
                resp.set_header(name, value)
            if result.body is not None:
                resp.data = json.dumps(result.body).encode()
                resp.content_type = "application/json"
        log.info("api request", method=req.method, path=req.path, status=int(resp.status.split()[0])
                 if isinstance(resp.status, str) else resp.status, ms=round((time.monotonic() - start) * 1e3, 1))

    def _dispatch(self, req: falcon.Request):
        if not req.path.startswith(PREFIX):
            raise ApiError(404, "Error from API", f"Unknown path {req.path}")
        verb = req.path[len(PREFIX):]
        route = self.routes.get(verb)
        if route is None:
            if verb.startswith("vm.add-"):
                raise ApiError(404, "Error from API", f"No installed plugin provides {verb}; the device verbs are: "
                               + (", ".join(sorted(self.device_verbs)) or "none"))
            raise ApiError(404, "Error from API", f"Unknown endpoint {verb}")
        method, needs_body, handler = route
        if req.method != method:
            raise ApiError(400, "Error from API", f"{verb} takes {method}, not {req.method}")
        raw = self._body(req)
        if needs_body:
            if not raw:
                raise ApiError(400, "Error from API", f"{verb} needs a JSON body")
            try:
                body = json_body.decode(raw)
            except json_body.BodyError as e:
                raise ApiError(400, "Error from API", f"The request body is not valid JSON: {e}") from e
        elif raw:
            raise ApiError(400, "Error from API", f"{verb} takes no body")
        else:
            body = None
        return handler(body, req)

    @staticmethod
    def _body(req: falcon.Request) -> bytes:
        length = req.content_length or 0
        if length > MAX_BODY:
            raise ApiError(400, "Error from API", f"The request body is larger than {MAX_BODY} bytes")
        return req.bounded_stream.read(MAX_BODY + 1) if length else b""

    @staticmethod
    def _error(resp: falcon.Response, status: int, chain: list[str]) -> None:
        resp.status = status
        resp.data = json.dumps(chain).encode()
        resp.content_type = "application/json"


def create_app(vmm) -> falcon.App:
    """The WSGI app; every path goes through Api (cloud-hypervisor's 404/400 rules, not Falcon's)."""
    app = falcon.App(media_type="application/json")
    app.add_sink(Api(vmm), prefix="/")
    app.set_error_serializer(_ch_error)
    return app


def _ch_error(req: falcon.Request, resp: falcon.Response, error: falcon.HTTPError) -> None:
    """What Falcon answers itself (a request no sink takes, such as `OPTIONS *`) in
    cloud-hypervisor's error shape rather than Falcon's {"title": ...}."""
    chain = ["Error from API", error.title + (f": {error.description}" if error.description else "")]
    resp.data = json.dumps(chain).encode()
    resp.content_type = "application/json"
