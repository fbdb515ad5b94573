"""``ov-llm-server doctor``: the command line of the doctor."""

from __future__ import annotations

import argparse
import json
import sys

from ..settings import Settings
from .diagnose import diagnose
from .probe import DEFAULT_PROMPT

EXIT_USABLE, EXIT_UNUSABLE = 0, 1

DESCRIPTION = """\
Check that this host can serve on OV_DEVICE: the OS, OpenVINO and its devices, the Intel
compute runtime and its known-bad combinations, the GPU's device nodes and whether this user
may open them, and a functional probe (a small model, greedy, on the device and on the CPU:
the same answer?). Exits 1, with the remedy, when OV_DEVICE cannot serve. Run it as the
service sees it (its user, groups and sandbox) with: sudo ov-server-doctor
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--quick", action="store_true", help="no functional probe (about two seconds)"
    )
    parser.add_argument(
        "--probe-model",
        metavar="NAME|PATH",
        help="registry name or model path to probe (default: the smallest registry model the "
        "service runs on a GPU)",
    )
    parser.add_argument(
        "--probe-device",
        metavar="DEVICE",
        help="device to probe on (default: where the service runs that model)",
    )
    parser.add_argument("--probe-prompt", default=DEFAULT_PROMPT, help=argparse.SUPPRESS)
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds OpenVINO gets to list its devices (default 60)",
    )
    parser.add_argument(
        "--probe-timeout",
        type=float,
        default=600.0,
        help="seconds each probe run gets, compile included (default 600)",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    report = diagnose(
        settings,
        quick=args.quick,
        probe_model=args.probe_model,
        probe_device=args.probe_device,
        prompt=args.probe_prompt,
        timeout=args.timeout,
        probe_timeout=args.probe_timeout,
    )
    if args.json:
        sys.stdout.write(json.dumps(report.to_dict(), indent=2) + "\n")
    else:
        sys.stdout.write(report.render())
    return EXIT_USABLE if report.verdict.usable else EXIT_UNUSABLE
