"""`python -m tests.wit.slowed MODULE:FUNCTION SECONDS ARGS...`: the `wit ARGS` command with a
pause before every call of one of its functions, so that a test can act while a stage that
takes milliseconds (`wit merge-crawl` makes a few links) is surely under way. Everything
else is the real command."""

from __future__ import annotations

import functools
import importlib
import sys
import time

from wit.cli import main as wit_main


def slow_down(target: str, seconds: float) -> None:
    module_name, _, name = target.partition(":")
    module = importlib.import_module(module_name)
    original = getattr(module, name)

    @functools.wraps(original)
    def slowed(*args, **kwargs):
        time.sleep(seconds)
        return original(*args, **kwargs)

    setattr(module, name, slowed)


if __name__ == "__main__":
    target, seconds, *arguments = sys.argv[1:]
    slow_down(target, float(seconds))
    sys.exit(wit_main(arguments))
