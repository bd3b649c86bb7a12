"""Configuration: the integration guide's endpoint format, validated strictly."""

from agent.config.loader import ConfigError, LoadedConfig, load_config, load_config_text

__all__ = ["ConfigError", "LoadedConfig", "load_config", "load_config_text"]
