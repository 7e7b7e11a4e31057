"""Whether real guests need L1: hardware KVM runs them here, PVM does not."""

from plugvm.testing import hostkvm


def test_mode_override_wins(monkeypatch):
    monkeypatch.setenv(hostkvm.MODE_ENV, "direct")
    assert hostkvm.needs_l1() is False
    monkeypatch.setenv(hostkvm.MODE_ENV, "l1")
    assert hostkvm.needs_l1() is True


def test_inside_the_lab_no_further_l1(monkeypatch):
    monkeypatch.delenv(hostkvm.MODE_ENV, raising=False)
    monkeypatch.setenv(hostkvm.IN_LAB_ENV, "l1")
    assert hostkvm.needs_l1() is False


def test_this_host_is_classified(monkeypatch):
    monkeypatch.delenv(hostkvm.MODE_ENV, raising=False)
    monkeypatch.delenv(hostkvm.IN_LAB_ENV, raising=False)
    kind = hostkvm.kvm_kind()
    assert kind in ("hardware", "pvm", "none")
    assert hostkvm.needs_l1() == (kind != "hardware")
