"""The command line of every command (`wit` stages, `train.evaluate`, `train.search`), the
user's contract with them: flags generated from a config dataclass, and the config built
back from the parsed flags. Each field is one flag (`--field-name`, or the metadata's
`flag`; with `positional: True` an argument), its help and metavar in the field's
metadata; a field without a default is required; `cli: False` hides one."""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import types
import typing
from functools import partial
from typing import Any, Callable, TypeVar

from wit.formats.errors import WitError
from wit.formats.processes import lead

C = TypeVar("C")


def option(default: Any = dataclasses.MISSING, help: str | None = None, **metadata: Any) -> Any:
    """A config field with its command-line help (and `flag`, `metavar`, `separator`, `cli`)."""
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


def add_flags(parser: argparse.ArgumentParser, config: type) -> None:
    hints = typing.get_type_hints(config)
    for f in dataclasses.fields(config):
        if f.metadata.get("cli", True) is False:
            continue
        kind, kwargs = hints[f.name], {"dest": f.name, "help": f.metadata.get("help")}
        if "metavar" in f.metadata:
            kwargs["metavar"] = f.metadata["metavar"]
        if f.metadata.get("positional"):
            del kwargs["dest"]
            parser.add_argument(f.name, type=_scalar(kind), **kwargs)
            continue
        if f.default is dataclasses.MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = f.default
        if kind is bool:   # on by default: --flag / --no-flag
            kwargs["action"] = argparse.BooleanOptionalAction if f.default is True else "store_true"
        elif typing.get_origin(kind) is tuple:
            separator = f.metadata.get("separator")
            if separator:
                kwargs["type"] = lambda value, s=separator: tuple(v for v in value.split(s) if v)
            else:   # repeatable: `--flag A B --flag C` gives (A, B, C)
                kwargs.update(nargs="+", action="extend", default=None)
        else:
            kwargs["type"] = _scalar(kind)
        if kwargs.get("help") and kwargs.get("default") not in (None, False, True, (), ""):
            kwargs["help"] += " (default: %(default)s)"
        parser.add_argument("--" + f.metadata.get("flag", f.name.replace("_", "-")), **kwargs)


def _scalar(kind: Any) -> Callable[[str], Any]:
    """int, finite float or str, also out of `X | None`."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        kind = next(k for k in typing.get_args(kind) if k is not type(None))
    return finite_float if kind is float else kind


def finite_float(value: str) -> float:
    """A float flag: `nan` and `inf` are refused like any other bad number."""
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(value)
    return number


finite_float.__name__ = "float"   # argparse names the type in its error: "invalid float value: 'nan'"


def config_from(args: argparse.Namespace, config: type[C]) -> C:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(config)
              if getattr(args, f.name, None) is not None or f.default is None}
    return config(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def run_command(prog: str, description: str | None, config: type[C], body: Callable[[C], int],
                argv: list[str] | None = None) -> int:
    """A command whose flags are generated from `config` (`train.evaluate`, `train.search`):
    the flags parsed and the config built (a bad value: one line, exit status 1), then
    `body(config)` as the leader of its processes (`wit.formats.processes.lead`)."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flags(parser, config)
    args = parser.parse_args(argv)
    try:
        built = config_from(args, config)
    except WitError as e:
        print(f"{prog}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    return lead(prog, partial(body, built), resumes=False)
