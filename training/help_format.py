"""The help formatter of the training commands."""

from __future__ import annotations

import argparse


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Append the default only where the help text does not already explain it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help_text = action.help or ""
        # A flag's default (True for --no-progress) reads as the opposite of its effect.
        if "(default" in help_text or action.default is None or action.nargs == 0:
            return help_text
        return super()._get_help_string(action)
