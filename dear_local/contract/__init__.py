"""The ranking contract: one prompt, one decoding profile, one parser for every backend."""

from .parser import STATUSES, Parsed, is_complete, parse_ranking
from .profile import DECODING_MODES, Profile
from .templates import Template, get_template, list_templates
from .windows import first_window, window_spans

__all__ = [
    "DECODING_MODES",
    "STATUSES",
    "Parsed",
    "Profile",
    "Template",
    "first_window",
    "get_template",
    "is_complete",
    "list_templates",
    "parse_ranking",
    "window_spans",
]
