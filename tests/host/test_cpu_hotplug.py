"""vm.resize of a running VM's CPUs on this host's KVM, with the tiny guest, which runs
no ACPI: it never sees a new CPU's _STA and never ejects, so these tests are the guest
that never lets go (the VMM must stay responsive, answer 429, and still shut down)."""

import json
import os
import time

import pytest

from plugvm.testing.threads import threads_become, vcpu_threads
from plugvm.testing.tiny_kernel import bzimage
from test_api import Plugvm, errors, vm_body, wait_serial


@pytest.fixture
def running(tmp_path):
    kernel = tmp_path / "spin.bzImage"
    kernel.write_bytes(bzimage(b"tiny guest up\n", poweroff=False))
    p = Plugvm(tmp_path)
    body = vm_body(kernel, tmp_path, cpus={"boot_vcpus": 1, "max_vcpus": 3}, console={"mode": "Off"})
    assert p.put("vm.create", body).status_code == 204
    assert p.put("vm.boot").status_code == 204
    wait_serial(tmp_path, 1)
    yield p
    p.close()


def resize(p, vcpus, wait=None):
    return p.client.put("vm.resize", content=json.dumps({"desired_vcpus": vcpus, "desired_ram": None,
                                                         "desired_balloon": None}),
                        headers={"Prefer": f"wait={wait}"} if wait is not None else {})


def test_resize_up_starts_named_threads_and_down_waits_for_an_eject_that_never_comes(running):
    pid = running.proc.pid
    assert threads_become(pid, ["vcpu0"]) == ["vcpu0"]
    assert resize(running, 3).status_code == 204
    assert threads_become(pid, ["vcpu0", "vcpu1", "vcpu2"]) == ["vcpu0", "vcpu1", "vcpu2"]
    assert running.get("vm.info").json()["config"]["cpus"]["boot_vcpus"] == 3
    assert resize(running, 3).status_code == 204                 # the same count: nothing to do
    assert resize(running, 1).status_code == 204
    # The guest never ejects: a further resize is refused with 429, and nothing changes.
    for vcpus in (2, 3, 1):
        refused = resize(running, vcpus)
        assert refused.status_code == 429 and "pending" in errors(refused)[-1]
        # Kata retries a resize only when the status text says so (ch sends no reason phrase).
        assert refused.reason_phrase == "Too Many Requests"
    assert running.get("vm.info").json()["config"]["cpus"]["boot_vcpus"] == 1
    assert vcpu_threads(pid) == ["vcpu0", "vcpu1", "vcpu2"]      # they stop when ejected
    start = time.monotonic()
    assert running.get("vmm.ping").status_code == 200 and time.monotonic() - start < 5
    assert running.put("vm.shutdown").status_code == 204
    assert vcpu_threads(pid) == []
    # Booted again, the VM has the count the user left it with.
    assert running.put("vm.boot").status_code == 204
    assert threads_become(pid, ["vcpu0"]) == ["vcpu0"]


def test_resize_is_validated_as_cloud_hypervisor_does(running):
    before = running.get("vm.info").json()
    for vcpus in (0, 4, -1):
        assert resize(running, vcpus).status_code == 400
    assert running.get("vm.info").json() == before


def test_a_wait_for_a_guest_that_never_looks_runs_out_with_202(running):
    start = time.monotonic()
    answer = resize(running, 2, wait=1)
    assert answer.status_code == 202 and answer.json() == {"resizing": True}
    assert 1 <= time.monotonic() - start < 10
    assert answer.headers["Preference-Applied"] == "wait=1"


def test_affinity_pins_each_vcpu_thread_and_a_missing_host_cpu_is_refused(tmp_path):
    kernel = tmp_path / "spin.bzImage"
    kernel.write_bytes(bzimage(b"tiny guest up\n", poweroff=False))
    p = Plugvm(tmp_path)
    try:
        host = sorted(os.sched_getaffinity(0))
        body = vm_body(kernel, tmp_path, console={"mode": "Off"},
                       cpus={"boot_vcpus": 1, "max_vcpus": 2, "affinity": [{"vcpu": 0, "host_cpus": [host[-1]]},
                                                                            {"vcpu": 1, "host_cpus": [host[0]]}]})
        assert p.put("vm.create", body).status_code == 204
        assert p.put("vm.boot").status_code == 204
        wait_serial(tmp_path, 1)

        def allowed(name):
            threads_become(p.proc.pid, sorted({"vcpu0", name}))
            for task in os.listdir(f"/proc/{p.proc.pid}/task"):
                with open(f"/proc/{p.proc.pid}/task/{task}/status") as f:
                    status = dict(line.split(":\t", 1) for line in f if ":\t" in line)
                if status["Name"].strip() == name:
                    return status["Cpus_allowed_list"].strip()
        assert allowed("vcpu0") == str(host[-1])
        assert resize(p, 2).status_code == 204              # a hot-added vCPU is pinned too
        assert allowed("vcpu1") == str(host[0])
        assert p.put("vm.shutdown").status_code == 204 and p.put("vm.delete").status_code == 204
        body["cpus"]["affinity"] = [{"vcpu": 0, "host_cpus": [4095]}]
        assert p.put("vm.create", body).status_code == 204
        refused = p.put("vm.boot")
        assert refused.status_code == 500 and "4095" in errors(refused)[-1]
        assert p.get("vm.info").json()["state"] == "Created"
    finally:
        p.close()
