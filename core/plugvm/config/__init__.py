"""plugvm's configuration: the command line (cloud-hypervisor's syntax) and the JSON body of
a VM config, into the same frozen dataclasses. Anything unknown or inconsistent is a
ConfigError whose message names the option (or JSON field) and the bad value."""

from plugvm.config.api_socket import ApiSocketConfig
from plugvm.config.cli import CliConfig, parse_cli
from plugvm.config.console import ConsoleConfig, ConsoleMode
from plugvm.config.cpus import CoreScheduling, CpuAffinity, CpuFeatures, CpusConfig, CpuTopology
from plugvm.config.errors import ConfigError
from plugvm.config.memory import MemoryConfig
from plugvm.config.payload import PayloadConfig
from plugvm.config.vm import VmConfig

__all__ = ["ApiSocketConfig", "CliConfig", "ConfigError", "ConsoleConfig", "ConsoleMode", "CoreScheduling",
           "CpuAffinity", "CpuFeatures", "CpuTopology", "CpusConfig", "MemoryConfig",
           "PayloadConfig", "VmConfig", "parse_cli"]
