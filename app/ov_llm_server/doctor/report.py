"""The doctor's report: one structure, written as JSON (``--json``) or as text for a person."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..settings import Settings
from .facts import SystemFacts
from .knowledge import classify_device_id, generation_of_architecture
from .probe import ProbeResult
from .verdict import Finding, OpenVinoDevices, Verdict, installed_runtimes

SCHEMA_VERSION = 1


@dataclass
class Report:
    settings: Settings
    facts: SystemFacts
    openvino: OpenVinoDevices
    models: list[dict[str, str]]  # every registry model: name, weight_format, device, reason
    probe: ProbeResult | None
    probe_note: str | None  # why there is no probe
    findings: list[Finding]
    verdict: Verdict
    checked_at: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        facts = self.facts
        s = self.settings
        return {
            "schema": SCHEMA_VERSION,
            "checked_at": self.checked_at,
            "seconds": round(self.seconds, 2),
            "verdict": dataclasses.asdict(self.verdict),
            "findings": [finding_dict(f) for f in self.findings],
            "settings": {
                "device": s.device,
                "fallback_device": s.fallback_device,
                "int4_device": s.int4_device,
                "registry_path": str(s.registry_path),
                "model_path": str(s.model_path) if s.model_path else None,
                "cache_dir": str(s.cache_dir) if s.cache_dir else None,
            },
            "system": {
                "os": facts.os,
                "kernel": facts.kernel,
                "cpu": facts.cpu,
                "memory_gib": facts.memory_gib,
                "python": facts.python,
                "python_packages": facts.python_packages,
                "identity": dataclasses.asdict(facts.identity),
            },
            "gpu_hardware": [_node_dict(n) for n in facts.render_nodes],
            "pci_gpus": [_node_dict(g) for g in facts.pci_gpus],
            "kernel_cmdline": facts.kernel_cmdline,
            "i915_loaded": facts.i915_loaded,
            "runtime": {
                "packages": facts.debian_packages,
                "removed_with_config_left": facts.debian_leftovers,
                "opencl_drivers": [
                    {
                        "package": r.package,
                        "version": r.version,
                        "kind": r.kind,
                        "description": r.describe(),
                    }
                    for r in installed_runtimes(facts)
                ],
                "icd_files": [dataclasses.asdict(icd) for icd in facts.icd_files],
                "libraries": [dataclasses.asdict(lib) for lib in facts.gpu_libraries],
                "environment": facts.neo_environment,
            },
            "openvino": {
                "build": self.openvino.build,
                "error": self.openvino.error,
                "crashed_by": self.openvino.crashed_by,
                "plugins": self.openvino.plugins,
                "devices": [_device_dict(d) for d in self.openvino.devices],
            },
            "models": self.models,
            "probe": dataclasses.asdict(self.probe) if self.probe else {"skipped": self.probe_note},
        }

    def render(self) -> str:
        return "\n".join(_text(self)) + "\n"


def finding_dict(finding: Finding) -> dict[str, Any]:
    """``id`` (stable), ``severity``, ``message``, ``remedy`` (text), ``evidence``, and what to
    do for a machine: ``remedy_environment``, ``remedy_route``, ``remedy_command`` (or null).
    ``code`` is ``id`` under its first name."""
    return {"id": finding.id, **dataclasses.asdict(finding)}


def _node_dict(node: Any) -> dict[str, Any]:
    data = dataclasses.asdict(node)
    family = classify_device_id(node.device_id)
    data["platform"] = family.platform if family else None
    data["generation"] = family.generation if family else None
    return data


def _device_dict(device: dict[str, Any]) -> dict[str, Any]:
    props = device.get("properties", {})
    family = classify_device_id(props.get("GPU_DEVICE_ID"))
    architecture = props.get("GPU_UARCH_VERSION") or props.get("DEVICE_ARCHITECTURE")
    return {
        "name": device["name"],
        "full_name": props.get("FULL_DEVICE_NAME"),
        "type": props.get("DEVICE_TYPE"),
        "device_id": props.get("GPU_DEVICE_ID"),
        "architecture": props.get("DEVICE_ARCHITECTURE"),
        "platform": family.platform if family else None,
        "generation": family.generation if family else generation_of_architecture(architecture),
        "execution_units": props.get("GPU_EXECUTION_UNITS_COUNT"),
        "total_memory_bytes": props.get("GPU_DEVICE_TOTAL_MEM_SIZE"),
        "max_allocation_bytes": props.get("GPU_DEVICE_MAX_ALLOC_MEM_SIZE"),
        "capabilities": props.get("OPTIMIZATION_CAPABILITIES") or [],
        "driver_version": props.get("GPU_DRIVER_VERSION"),
    }


def _gib(value: Any) -> str:
    return f"{int(value) / 2**30:.1f} GiB" if isinstance(value, int) else "?"


def _row(label: str, value: str) -> str:
    return f"  {label:<18} {value}"


def _text(report: Report) -> list[str]:
    data = report.to_dict()
    system = data["system"]
    ident = report.facts.identity
    sandbox = [
        name
        for name, on in (
            ("no_new_privs", ident.no_new_privs),
            ("seccomp filter", ident.seccomp),
            ("no capabilities", ident.capabilities_dropped),
        )
        if on
    ]
    lines = [f"ov-llm-server doctor ({report.checked_at}, {report.seconds:.1f} s)", "", "System"]
    lines.append(_row("OS", f"{system['os']}, kernel {system['kernel']}"))
    lines.append(_row("CPU", f"{system['cpu']}, {system['memory_gib']} GiB"))
    packages = system["python_packages"]
    lines.append(
        _row(
            "OpenVINO",
            f"openvino {packages.get('openvino', '?')}, openvino-genai "
            f"{packages.get('openvino-genai', '?')} (Python {system['python']})",
        )
    )
    lines.append(
        _row(
            "running as",
            f"{ident.user} (groups {', '.join(ident.groups)})"
            + (f"; sandbox: {', '.join(sandbox)}" if sandbox else "")
            + (f"; cgroup {ident.cgroup}" if ident.cgroup else ""),
        )
    )

    lines += ["", "GPU hardware (render nodes)"]
    for node in data["gpu_hardware"]:
        kind = f"{node['platform']}, {node['generation']}" if node["platform"] else "unknown"
        where = "" if node["in_dev"] else " (not in /dev: hidden here)"
        access = f"access {node['access']}" if node["in_dev"] else ""
        lines.append(
            _row(
                node["name"],
                f"vendor {node['vendor_id']} device {node['device_id']} ({kind}), "
                f"driver {node['driver']}, group {node['group']} {access}{where}",
            )
        )
    if not data["gpu_hardware"]:
        lines.append("  none: no /dev/dri/renderD* node")
    for gpu in data["pci_gpus"]:
        kind = f"{gpu['platform']}, {gpu['generation']}" if gpu["platform"] else "unknown"
        lines.append(
            _row(
                f"PCI {gpu['address']}",
                f"vendor {gpu['vendor_id']} device {gpu['device_id']} ({kind}), "
                f"driver {gpu['driver'] or 'none'}",
            )
        )

    runtime = data["runtime"]
    lines += ["", "Compute runtime"]
    if runtime["packages"] is None:
        lines.append("  no dpkg here: packages unknown")
    else:
        for name, version in sorted(runtime["packages"].items()):
            lines.append(_row(name, version))
        if not runtime["packages"]:
            lines.append("  no GPU runtime packages installed")
        for name in runtime["removed_with_config_left"]:
            lines.append(_row(name, "removed, configuration files left"))
    for driver in runtime["opencl_drivers"]:
        lines.append(f"  -> {driver['description']}")
    for icd in runtime["icd_files"]:
        missing = " (missing)" if icd["library_exists"] is False else ""
        lines.append(_row("ICD file", f"{icd['path']} -> {icd['library']}{missing}"))
    for library in runtime["libraries"]:
        uncached = " (not in the linker cache)" if library["cached"] is False else ""
        lines.append(_row(library["soname"], f"{library['path']}{uncached}"))
    for key, value in runtime["environment"].items():
        lines.append(_row("environment", f"{key}={value}"))

    openvino = data["openvino"]
    lines += ["", "OpenVINO devices"]
    if openvino["error"]:
        lines.append(f"  listing failed: {openvino['error']}")
    for device in openvino["devices"]:
        details = [str(device["full_name"])]
        if device["device_id"]:
            details.append(f"id {device['device_id']}")
        if device["generation"]:
            details.append(str(device["generation"]))
        if device["architecture"]:
            details.append(str(device["architecture"]))
        if device["total_memory_bytes"] is not None:
            details.append(
                f"memory {_gib(device['total_memory_bytes'])}, largest allocation "
                f"{_gib(device['max_allocation_bytes'])}"
            )
        details.append(" ".join(device["capabilities"]))
        lines.append(_row(str(device["name"]), ", ".join(details)))
    for plugin, state in openvino["plugins"].items():
        if state.get("error"):
            lines.append(_row(f"{plugin} plugin", f"not loaded: {state['error']}"))

    if report.models:
        lines += ["", "Models (where the service runs each)"]
        for model in report.models:
            lines.append(
                _row(
                    model["name"],
                    f"{model['weight_format']} -> {model['device']}: {model['reason']}",
                )
            )

    lines += ["", "Functional probe"]
    probe = report.probe
    if probe is None:
        lines.append(f"  skipped: {report.probe_note}")
    else:
        lines.append(_row("model", f"{probe.model} ({probe.weight_format}) on {probe.device}"))
        lines.append(_row("prompt", repr(probe.prompt)))
        if probe.reference_text is not None:
            lines.append(_row("CPU says", repr(probe.reference_text)))
        if probe.device_text is not None:
            lines.append(_row(f"{probe.device} says", repr(probe.device_text)))
        lines.append(_row("result", probe.status + (f": {probe.error}" if probe.error else "")))

    if report.findings:
        lines += ["", "Findings"]
        for finding in report.findings:
            lines.append(f"  [{finding.severity}] {finding.id}: {finding.message}")
            if finding.remedy:
                lines.append(f"      fix: {finding.remedy}")

    verdict = report.verdict
    lines += ["", "Verdict"]
    lines.append(f"  {'OK' if verdict.usable else 'PROBLEM'}: {verdict.reason}")
    lines.append(f"  GPU usable: {'yes' if verdict.gpu_usable else 'no'}")
    if verdict.remedy:
        lines.append(f"  fix: {verdict.remedy}")
    return lines
