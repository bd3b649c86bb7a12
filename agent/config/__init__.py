"""Configuration: the integration guide's endpoint format, validated strictly (DESIGN §3 Config)."""

from agent.config.loader import ConfigError, LoadedConfig, load_config, load_config_text

__all__ = ["ConfigError", "LoadedConfig", "load_config", "load_config_text"]
