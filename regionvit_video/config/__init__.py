"""Config defaults (:mod:`~regionvit_video.config.defaults`), loading and validation
(:mod:`~regionvit_video.config.load`)."""
from regionvit_video.config.defaults import get_cfg
from regionvit_video.config.load import (ConfigError, load_config, merge_overrides, parse_args, save_config,
                                         validate_config)

__all__ = ["ConfigError", "get_cfg", "load_config", "merge_overrides", "parse_args", "save_config", "validate_config"]
