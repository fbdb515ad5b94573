"""From facts to findings, each with its remedy, and to the verdict: can OV_DEVICE serve?

Pure functions over the gathered facts, OpenVINO's device listing and the probe, so that every
known-bad combination is a table-driven test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..placement import device_choices, is_low_bit, targets_gpu
from ..settings import Settings
from .facts import Identity, RenderNode, SystemFacts
from .knowledge import (
    INTEL_VENDOR_ID,
    LEGACY_GENERATIONS,
    NEO_DEBUG_KEYS,
    GpuFamily,
    OpenClRuntime,
    classify_device_id,
    generation_of_architecture,
    kernel_has_small_gtt,
    opencl_runtimes,
    parse_hex_id,
    runtimes_from_files,
)
from .probe import ProbeResult

Severity = Literal["error", "warning", "info"]

# Where Ubuntu 24.04 gets a runtime that still drives Gen8-Gen11 (the UHD 630 is Gen9.5):
# the legacy1 packages, which also carry the kernel 6.8 fix that Ubuntu's own 23.43 lacks.
LEGACY_GPU_REMEDY = (
    "a Gen8-Gen11 GPU needs Intel's legacy1 packages (intel_gpu_runtime_source: legacy1; "
    "24.35, which also enumerates the GPU on kernel 6.8 and later). Remove the newer runtime "
    "first: drop Intel's apt repository or PPA, `sudo apt purge intel-opencl-icd "
    "libze-intel-gpu1`, then run the playbook again"
)
NEO_KEYS_TEXT = " ".join(f"{key}={value}" for key, value in NEO_DEBUG_KEYS.items())
RUNTIME_CRASH_REMEDY = (
    "the GPU driver stack crashed: usually a runtime that does not match this GPU or two Intel "
    "runtimes at once; see the runtime section, keep exactly one runtime that supports this "
    "GPU (the intel_gpu_runtime role installs one)"
)

# The first error of this list present is the verdict's reason: the most basic cause first.
CAUSE_ORDER = (
    "openvino-crashed",
    "openvino-failed",
    "i915-disabled",
    "no-render-node",
    "render-node-hidden",
    "not-in-render-group",
    "render-node-denied",
    "no-intel-runtime",
    "no-opencl-loader",
    "stale-linker-cache",
    "runtime-gen12-only",
    "runtime-drops-gpu",
    "two-intel-runtimes",
    "neo-kernel-gtt",
    "gpu-plugin-failed",
    "probe-failed",
    "probe-mismatch",
    "device-not-found",
)


@dataclass
class Finding:
    """One problem (or notable fact), with the facts that show it and its remedy: ``remedy``
    for a person; for a machine (the playbook) what to do, in the fields that apply."""

    code: str  # stable: the report's "id"
    severity: Severity
    message: str
    remedy: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    # Variables the service's environment needs (systemd Environment=).
    remedy_environment: dict[str, str] | None = None
    # The runtime to install: the intel_gpu_runtime role's source, "legacy1" or "distribution".
    remedy_route: str | None = None
    # A command to run as root.
    remedy_command: list[str] | None = None

    @property
    def id(self) -> str:
        return self.code


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


def intel_device_ids(facts: SystemFacts) -> list[str]:
    """The Intel GPUs' PCI device ids: from the PCI bus (there even without a driver), then
    from the render nodes."""
    ids = [
        gpu.device_id
        for gpu in facts.pci_gpus
        if parse_hex_id(gpu.vendor_id) == INTEL_VENDOR_ID and gpu.device_id
    ]
    ids += [
        node.device_id
        for node in facts.render_nodes
        if parse_hex_id(node.vendor_id) == INTEL_VENDOR_ID and node.device_id
    ]
    return list(dict.fromkeys(ids))


def installed_runtimes(facts: SystemFacts) -> list[OpenClRuntime]:
    """Intel's compute runtimes by their packages, else by their libraries' file names."""
    return opencl_runtimes(facts.debian_packages or {}) or runtimes_from_files(
        [Path(library.path).name for library in facts.gpu_libraries]
    )


def gpu_family(facts: SystemFacts, ov: OpenVinoDevices) -> tuple[GpuFamily | None, str | None]:
    """(the Intel GPU's family if its id is known, its generation from any source)."""
    for device_id in intel_device_ids(facts):
        family = classify_device_id(device_id)
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
    for node in nodes:
        found.extend(_node_findings(node, facts.identity, severity))
    return found


def _node_findings(node: RenderNode, identity: Identity, severity: Severity) -> list[Finding]:
    found: list[Finding] = []
    user = identity.user
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
    elif (
        node.access.startswith("EACCES")
        and node.group is not None
        and node.group not in identity.groups
        and identity.uid != 0
    ):
        found.append(
            Finding(
                "not-in-render-group",
                severity,
                f"{user} is not in the group {node.group}, which owns {node.path} "
                f"({node.access}; mode {node.mode})",
                f"add {user} to it: `sudo usermod -aG {node.group} {user}`, then restart the "
                f"service (the unit's SupplementaryGroups={node.group}; the ov_server role adds "
                "render and video)",
                evidence={
                    "user": user,
                    "groups": identity.groups,
                    "node": node.path,
                    "node_group": node.group,
                    "access": node.access,
                },
                remedy_command=["usermod", "-aG", node.group, user],
            )
        )
    elif node.access != "ok":
        if node.access.startswith("EACCES"):
            remedy = (
                f"{user} is in {node.group}, yet may not open it: restart the service (a process "
                f"keeps the groups it started with), and check the node's mode {node.mode} "
                "(udev sets 0660 for render)"
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
        evidence = {
            "gpu": what,
            "device_ids": intel_device_ids(facts),
            "runtimes": [f"{r.package} {r.version}" for r in unsupported],
        }
        if generation in LEGACY_GENERATIONS:
            found.append(
                Finding(
                    "runtime-gen12-only",
                    severity,
                    f"{'; '.join(r.describe() for r in unsupported)}: cannot drive this {what} GPU",
                    LEGACY_GPU_REMEDY,
                    evidence=evidence,
                    remedy_route="legacy1",
                )
            )
        else:
            found.append(
                Finding(
                    "runtime-drops-gpu",
                    severity,
                    f"{'; '.join(r.describe() for r in unsupported)}: cannot drive this {what} GPU",
                    "legacy1 serves Gen8-Gen11 only: install the regular runtime "
                    "(intel_gpu_runtime_source: distribution) and purge the legacy1 packages",
                    evidence=evidence,
                    remedy_route="distribution",
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


def _linker_findings(facts: SystemFacts, severity: Severity) -> list[Finding]:
    uncached = [library for library in facts.gpu_libraries if library.cached is False]
    if not uncached:
        return []
    legacy1 = [r.package for r in installed_runtimes(facts) if r.kind == "legacy1"]
    return [
        Finding(
            "stale-linker-cache",
            severity,
            "the dynamic linker's cache does not list "
            + ", ".join(f"{library.soname} ({library.path})" for library in uncached)
            + (f", installed with {', '.join(legacy1)}" if legacy1 else "")
            + ": the runtime cannot load them",
            "run `sudo ldconfig` (Intel's GitHub .debs, legacy1 among them, do not)",
            evidence={"not_in_ldconfig_cache": [library.path for library in uncached]},
            remedy_command=["ldconfig"],
        )
    ]


def _cmdline_blocks_i915(cmdline: str | None) -> list[str]:
    """The kernel parameters that keep i915 from driving the GPU."""
    blocking = []
    for parameter in (cmdline or "").split():
        key, _, value = parameter.partition("=")
        if parameter == "nomodeset" or parameter == "i915.modeset=0":
            blocking.append(parameter)
        elif key in {"module_blacklist", "modprobe.blacklist"} and "i915" in value.split(","):
            blocking.append(parameter)
    return blocking


def _i915_findings(facts: SystemFacts, severity: Severity) -> list[Finding]:
    intel = [g for g in facts.pci_gpus if parse_hex_id(g.vendor_id) == INTEL_VENDOR_ID]
    if not intel:
        return []
    blocking = _cmdline_blocks_i915(facts.kernel_cmdline)
    unbound = [g for g in intel if g.driver is None]
    if not blocking and (facts.i915_loaded is not False or not unbound):
        return []
    evidence: dict[str, Any] = {
        "kernel_cmdline": facts.kernel_cmdline,
        "i915_loaded": facts.i915_loaded,
        "gpus": [f"{g.address} {g.vendor_id}:{g.device_id} driver {g.driver}" for g in intel],
    }
    if blocking:
        return [
            Finding(
                "i915-disabled",
                severity,
                f"the kernel command line disables the GPU driver: {' '.join(blocking)}",
                f"remove {' '.join(blocking)} from GRUB_CMDLINE_LINUX_DEFAULT in "
                "/etc/default/grub, `sudo update-grub`, and reboot",
                evidence=evidence,
            )
        ]
    return [
        Finding(
            "i915-disabled",
            severity,
            f"no driver drives the Intel GPU {unbound[0].address} ({unbound[0].device_id}): "
            "the i915 module is not loaded",
            "`sudo modprobe i915` and read `sudo dmesg | grep -i i915`; look for a blacklist in "
            "/etc/modprobe.d; an Ubuntu kernel without extra modules needs "
            "linux-modules-extra-$(uname -r)",
            evidence=evidence,
        )
    ]


def _gtt_findings(
    facts: SystemFacts,
    runtimes: list[OpenClRuntime],
    ov: OpenVinoDevices,
    severity: Severity,
    gpu_listed: bool,
) -> list[Finding]:
    """Compute-runtime releases before 24.13 list no i915 GPU on kernel 6.8 and later."""
    old = [r for r in runtimes if r.before_gtt_fix]
    needed = kernel_has_small_gtt(facts.kernel) and (bool(old) or not runtimes)
    keys_set = all(facts.neo_environment.get(k) == v for k, v in NEO_DEBUG_KEYS.items())
    evidence: dict[str, Any] = {
        "kernel": facts.kernel,
        "runtimes": [f"{r.package} {r.version}" for r in old or runtimes],
        "environment": facts.neo_environment,
    }
    if gpu_listed and keys_set:
        message = f"{NEO_KEYS_TEXT} are set and OpenVINO lists the GPU: " + (
            f"the kernel 6.8 workaround is in effect (kernel {facts.kernel}, runtime "
            f"{', '.join(evidence['runtimes']) or 'of unknown version'})"
            if needed
            else "the kernel 6.8 workaround is in effect, though this kernel and runtime do "
            "not need it"
        )
        return [
            Finding(
                "neo-kernel-gtt-workaround",
                "info",
                message,
                "keep them in the service's environment while the runtime predates 24.13; the "
                "legacy1 packages (intel_gpu_runtime_source: legacy1) need no workaround",
                evidence=evidence,
                remedy_environment=dict(NEO_DEBUG_KEYS),
            )
        ]
    if gpu_listed or not kernel_has_small_gtt(facts.kernel) or not old:
        return []
    readable = [n.path for n in facts.render_nodes if n.access == "ok"]
    intel_icds = [icd.path for icd in facts.icd_files if icd.intel]
    plugin_error = ov.plugins.get("GPU", {}).get("error")
    if not readable or not intel_icds or ov.error is not None or plugin_error:
        return []
    evidence.update(render_nodes=readable, icd_files=intel_icds, opencl_gpus=0)
    message = (
        f"kernel {facts.kernel} with compute runtime {', '.join(evidence['runtimes'])} (before "
        "24.13): the runtime enumerates no i915 GPU on kernel 6.8 and later, although "
        f"{readable[0]} opens and {intel_icds[0]} is installed (compute-runtime issues 702, "
        "710, 716)"
    )
    if keys_set:
        message += f"; {NEO_KEYS_TEXT} are set here and did not help"
    return [
        Finding(
            "neo-kernel-gtt",
            severity,
            message,
            f"set {NEO_KEYS_TEXT} in the service's environment (systemd: Environment=); check "
            f"with `{NEO_KEYS_TEXT} ov-llm-server doctor`. The lasting fix is a runtime from "
            "24.13 on: the legacy1 packages (intel_gpu_runtime_source: legacy1)",
            evidence=evidence,
            remedy_environment=dict(NEO_DEBUG_KEYS),
        )
    ]


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
    runtimes = installed_runtimes(facts)
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
    findings += _i915_findings(facts, severity)
    if not gpu_listed:
        findings += _render_findings(facts, severity, runtime_note)
    findings += _linker_findings(facts, "warning" if gpu_listed else severity)
    findings += _runtime_findings(facts, runtimes, family, generation, severity, gpu_listed)
    findings += _gtt_findings(facts, runtimes, ov, severity, gpu_listed)
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
        if any(f.code == "neo-kernel-gtt-workaround" for f in findings):
            reason += f" (with the kernel 6.8 workaround {NEO_KEYS_TEXT})"
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
