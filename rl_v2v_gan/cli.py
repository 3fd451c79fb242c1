"""Command-line entry point: ``python main.py``, ``python -m rl_v2v_gan`` and ``rl-v2v-gan``.

Flags are generated from :class:`rl_v2v_gan.config.Config`, so every field is a flag with its
doc as help. User mistakes end in one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from typing import Any, Sequence

from .config import ARCH_FLAGS, DATA_FLAGS, LEGACY_ARCH, Config, field_docs, load_preset, make_config
from .errors import ConfigError, UserError

PROG = "rl-v2v-gan"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:  # one line, not usage + message
        raise ConfigError(message)


def _scalar_type(annotation: Any) -> Any:
    """The argparse type for a field annotation such as ``float`` or ``int | None``."""
    options = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    return options[0] if options[0] in (int, float, str) else str


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Unpaired video-to-video translation (RL-V2V-GAN).",
                     argument_default=argparse.SUPPRESS)
    hints = typing.get_type_hints(Config)
    for name, f in field_docs().items():
        meta = f.metadata
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f"{meta['doc']} (default: {default})"
        if hints[name] is bool:
            parser.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, help=help_text)
            continue
        kwargs: dict[str, Any] = {"help": help_text}
        for key in ("choices", "nargs", "metavar"):
            if key in meta:
                kwargs[key] = meta[key]
        kwargs["type"] = meta.get("type", _scalar_type(hints[name]))
        parser.add_argument(f"--{name}", **kwargs)
    return parser


def parse_config(argv: Sequence[str] | None = None) -> Config:
    """Parse flags (over an optional ``--config`` preset) into a validated Config.

    In eval, translate and export modes, architecture and data flags given neither on the command
    line nor in the preset take the values the run was trained with (its ``config.json``), so
    ``--checkpoint_name NAME`` is enough to use a trained model on its own data. With ``--model
    FILE``, translate takes them (and ``--direction``) from the generator file instead.
    """
    args = vars(build_parser().parse_args(argv))
    cfg = make_config(**args)
    if cfg.mode in ("eval", "translate", "export"):
        given = set(args) | (set(load_preset(cfg.config)) if cfg.config else set())
        if cfg.mode == "translate" and cfg.model:
            from .export import model_flags

            saved, keys = model_flags(cfg.model), ARCH_FLAGS + DATA_FLAGS + ("direction",)
        else:
            saved, keys = _run_config(cfg), ARCH_FLAGS + DATA_FLAGS
            if saved:  # a run saved before an architecture flag existed was trained without it
                saved = {**LEGACY_ARCH, **saved}
        adopted = {k: saved[k] for k in keys if k in saved and k not in given}
        if adopted:
            cfg = make_config(**{**args, **adopted})
    return cfg


def _run_config(cfg: Config) -> dict[str, Any]:
    try:
        return json.loads((cfg.run_dir / "config.json").read_text())
    except (OSError, ValueError):
        return {}


def run(cfg: Config) -> int:
    """Dispatch one mode. Imports are local so ``--help`` and config errors stay fast."""
    if cfg.mode == "prepare_data":
        from .data.factory import prepare_data

        prepare_data(cfg)
        return 0
    if cfg.mode == "train":
        from .train.loop import train

        return train(cfg)
    if cfg.mode == "eval":
        from .eval.evaluator import evaluate_run

        evaluate_run(cfg)
        return 0
    if cfg.mode == "report":
        from .eval.report import report_run

        report_run(cfg)
        return 0
    if cfg.mode == "export":
        from .export import export_generator

        export_generator(cfg)
        return 0
    from .translate import translate

    translate(cfg)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        cfg = parse_config(argv)
        return run(cfg)
    except UserError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
