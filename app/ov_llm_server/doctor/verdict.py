"""From facts to findings, each with its remedy, and to the verdict: can OV_DEVICE serve?

Pure functions over the gathered facts, OpenVINO's device listing and the probe, so that every
known-bad combination is a table-driven test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..placement import device_choices, is_low_bit, targets_gpu
from ..settings import Settings
from .facts import RenderNode, SystemFacts
from .knowledge import (
    INTEL_VENDOR_ID,
    GpuFamily,
    OpenClRuntime,
    classify_device_id,
    generation_of_architecture,
    opencl_runtimes,
    parse_hex_id,
)
from .probe import ProbeResult

Severity = Literal["error", "warning", "info"]

# Where Ubuntu 24.04 gets a runtime that still drives Gen8-Gen11 (the UHD 630 is Gen9.5).
LEGACY_GPU_REMEDY = (
    "a Gen8-Gen11 GPU needs a runtime from before 24.35: Ubuntu 24.04's own intel-opencl-icd "
    "23.43 (intel_gpu_runtime_source: distribution) or Intel's legacy1 packages "
    "(intel_gpu_runtime_source: legacy1). Remove the newer one first: drop Intel's apt "
    "repository or PPA, `sudo apt purge intel-opencl-icd libze-intel-gpu1`, then run the "
    "playbook again"
)
RUNTIME_CRASH_REMEDY = (
    "the GPU driver stack crashed: usually a runtime that does not match this GPU or two Intel "
    "runtimes at once; see the runtime section, keep exactly one runtime that supports this "
    "GPU (the intel_gpu_runtime role installs one)"
)

# The first error of this list present is the verdict's reason: the most basic cause first.
CAUSE_ORDER = (
    "openvino-crashed",
    "openvino-failed",
    "no-render-node",
    "render-node-hidden",
    "render-node-denied",
    "no-intel-runtime",
    "no-opencl-loader",
    "runtime-drops-gpu",
    "two-intel-runtimes",
    "gpu-plugin-failed",
    "probe-failed",
    "probe-mismatch",
    "device-not-found",
)


@dataclass
class Finding:
    code: str
    severity: Severity
    message: str
    remedy: str | None = None


@dataclass
class OpenVinoDevices:
    """What the child process found: OpenVINO's devices, or why it could not say."""

    devices: list[dict[str, Any]] = field(default_factory=list)
    plugins: dict[str, dict[str, Any]] = field(default_factory=dict)
    build: str | None = None
    error: str | None = None
    crashed_by: str | None = None

    @property
    def names(self) -> list[str]:
        return [str(d["name"]) for d in self.devices]

    def gpu_devices(self) -> list[dict[str, Any]]:
        return [d for d in self.devices if str(d["name"]).split(".")[0] == "GPU"]


@dataclass
class Verdict:
    device: str
    usable: bool  # OV_DEVICE can serve
    gpu_usable: bool  # some GPU is listed and no probe found it computing wrongly
    serves_on: str | None  # OV_DEVICE, else OV_FALLBACK_DEVICE when that can serve, else None
    reason: str
    remedy: str | None


def _one_available(name: str, listed: list[str]) -> bool:
    wanted = name.upper()
    upper = [d.upper() for d in listed]
    if wanted in upper:
        return True
    kind, _, index = wanted.partition(".")
    if not index:
        return any(d.split(".")[0] == kind for d in upper)
    # OpenVINO lists a single GPU as "GPU"; its id is 0.
    return index == "0" and kind in upper


def device_available(device: str, listed: list[str]) -> bool:
    """Whether OpenVINO, listing ``listed``, can run on the device string ``device``."""
    included, excluded = device_choices(device)
    head = device.strip().partition(":")[0].upper()
    if head in {"AUTO", "MULTI", "HETERO", "BATCH"} and not included:
        return any(not any(_one_available(x, [d]) for x in excluded) for d in listed)
    if head == "HETERO":
        return all(_one_available(name, listed) for name in included)
    return any(_one_available(name, listed) for name in included)


def gpu_family(facts: SystemFacts, ov: OpenVinoDevices) -> tuple[GpuFamily | None, str | None]:
    """(the Intel GPU's family if its id is known, its generation from any source)."""
    for node in facts.render_nodes:
        if parse_hex_id(node.vendor_id) == INTEL_VENDOR_ID:
            family = classify_device_id(node.device_id)
            if family is not None:
                return family, family.generation
    for device in ov.gpu_devices():
        properties = device.get("properties", {})
        family = classify_device_id(properties.get("GPU_DEVICE_ID"))
        if family is not None:
            return family, family.generation
        generation = generation_of_architecture(
            properties.get("GPU_UARCH_VERSION") or properties.get("DEVICE_ARCHITECTURE")
        )
        if generation is not None:
            return None, generation
    return None, None


def _render_findings(facts: SystemFacts, severity: Severity, runtime_note: str) -> list[Finding]:
    nodes = facts.render_nodes
    if not nodes:
        return [
            Finding(
                "no-render-node",
                severity,
                f"no GPU device visible: there is no /dev/dri/renderD* node ({runtime_note})",
                "this machine (or container) has no GPU that the kernel drives: check that the "
                "iGPU is enabled, `lspci -nn | grep -i vga`, that the i915 driver is loaded "
                "(`lsmod | grep i915`, `sudo dmesg | grep -i i915`); a container needs "
                "--device /dev/dri",
            )
        ]
    found: list[Finding] = []
    user = facts.identity.user
    for node in nodes:
        found.extend(_node_findings(node, user, severity))
    return found


def _node_findings(node: RenderNode, user: str, severity: Severity) -> list[Finding]:
    found: list[Finding] = []
    vendor = parse_hex_id(node.vendor_id)
    if vendor is not None and vendor != INTEL_VENDOR_ID:
        message = f"{node.name} is not an Intel GPU (vendor {vendor:#06x})"
        return [Finding("not-intel-gpu", "info", message)]
    if vendor == INTEL_VENDOR_ID and classify_device_id(node.device_id) is None:
        found.append(
            Finding(
                "unknown-intel-gpu",
                "info",
                f"{node.name}: Intel GPU {node.device_id} is not in this doctor's table; "
                "its generation comes from OpenVINO, if OpenVINO lists it",
            )
        )
    if not node.in_dev:
        found.append(
            Finding(
                "render-node-hidden",
                severity,
                f"the kernel has {node.name}, but {node.path} does not exist here: a sandbox or "
                "container hides it",
                "the service's unit needs PrivateDevices=no and DeviceAllow=char-drm rw (the "
                "ov_server role sets both); a container needs --device /dev/dri",
            )
        )
    elif node.access != "ok":
        if node.access.startswith("EACCES"):
            remedy = (
                f"let {user} into the node's group: `sudo usermod -aG {node.group} {user}` "
                f"(the unit's SupplementaryGroups={node.group}; the ov_server role adds render "
                "and video)"
            )
        elif node.access.startswith("EPERM"):
            remedy = "a device cgroup refuses it: the unit needs DeviceAllow=char-drm rw"
        else:
            remedy = f"check {node.path} (owner, mode {node.mode}) and the kernel log"
        found.append(
            Finding(
                "render-node-denied",
                severity,
                f"{user} cannot open {node.path} ({node.access}; group {node.group}, "
                f"mode {node.mode})",
                remedy,
            )
        )
    return found


def _runtime_findings(
    facts: SystemFacts,
    runtimes: list[OpenClRuntime],
    family: GpuFamily | None,
    generation: str | None,
    severity: Severity,
    gpu_listed: bool,
) -> list[Finding]:
    found: list[Finding] = []
    intel_icds = [icd for icd in facts.icd_files if icd.intel]
    if not runtimes and not intel_icds:
        found.append(
            Finding(
                "no-intel-runtime",
                severity,
                "no Intel OpenCL runtime is installed (no intel-opencl-icd package, no Intel "
                "ICD file in /etc/OpenCL/vendors)",
                "install it with the playbook (role intel_gpu_runtime); on Ubuntu 24.04 by hand: "
                "`sudo apt install intel-opencl-icd libze-intel-gpu1 ocl-icd-libopencl1`",
            )
        )
    what = family.describe() if family else generation
    unsupported = [r for r in runtimes if r.supports(generation) is False]
    supported = [r for r in runtimes if r.supports(generation)]
    if generation is not None and unsupported and not supported:
        legacy_gpu = generation in {"Gen8", "Gen9", "Gen9.5", "Gen11"}
        found.append(
            Finding(
                "runtime-drops-gpu",
                severity,
                f"{'; '.join(r.describe() for r in unsupported)}: cannot drive this {what} GPU",
                LEGACY_GPU_REMEDY
                if legacy_gpu
                else "legacy1 serves Gen8-Gen11 only: install the regular runtime "
                "(intel_gpu_runtime_source: distribution) and purge the legacy1 packages",
            )
        )
    if len(runtimes) > 1 or len(intel_icds) > 1:
        names = [r.describe() for r in runtimes] or [icd.path for icd in intel_icds]
        keep = ", ".join(r.package for r in supported) or "the one that supports this GPU"
        found.append(
            Finding(
                "two-intel-runtimes",
                "warning" if gpu_listed else severity,
                "more than one Intel OpenCL runtime is installed: "
                + "; ".join(names + [icd.path for icd in intel_icds if runtimes]),
                f"keep one ({keep}) and purge the others; a modern runtime beside a legacy one "
                "has made this iGPU vanish elsewhere. The intel_gpu_runtime role installs "
                "exactly one",
            )
        )
    for icd in intel_icds:
        if icd.library_exists is False:
            found.append(
                Finding(
                    "icd-library-missing",
                    "warning",
                    f"{icd.path} points at {icd.library}, which does not exist",
                    f"purge the package that left it (`dpkg -S {icd.path}`), or reinstall it",
                )
            )
    return found


def _openvino_findings(ov: OpenVinoDevices, severity: Severity) -> list[Finding]:
    if ov.crashed_by is not None:
        return [
            Finding(
                "openvino-crashed",
                "error",
                f"OpenVINO {ov.error} while listing its devices",
                RUNTIME_CRASH_REMEDY,
            )
        ]
    if ov.error is not None:
        return [
            Finding(
                "openvino-failed",
                "error",
                f"OpenVINO could not list its devices: {ov.error}",
                "check the venv's openvino install: "
                "`/opt/ov-llm-server/venv/bin/python -c 'import openvino'`",
            )
        ]
    gpu = ov.plugins.get("GPU", {})
    error = gpu.get("error")
    if not error:
        return []
    if "libOpenCL" in str(error):
        return [
            Finding(
                "no-opencl-loader",
                severity,
                f"OpenVINO's GPU plugin cannot load: {error}",
                "install the OpenCL ICD loader: `sudo apt install ocl-icd-libopencl1` "
                "(the intel_gpu_runtime role does)",
            )
        ]
    return [
        Finding(
            "gpu-plugin-failed",
            severity,
            f"OpenVINO's GPU plugin fails: {error}",
            RUNTIME_CRASH_REMEDY,
        )
    ]


def _probe_findings(probe: ProbeResult | None) -> list[Finding]:
    if probe is None:
        return []
    label = f"{probe.model} ({probe.weight_format or 'unknown format'})"
    keep_off = f'keep it off {probe.device}: set "device": "CPU" in its registry entry' + (
        ", or leave OV_INT4_DEVICE=CPU (the default) for int4 models; int8 is the format "
        "for this GPU"
        if probe.weight_format and is_low_bit(probe.weight_format)
        else "; or try the other runtime (intel_gpu_runtime_source: distribution or legacy1)"
    )
    if probe.status == "failed":
        return [
            Finding(
                "probe-failed",
                "error",
                f"{label} fails on {probe.device}: {probe.error}",
                RUNTIME_CRASH_REMEDY if probe.crashed_by else keep_off,
            )
        ]
    if probe.status == "differs":
        return [
            Finding(
                "probe-mismatch",
                "error",
                f"{label} answers differently on {probe.device} than on the CPU: "
                f"{probe.device_text!r} instead of {probe.reference_text!r}",
                keep_off,
            )
        ]
    if probe.status == "inconclusive":
        return [Finding("probe-inconclusive", "warning", f"probe of {label}: {probe.error}")]
    if probe.status == "agrees":
        return [
            Finding(
                "probe-drifts",
                "info",
                f"{label} on {probe.device} matches the CPU for {probe.agreeing_words} words, "
                "then drifts (lower precision on the device, not a fault)",
            )
        ]
    return []


def judge(
    settings: Settings,
    facts: SystemFacts,
    ov: OpenVinoDevices,
    probe: ProbeResult | None,
) -> tuple[list[Finding], Verdict]:
    listed = ov.names
    # GPU trouble is an error where OV_DEVICE needs the GPU, a warning where it would rather
    # have one (AUTO:GPU,CPU), and information for a CPU service.
    severity: Severity = "info"
    if targets_gpu(settings.device):
        without_gpu = [name for name in listed if name.split(".")[0].upper() != "GPU"]
        severity = "warning" if device_available(settings.device, without_gpu) else "error"
    family, generation = gpu_family(facts, ov)
    runtimes = opencl_runtimes(facts.debian_packages or {})
    gpu_listed = bool(ov.gpu_devices())
    if runtimes:
        runtime_note = "the compute runtime is installed: " + ", ".join(
            f"{r.package} {r.version}" for r in runtimes
        )
    elif any(icd.intel for icd in facts.icd_files):
        runtime_note = "an Intel ICD file is installed"
    else:
        runtime_note = "no Intel compute runtime is installed either"

    findings = _openvino_findings(ov, severity)
    if not gpu_listed:
        findings += _render_findings(facts, severity, runtime_note)
    findings += _runtime_findings(facts, runtimes, family, generation, severity, gpu_listed)
    findings += _probe_findings(probe)

    usable = ov.error is None and device_available(settings.device, listed)
    failed = probe is not None and probe.status in {"failed", "differs"}
    broken_on = probe.device if probe is not None and failed else None
    if broken_on == settings.device:
        usable = False
    gpu_usable = gpu_listed and not (broken_on is not None and targets_gpu(broken_on))
    if not device_available(settings.device, listed) and ov.error is None:
        findings.append(
            Finding(
                "device-not-found",
                "error",
                f"OV_DEVICE={settings.device} is not among OpenVINO's devices "
                f"({', '.join(listed) or 'none'})",
                "see the findings above"
                if len(findings) > 0
                else "check the device string (GPU, GPU.0, CPU, AUTO:GPU,CPU)",
            )
        )

    fallback = settings.fallback_device
    serves_on: str | None = settings.device if usable else None
    if not usable and fallback and ov.error is None and device_available(fallback, listed):
        serves_on = fallback
    if usable:
        names = [
            str(d.get("properties", {}).get("FULL_DEVICE_NAME", d["name"]))
            for d in ov.devices
            if device_available(settings.device, [str(d["name"])])
        ]
        reason = f"OV_DEVICE={settings.device} is available: {', '.join(names)}"
        if probe is not None and probe.status in {"identical", "agrees"}:
            reason += f"; the probe of {probe.model} on {probe.device} matches the CPU"
        return findings, Verdict(settings.device, True, gpu_usable, serves_on, reason, None)
    errors = [f for f in findings if f.severity == "error"]
    ranked = sorted(
        errors,
        key=lambda f: CAUSE_ORDER.index(f.code) if f.code in CAUSE_ORDER else len(CAUSE_ORDER),
    )
    cause = ranked[0] if ranked else Finding("unknown", "error", "no cause found")
    reason = f"OV_DEVICE={settings.device} cannot serve: {cause.message}"
    if serves_on is not None:
        reason += f". The service falls back to OV_FALLBACK_DEVICE={serves_on}"
    return findings, Verdict(settings.device, False, gpu_usable, serves_on, reason, cause.remedy)
