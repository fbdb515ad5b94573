"""One doctor run: gather the facts, list OpenVINO's devices in a child, probe, judge."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from ..placement import choose_device
from ..registry import RegistryError, read_registry
from ..settings import Settings
from .facts import HOST, Paths, gather
from .isolation import run_child
from .probe import DEFAULT_PROMPT, choose_target, run_probe
from .report import Report
from .verdict import Finding, OpenVinoDevices, device_available, judge


def list_devices(timeout: float) -> OpenVinoDevices:
    outcome = run_child(["devices"], timeout)
    if outcome.data is None or outcome.error:
        return OpenVinoDevices(error=outcome.error, crashed_by=outcome.crashed_by)
    return OpenVinoDevices(
        devices=list(outcome.data.get("devices", [])),
        plugins=dict(outcome.data.get("plugins", {})),
        build=outcome.data.get("openvino_build"),
    )


def diagnose(
    settings: Settings,
    *,
    quick: bool = False,
    probe_model: str | None = None,
    probe_device: str | None = None,
    prompt: str = DEFAULT_PROMPT,
    timeout: float = 60.0,
    probe_timeout: float = 600.0,
    paths: Paths = HOST,
) -> Report:
    started = time.monotonic()
    checked_at = datetime.now(UTC).isoformat(timespec="seconds")
    facts = gather(paths)
    devices = list_devices(timeout)
    registry_finding: Finding | None = None
    try:
        entries = read_registry(settings.registry_path).models
    except RegistryError as exc:
        entries = {}
        registry_finding = Finding("registry-unusable", "warning", str(exc))
    models = []
    for name, entry in sorted(entries.items()):
        placement = choose_device(entry, settings)
        models.append(
            {
                "name": name,
                "weight_format": entry.weight_format,
                "device": placement.device,
                "reason": placement.reason,
            }
        )

    probe = None
    probe_note: str | None = "--quick"
    if not quick:
        target = choose_target(settings, entries, probe_model, probe_device)
        if isinstance(target, str):
            probe_note = target
        elif probe_device is None and not device_available(target.device, devices.names):
            probe_note = f"{target.model} runs on {target.device}, which OpenVINO does not list"
        else:
            probe = run_probe(target, settings, prompt=prompt, timeout=probe_timeout)
    findings, verdict = judge(settings, facts, devices, probe)
    if registry_finding is not None:
        findings.append(registry_finding)
    return Report(
        settings=settings,
        facts=facts,
        openvino=devices,
        models=models,
        probe=probe,
        probe_note=None if probe else probe_note,
        findings=findings,
        verdict=verdict,
        checked_at=checked_at,
        seconds=time.monotonic() - started,
    )
