"""ConfigTests: option text → config → JSON → config round-trips, and bad input
(unknown keys on the command line, bad values, arbitrary text and JSON) raises only
ConfigError, naming the option and the key; unknown JSON fields are ignored."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from plugvm.config import json_fields
from plugvm.config.errors import ConfigError
from plugvm.testing.conformance import capabilities as caps
from plugvm.testing.conformance.fixtures import substitute

UNKNOWN_KEY = "conformance_no_such_key"
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                       max_size=3), max_leaves=8)


def _fuzz_settings(examples: int):
    return settings(max_examples=examples, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


class ConfigTests:
    """The type's parsers: round trips, and refusals that are ConfigErrors naming what was wrong."""

    def test_option_text_round_trips_through_json(self, device_type, option_texts, capabilities):
        caps.require(capabilities, caps.OPTIONS, device_type.name)
        assert option_texts, f"device type {device_type.name!r} declares 'options' but the `valid_options` fixture " \
                             f"gives none"
        for text in option_texts:
            config = device_type.parse(text)
            where = f"device type {device_type.name!r}: {device_type.cli_option} {text!r}"
            assert dataclasses.is_dataclass(config), f"{where}: the config is a {type(config).__name__}, not a dataclass"
            # The core shares configs between threads and the VM config; a frozen one cannot change under it.
            assert config.__dataclass_params__.frozen, f"{where}: the config dataclass is not frozen"
            assert hasattr(config, "id"), f"{where}: the config has no `id` attribute"
            body = config.to_json()
            try:
                wire = json.loads(json.dumps(body))
            except (TypeError, ValueError) as e:
                pytest.fail(f"{where}: to_json() gives {body!r}, which is not JSON: {e}", pytrace=False)
            again = device_type.from_json(wire)
            assert again == config, f"{where}: from_json(to_json()) gives {again!r}, not {config!r}"
            assert again.to_json() == body, f"{where}: to_json() of the round trip differs: {again.to_json()!r}"

    def test_hot_added_configs_take_an_id_and_a_slot(self, device_type, option_texts, capabilities):
        # The core records a hot-added device with dataclasses.replace(config, id=, pci_device_id=)
        # and must get it back from JSON after a reboot.
        caps.require(capabilities, caps.HOTPLUG, device_type.name)
        caps.require(capabilities, caps.OPTIONS, device_type.name)
        for text in option_texts:
            where = f"device type {device_type.name!r}: {device_type.cli_option} {text!r}"
            try:
                placed = dataclasses.replace(device_type.parse(text), id="conformance7", pci_device_id=7)
            except TypeError as e:
                pytest.fail(f"{where}: the config has no id and pci_device_id fields the core can set: {e}",
                            pytrace=False)
            again = device_type.from_json(json.loads(json.dumps(placed.to_json())))
            assert (again.id, again.pci_device_id) == ("conformance7", 7), (
                f"{where}: id and pci_device_id do not survive to_json()/from_json(): {placed.to_json()!r}")

    def test_invalid_options_raise_config_error_naming_them(self, device_type, invalid_options, backend, capabilities):
        caps.require(capabilities, caps.OPTIONS, device_type.name)
        if not invalid_options:
            pytest.skip("the `invalid_options` fixture gives none")
        for text, expected in invalid_options:
            text = substitute(text, backend)
            where = f"device type {device_type.name!r}: {device_type.cli_option} {text!r}"
            with _config_error(where) as caught:
                config = device_type.parse(text)
            assert caught.error is not None, f"{where} was accepted ({config!r}); it should be refused naming " \
                                             f"{expected!r}"
            message = str(caught.error)
            assert expected in message, f"{where}: the ConfigError {message!r} does not say {expected!r}"
            assert message.startswith(device_type.cli_option), (
                f"{where}: the ConfigError {message!r} does not start with the option {device_type.cli_option}")

    def test_invalid_json_raises_config_error_naming_it(self, device_type, invalid_json, capabilities):
        caps.require(capabilities, caps.OPTIONS, device_type.name)
        if not invalid_json:
            pytest.skip("the `invalid_json` fixture gives none")
        for body, expected in invalid_json:
            where = f"device type {device_type.name!r}: JSON {body!r}"
            with _config_error(where) as caught:
                device_type.from_json(body)
            assert caught.error is not None and expected in str(caught.error), (
                f"{where}: expected a ConfigError saying {expected!r}, got {caught.error!r}")

    def test_unknown_keys_are_refused_on_the_command_line_and_ignored_in_json(self, device_type, option_texts,
                                                                              capabilities, monkeypatch):
        # The command line is strict, as cloud-hypervisor's; its JSON API ignores fields it
        # does not know (serde), because real clients send fields of other versions.
        caps.require(capabilities, caps.OPTIONS, device_type.name)
        for text in option_texts[:1]:
            bad = f"{text},{UNKNOWN_KEY}=1" if text else f"{UNKNOWN_KEY}=1"
            with _config_error(f"device type {device_type.name!r}: {device_type.cli_option} {bad!r}") as caught:
                device_type.parse(bad)
            assert caught.error is not None and UNKNOWN_KEY in str(caught.error), (
                f"device type {device_type.name!r}: {device_type.cli_option} {bad!r}: the unknown key is not refused "
                f"by name (got {caught.error!r})")
            config = device_type.parse(text)
            body = {**config.to_json(), UNKNOWN_KEY: 1}
            where = f"device type {device_type.name!r}: JSON {body!r}"
            monkeypatch.setattr(json_fields, "_warned", set())      # "once" is per process: none warned yet
            with _config_error(where) as caught, capture_logs() as logs:
                again = device_type.from_json(body)
            assert caught.error is None, (f"{where}: the unknown field is refused ({caught.error}); the JSON API "
                                          f"ignores it, as cloud-hypervisor's serde does")
            assert again == config, f"{where}: the unknown field changed the config: {again!r}, not {config!r}"
            # Read through plugvm.config.json_fields.JsonObject, whose close() warns once per field.
            assert any(str(e.get("field", "")).endswith(f".{UNKNOWN_KEY}") for e in logs), (
                f"{where}: the ignored field was not logged as a warning (read the body with "
                f"plugvm.config.json_fields.JsonObject and close() it)")

    def test_arbitrary_text_and_json_raise_only_config_error(self, device_type, option_texts, capabilities):
        caps.require(capabilities, caps.OPTIONS, device_type.name)
        seeds = option_texts or [""]

        @_fuzz_settings(60)
        @given(st.sampled_from(seeds), st.text(alphabet=",=[]:;/ ab01x\x00\u00e9", max_size=24), JSON_VALUES)
        def check(seed, noise, body):
            for text in (noise, seed + noise, seed + "," + noise):
                with _config_error(f"device type {device_type.name!r}: {device_type.cli_option} {text!r}"):
                    device_type.parse(text)
            with _config_error(f"device type {device_type.name!r}: JSON {body!r}"):
                device_type.from_json(body)
        check()


class _Caught:
    error: ConfigError | None = None


class _config_error:
    """A context that records a ConfigError and fails the test, naming the input, on any
    other exception: the CLI and the API turn only ConfigError into their one-line error
    and 400."""

    def __init__(self, where: str):
        self.where = where
        self.caught = _Caught()

    def __enter__(self) -> _Caught:
        return self.caught

    def __exit__(self, kind, error, tb) -> bool:
        if error is None:
            return False
        if isinstance(error, ConfigError):
            self.caught.error = error
            return True
        if isinstance(error, Exception):
            raise AssertionError(f"{self.where}: raised {type(error).__name__}: {error} (only ConfigError may come "
                                 f"out of a parser)") from error
        return False

