"""Configuration: YAML into pydantic models (:mod:`.schema`, :mod:`.mqtt`), loaded with
file:line errors (:mod:`.loader`). Import everything from here:
``from edge_ser.config import Config, load_config``.
"""

from edge_ser.config.loader import load_config, parse_config
from edge_ser.config.mqtt import MqttConfig, TlsConfig
from edge_ser.config.schema import (
    DEFAULT_MODEL,
    REPO_ROOT,
    AggregateConfig,
    Budgets,
    Config,
    LoggingConfig,
    MemoryBudget,
    ModelConfig,
    SourceConfig,
    ThermalBudget,
    VadConfig,
    WindowConfig,
)

__all__ = [
    "SourceConfig",
    "VadConfig",
    "WindowConfig",
    "ModelConfig",
    "AggregateConfig",
    "TlsConfig",
    "MqttConfig",
    "MemoryBudget",
    "ThermalBudget",
    "Budgets",
    "LoggingConfig",
    "Config",
    "DEFAULT_MODEL",
    "REPO_ROOT",
    "load_config",
    "parse_config",
]
