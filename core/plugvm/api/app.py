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
import structlog

from plugvm.api import json_body
from plugvm.config import ConfigError
from plugvm.config.errors import Where
from plugvm.config.json_fields import JsonObject
from plugvm.config.vm import VmConfig
from plugvm.vmm import LifecycleError

log = structlog.get_logger(__name__)
PREFIX = "/api/v1/"
MAX_BODY = 4 << 20            # HTTP_PAYLOAD_MAX_SIZE
STATUS = {"VmNotCreated": 404, "NoDeviceToRemove": 404, "UnknownDeviceId": 404, "IdentifierNotUnique": 409,
          "InvalidConfig": 400, "VcpuPendingRemovedVcpu": 429}


class ApiError(Exception):
    def __init__(self, status: int, *chain: str):
        super().__init__(chain[-1] if chain else str(status))
        self.status = status
        self.chain = list(chain)


class Api:
    """Routes a request to the Vmm. Each route: (method, needs a body, handler(body) → JSON or None)."""

    def __init__(self, vmm):
        self.vmm = vmm
        self.routes = {
            "vmm.ping": ("GET", False, lambda body: vmm.ping()),
            "vmm.shutdown": ("PUT", False, lambda body: vmm.shutdown_vmm()),
            "vm.create": ("PUT", True, self._create),
            "vm.boot": ("PUT", False, lambda body: vmm.boot()),
            "vm.delete": ("PUT", False, lambda body: vmm.delete()),
            "vm.shutdown": ("PUT", False, lambda body: vmm.shutdown()),
            "vm.reboot": ("PUT", False, lambda body: vmm.reboot()),
            "vm.pause": ("PUT", False, lambda body: vmm.pause()),
            "vm.resume": ("PUT", False, lambda body: vmm.resume()),
            "vm.power-button": ("PUT", False, lambda body: vmm.power_button()),
            "vm.info": ("GET", False, lambda body: vmm.info()),
            "vm.counters": ("GET", False, lambda body: vmm.counters()),
            "vm.resize": ("PUT", True, self._resize),
        }
        self.device_verbs = {}
        for device_type in vmm.registry.ordered():
            if device_type.api_verb:
                verb = device_type.api_verb
                self.device_verbs[verb] = device_type
                self.routes[verb] = ("PUT", True, lambda body, t=device_type: self._add_device(t, body))

    def _create(self, body):
        try:
            config = VmConfig.from_json(body, self.vmm.registry)
        except ConfigError as e:
            raise ApiError(400, "Error from API", "The VM could not be created", str(e)) from e
        self.vmm.create(config)

    def _resize(self, body):
        where = Where("VmResize", json=True)
        try:
            j = JsonObject(body, where)
            values = (j.integer("desired_vcpus", None, 2**32 - 1), j.integer("desired_ram", None),
                      j.integer("desired_balloon", None))
            j.close()
        except ConfigError as e:
            raise ApiError(400, "Error from API", "The VM could not be resized", str(e)) from e
        self.vmm.resize(*values)

    def _add_device(self, device_type, body):
        try:
            config = device_type.from_json(body)
        except ConfigError as e:
            raise ApiError(400, "Error from API", "The device could not be added", str(e)) from e
        result = self.vmm.add_device(device_type, config)
        return None if result is None else result

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
            if result is None:
                resp.status = falcon.HTTP_204
            else:
                resp.status = falcon.HTTP_200
                resp.data = json.dumps(result).encode()
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
        return handler(body)

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
    return app
