"""``ov-convert-model``: convert models dropped into the models root and keep the registry.

ov-convert-model NAME [NAME ...]      convert (the main form; same as ``convert NAME``)
ov-convert-model --all                convert every unconverted model in the root
ov-convert-model list                 show the registry
ov-convert-model remove NAME          drop an entry (``--delete-files`` removes its folder)
ov-convert-model verify               check every entry: files complete, loads
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from pydantic import ValidationError

from ov_llm_server.convert.export import (
    DEFAULT_GROUP_SIZE,
    DEFAULT_TASK,
    WEIGHT_FORMATS,
    ConversionError,
    ExportOptions,
    MissingExtraError,
    WeightFormat,
)
from ov_llm_server.convert.workflow import (
    Layout,
    convert,
    discover_sources,
    entry_exists,
    leftover_temporaries,
    plan_conversion,
    registry_entries,
    remove_entry,
    unregistered_outputs,
    verify_all,
)
from ov_llm_server.placement import int4_warning
from ov_llm_server.registry import resolve_model_path
from ov_llm_server.settings import Settings
from ov_llm_server.textutil import one_line

log = logging.getLogger("ov_llm_server.convert")

PROG = "ov-convert-model"
COMMANDS = ("convert", "list", "remove", "verify")
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _weight_formats(text: str) -> list[WeightFormat]:
    formats: list[WeightFormat] = []
    for item in text.split(","):
        item = item.strip()
        for known in WEIGHT_FORMATS:
            if item == known:
                formats.append(known)
                break
        else:
            raise argparse.ArgumentTypeError(f"{item!r} is not one of {', '.join(WEIGHT_FORMATS)}")
    return formats


def _ratio(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError("ratio must be in (0, 1]")
    return value


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--models-dir",
        type=Path,
        help="models root (default: OV_MODELS_DIR or ~/models)",
    )
    parser.add_argument(
        "--registry",
        type=Path,
        help="registry file (default: OV_REGISTRY_PATH or <models-dir>/converted_models/"
        "registry.json)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")


def build_parser() -> dict[str, argparse.ArgumentParser]:
    conv = argparse.ArgumentParser(
        prog=PROG,
        description="Convert Hugging Face (or GGUF) models in the models root to OpenVINO IR, "
        "register them as NAME-<weight format> and move the originals to og_models.",
        epilog="Other commands: list, remove NAME [--delete-files], verify. "
        "A model called like a command: ov-convert-model convert NAME.",
    )
    conv.add_argument("names", nargs="*", metavar="NAME", help="folder (or .gguf) in the root")
    conv.add_argument("--all", action="store_true", help="every unconverted model in the root")
    conv.add_argument(
        "--weight-format",
        type=_weight_formats,
        default=["int8"],
        metavar="FORMAT[,FORMAT]",
        help="int8 (default, the production format on the iGPU), fp16 or int4; "
        "several comma-separated formats convert each in turn",
    )
    conv.add_argument(
        "--task",
        default=None,
        help="export task; detected by default: text-classification for a "
        "*ForSequenceClassification model (a reranker), feature-extraction for a "
        f"sentence-transformers folder (an embedder), else {DEFAULT_TASK}",
    )
    conv.add_argument(
        "--group-size",
        type=int,
        default=DEFAULT_GROUP_SIZE,
        help="int4 group size; reduced automatically to one that divides the model's layer "
        f"widths (default {DEFAULT_GROUP_SIZE}; -1 for per-channel)",
    )
    conv.add_argument(
        "--ratio", type=_ratio, default=1.0, help="int4: share of layers in 4 bit (default 1.0)"
    )
    conv.add_argument("--sym", action="store_true", help="symmetric int4/int8 quantisation")
    conv.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run the model repository's own Python code (only for models you trust)",
    )
    conv.add_argument("--force", action="store_true", help="replace an existing conversion")
    conv.add_argument("--dry-run", action="store_true", help="show what would happen, do nothing")
    _common(conv)

    listing = argparse.ArgumentParser(prog=f"{PROG} list", description="Show the registry.")
    listing.add_argument("--json", action="store_true", help="print the registry entries as JSON")
    _common(listing)

    remove = argparse.ArgumentParser(prog=f"{PROG} remove", description="Drop registry entries.")
    remove.add_argument("names", nargs="+", metavar="NAME", help="registry name, e.g. x-int8")
    remove.add_argument(
        "--delete-files",
        action="store_true",
        help="also delete the converted folder (only below converted_models)",
    )
    _common(remove)

    verify = argparse.ArgumentParser(
        prog=f"{PROG} verify",
        description="Check every registry entry: path exists, files complete, model loads.",
    )
    verify.add_argument("--no-load", action="store_true", help="skip loading with openvino_genai")
    verify.add_argument("--device", default="CPU", help="device to load on (default CPU)")
    _common(verify)
    return {"convert": conv, "list": listing, "remove": remove, "verify": verify}


def _setup_logging(quiet: bool) -> None:
    level = logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    ours = logging.getLogger("ov_llm_server")
    ours.handlers[:] = [handler]
    ours.setLevel(level)
    ours.propagate = False
    if quiet:  # the libraries' own chatter too (read when they are imported, later)
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _fail(message: str, err: TextIO) -> None:
    err.write(f"{PROG}: error: {message}\n")
    err.flush()


def _layout(args: argparse.Namespace) -> Layout:
    models_dir: Path | None = args.models_dir
    registry: Path | None = args.registry
    return Layout.from_settings(Settings(), models_dir=models_dir, registry_path=registry)


def _model_name(text: str) -> str:
    """What shell completion gives (``benny-clean/``, ``smol.gguf``) is the model's name."""
    name = text.rstrip("/")
    return name[: -len(".gguf")] if name.endswith(".gguf") else name


def run_convert(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    layout = _layout(args)
    names: list[str] = list(dict.fromkeys(_model_name(n) for n in args.names))
    if args.all:
        names += [n for n in discover_sources(layout) if n not in names]
        if not names:
            log.info("nothing to convert in %s", layout.models_dir)
            return EXIT_OK
    if not names:
        _fail("name a model to convert, or use --all", err)
        return EXIT_USAGE
    formats: list[WeightFormat] = list(dict.fromkeys(args.weight_format))
    warning = int4_warning(Settings()) if "int4" in formats else None
    if warning:
        err.write(f"{PROG}: warning: {warning}\n")
    failures = 0
    for name in names:
        for weight_format in formats:
            options = ExportOptions(
                weight_format=weight_format,
                task=args.task,
                group_size=args.group_size,
                ratio=args.ratio,
                sym=args.sym,
                trust_remote_code=args.trust_remote_code,
            )
            try:
                if args.dry_run:
                    out.write(plan_conversion(layout, name, options, force=args.force).describe())
                    out.write("\n")
                    continue
                result = convert(layout, name, options, force=args.force)
            except MissingExtraError as exc:
                _fail(str(exc), err)
                return EXIT_FAILED
            except ConversionError as exc:
                _fail(f"{name} ({weight_format}): {one_line(exc)}", err)
                failures += 1
                continue
            except Exception as exc:  # an unexpected bug still ends in one line, not a trace
                log.debug("conversion failed", exc_info=True)
                _fail(f"{name} ({weight_format}): {type(exc).__name__}: {one_line(exc)}", err)
                failures += 1
                continue
            for warning in result.warnings:
                err.write(f"{PROG}: warning: {name}: {warning}\n")
            out.write(
                f"{result.plan.registry_name}: {result.plan.target} ({result.seconds:.1f} s)\n"
            )
            if result.plan.source.format == "gguf":
                break  # a GGUF has one format: its own
    return EXIT_FAILED if failures else EXIT_OK


def run_list(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    layout = _layout(args)
    entries = registry_entries(layout)
    if args.json:
        data = {name: e.model_dump(mode="json", exclude_none=True) for name, e in entries.items()}
        out.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
        return EXIT_OK
    if not entries:
        out.write(f"no models in {layout.registry_path}\n")
        return EXIT_OK
    rows = [("NAME", "FORMAT", "TASK", "STATE", "PATH")]
    for name, entry in sorted(entries.items()):
        state = "ok" if entry_exists(layout, entry) else "MISSING"
        path = str(resolve_model_path(layout.registry_path, entry))
        rows.append((name, entry.weight_format, entry.task, state, path))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        out.write("  ".join([*cells, row[4]]) + "\n")
    return EXIT_OK


def run_remove(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    layout = _layout(args)
    failures = 0
    for name in args.names:
        try:
            remove_entry(layout, name, delete_files=args.delete_files)
        except ConversionError as exc:
            _fail(one_line(exc), err)
            failures += 1
            continue
        out.write(f"removed {name}\n")
    return EXIT_FAILED if failures else EXIT_OK


def run_verify(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    layout = _layout(args)
    checks = verify_all(layout, load=not args.no_load, device=args.device)
    for check in checks:
        status = "ok" if check.ok else "FAIL"
        details = "; ".join(check.problems + check.notes)
        out.write(
            f"{status:4}  {check.name}  {check.path}{'  (' + details + ')' if details else ''}\n"
        )
    for leftover in leftover_temporaries(layout):
        out.write(f"note  leftover temporary folder of an interrupted conversion: {leftover}\n")
    for orphan in unregistered_outputs(layout, registry_entries(layout)):
        out.write(f"note  converted but not in the registry: {orphan}\n")
    bad = [c.name for c in checks if not c.ok]
    if bad:
        _fail(f"{len(bad)} of {len(checks)} entries failed: {', '.join(bad)}", err)
        return EXIT_FAILED
    out.write(f"{len(checks)} entries ok\n")
    return EXIT_OK


RUNNERS = {"convert": run_convert, "list": run_list, "remove": run_remove, "verify": run_verify}


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    command = "convert"
    if args_list and args_list[0] in COMMANDS:
        command = args_list.pop(0)
    parser = build_parser()[command]
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # --help, or a usage error argparse already explained
        return int(exc.code or 0)
    _setup_logging(args.quiet)
    try:
        return RUNNERS[command](args, sys.stdout, sys.stderr)
    except ValidationError as exc:
        _fail(f"invalid OV_* setting: {one_line(exc)}", sys.stderr)
        return EXIT_USAGE
    except ConversionError as exc:
        _fail(one_line(exc), sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        _fail("interrupted; nothing half-converted was left behind", sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
