"""What is known about Intel GPUs and their compute runtimes: tables and pure rules.

Sources: the PCI ids of Linux's ``include/drm/intel/pciids.h``; compute-runtime's
LEGACY_PLATFORMS.md (from 24.35.30872.22 on, Intel's regular packages serve Gen12 and later
only; Gen8, Gen9 and Gen11 get the ``-legacy1`` packages of the 24.35 branch); the
distributions' own builds (Debian 12: 22.43, Ubuntu 24.04: 23.43, both before that cut);
compute-runtime issues 702, 710 and 716 (releases before 24.13 enumerate no i915 GPU on
kernel 6.8 and later, which reports a smaller GTT; a UHD 630 among them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

INTEL_VENDOR_ID = 0x8086

# Generations in release order; the first four are the "legacy" ones of compute-runtime.
GENERATIONS = ("Gen8", "Gen9", "Gen9.5", "Gen11", "Gen12", "Xe-HPG", "Xe-LPG", "Xe2", "Xe3")
LEGACY_GENERATIONS = frozenset({"Gen8", "Gen9", "Gen9.5", "Gen11"})
# A compute-runtime version is year.week.build.hotfix; the build number grows with every
# release, and library file names carry it too (libze_intel_gpu.so.1.3.27642.40), so it
# orders versions from any source.
# The regular (non-legacy) release that dropped the legacy generations: 24.35.30872.22.
LEGACY_CUT_BUILD = 30872
# The first release that enumerates i915 GPUs on kernel 6.8 and later: 24.13.29138.7.
GTT_FIX_BUILD = 29138
GTT_KERNEL = (6, 8)
# The workaround for older releases on those kernels, read from the process environment.
NEO_DEBUG_KEYS = {"NEOReadDebugKeys": "1", "OverrideGpuAddressSpace": "48"}


@dataclass(frozen=True)
class GpuFamily:
    platform: str  # "Coffee Lake"
    generation: str  # "Gen9.5"

    @property
    def legacy(self) -> bool:
        return self.generation in LEGACY_GENERATIONS

    def describe(self) -> str:
        return f"{self.platform}, {self.generation}"


_FAMILIES: tuple[tuple[str, str, tuple[int, ...]], ...] = (
    ("Broadwell", "Gen8", (0x1602, 0x1606, 0x160A, 0x160B, 0x160D, 0x160E, 0x1612, 0x1616,
                           0x161A, 0x161B, 0x161D, 0x161E, 0x1622, 0x1626, 0x162A, 0x162B,
                           0x162D, 0x162E, 0x1632, 0x1636, 0x163A, 0x163B, 0x163D, 0x163E)),
    ("Cherryview", "Gen8", (0x22B0, 0x22B1, 0x22B2, 0x22B3)),
    ("Skylake", "Gen9", (0x1902, 0x1906, 0x190A, 0x190B, 0x190E, 0x1912, 0x1913, 0x1915,
                         0x1916, 0x1917, 0x191A, 0x191B, 0x191D, 0x191E, 0x1921, 0x1923,
                         0x1926, 0x1927, 0x192A, 0x192B, 0x192D, 0x1932, 0x193A, 0x193B,
                         0x193D)),
    ("Apollo Lake", "Gen9", (0x0A84, 0x1A84, 0x1A85, 0x5A84, 0x5A85)),
    ("Gemini Lake", "Gen9", (0x3184, 0x3185)),
    ("Kaby Lake", "Gen9.5", (0x5902, 0x5906, 0x5908, 0x590A, 0x590B, 0x590E, 0x5912, 0x5913,
                             0x5915, 0x5916, 0x5917, 0x591A, 0x591B, 0x591C, 0x591D, 0x591E,
                             0x5921, 0x5923, 0x5926, 0x5927, 0x593B)),
    ("Amber Lake", "Gen9.5", (0x87C0, 0x87CA)),
    ("Coffee Lake", "Gen9.5", (0x3E90, 0x3E91, 0x3E92, 0x3E93, 0x3E94, 0x3E96, 0x3E98,
                               0x3E99, 0x3E9A, 0x3E9B, 0x3E9C, 0x3EA5, 0x3EA6, 0x3EA7,
                               0x3EA8, 0x3EA9)),
    ("Whiskey Lake", "Gen9.5", (0x3EA0, 0x3EA1, 0x3EA2, 0x3EA3, 0x3EA4)),
    ("Comet Lake", "Gen9.5", (0x9B21, 0x9B41, 0x9BA2, 0x9BA4, 0x9BA5, 0x9BA8, 0x9BAA, 0x9BAC,
                              0x9BC2, 0x9BC4, 0x9BC5, 0x9BC6, 0x9BC8, 0x9BCA, 0x9BCC, 0x9BE6,
                              0x9BF6)),
    ("Ice Lake", "Gen11", (0x8A50, 0x8A51, 0x8A52, 0x8A53, 0x8A54, 0x8A56, 0x8A57, 0x8A58,
                           0x8A59, 0x8A5A, 0x8A5B, 0x8A5C, 0x8A5D, 0x8A70, 0x8A71)),
    ("Elkhart Lake", "Gen11", (0x4541, 0x4551, 0x4555, 0x4557, 0x4570, 0x4571)),
    ("Jasper Lake", "Gen11", (0x4E51, 0x4E55, 0x4E57, 0x4E61, 0x4E71)),
    ("Tiger Lake", "Gen12", (0x9A40, 0x9A49, 0x9A59, 0x9A60, 0x9A68, 0x9A70, 0x9A78, 0x9AC0,
                             0x9AC9, 0x9AD9, 0x9AF8)),
    ("Rocket Lake", "Gen12", (0x4C80, 0x4C8A, 0x4C8B, 0x4C8C, 0x4C90, 0x4C9A)),
    ("DG1", "Gen12", (0x4905, 0x4906, 0x4907, 0x4908, 0x4909)),
    ("Alder Lake", "Gen12", (0x4680, 0x4682, 0x4688, 0x468A, 0x468B, 0x4690, 0x4692, 0x4693,
                             0x4626, 0x4628, 0x462A, 0x46A0, 0x46A1, 0x46A2, 0x46A3, 0x46A6,
                             0x46A8, 0x46AA, 0x46B0, 0x46B1, 0x46B2, 0x46B3, 0x46C0, 0x46C1,
                             0x46C2, 0x46C3, 0x46D0, 0x46D1, 0x46D2, 0x46D3, 0x46D4)),
    ("Raptor Lake", "Gen12", (0xA720, 0xA721, 0xA780, 0xA781, 0xA782, 0xA783, 0xA788, 0xA789,
                              0xA78A, 0xA78B, 0xA7A0, 0xA7A1, 0xA7A8, 0xA7A9, 0xA7AA, 0xA7AB,
                              0xA7AC, 0xA7AD)),
    ("Arc Alchemist (DG2)", "Xe-HPG", (0x5690, 0x5691, 0x5692, 0x5693, 0x5694, 0x5695,
                                       0x5696, 0x5697, 0x56A0, 0x56A1, 0x56A2, 0x56A3,
                                       0x56A4, 0x56A5, 0x56A6, 0x56B0, 0x56B1, 0x56B2,
                                       0x56B3, 0x56BA, 0x56BB, 0x56BC, 0x56BD, 0x56BE,
                                       0x56BF, 0x56C0, 0x56C1, 0x56C2)),
    ("Meteor Lake", "Xe-LPG", (0x7D40, 0x7D45, 0x7D55, 0x7D60, 0x7DD5)),
    ("Arrow Lake", "Xe-LPG", (0x7D41, 0x7D51, 0x7D67, 0x7DD1, 0xB640)),
    ("Lunar Lake", "Xe2", (0x6420, 0x64A0, 0x64B0)),
    ("Arc Battlemage (BMG)", "Xe2", (0xE202, 0xE209, 0xE20B, 0xE20C, 0xE20D, 0xE210, 0xE211,
                                     0xE212, 0xE216, 0xE220, 0xE221, 0xE222, 0xE223)),
    ("Panther Lake", "Xe3", (0xB080, 0xB081, 0xB082, 0xB083, 0xB084, 0xB085, 0xB086, 0xB087,
                             0xB08F, 0xB090, 0xB0A0, 0xB0B0)),
)  # fmt: skip

DEVICE_IDS: dict[int, GpuFamily] = {
    device_id: GpuFamily(platform, generation)
    for platform, generation, ids in _FAMILIES
    for device_id in ids
}

# OpenVINO's architecture strings: DEVICE_ARCHITECTURE "GPU: vendor=0x8086 arch=v9.1.9",
# GPU_UARCH_VERSION "12.0.0". The major number is the graphics IP's generation.
_ARCH_MAJOR = {8: "Gen8", 9: "Gen9", 11: "Gen11", 12: "Gen12", 20: "Xe2", 30: "Xe3"}
_ARCH_NUMBERS = re.compile(r"(?:^|[\sv=])(\d+)\.(\d+)(?:\.(\d+))?")


def parse_hex_id(value: str | int | None) -> int | None:
    """``"0x3e9b"``, ``"3E9B"`` or ``0x3E9B`` -> 0x3E9B; anything else -> None."""
    if value is None:
        return None
    if isinstance(value, int):
        return value
    text = value.strip().lower()
    text = text[2:] if text.startswith("0x") else text
    try:
        return int(text, 16)
    except ValueError:
        return None


def classify_device_id(device_id: str | int | None) -> GpuFamily | None:
    parsed = parse_hex_id(device_id)
    return DEVICE_IDS.get(parsed) if parsed is not None else None


def generation_of_architecture(architecture: str | None) -> str | None:
    """The generation from OpenVINO's architecture string, when its major number is known.

    Gen9 and Gen9.5 share the major number 9, so this says "Gen9" for both: the device id
    tells them apart.
    """
    if not architecture:
        return None
    match = _ARCH_NUMBERS.search(architecture)
    if match is None:
        return None
    return _ARCH_MAJOR.get(int(match.group(1)))


def is_legacy(generation: str | None) -> bool | None:
    if generation is None:
        return None
    return generation in LEGACY_GENERATIONS


# ------------------------------------------------------------------ runtimes

RuntimeKind = Literal["legacy1", "regular"]

# Debian packages of Intel's OpenCL driver (ICD), regular and legacy1 builds.
OPENCL_ICD_PACKAGES: dict[str, RuntimeKind] = {
    "intel-opencl-icd": "regular",
    "intel-opencl": "regular",  # Intel's own .debs before 2019
    "intel-opencl-icd-legacy1": "legacy1",
}
LEVEL_ZERO_PACKAGES: dict[str, RuntimeKind] = {
    "libze-intel-gpu1": "regular",  # Debian/Ubuntu name
    "intel-level-zero-gpu": "regular",  # Intel's name
    "intel-level-zero-gpu-legacy1": "legacy1",
}
# The graphics compiler: one major version per runtime line (libigc.so.1 or .so.2).
COMPILER_PACKAGES = ("libigc1", "libigc2", "intel-igc-core", "intel-igc-core-2")
LOADER_PACKAGES = ("ocl-icd-libopencl1", "libze1", "level-zero")
# The runtime's shared libraries that the dynamic linker must find through its cache (the ICD
# itself is loaded by its full path). Intel's GitHub .debs, legacy1 among them, put IGC in
# /usr/local/lib and do not run ldconfig.
LINKED_LIBRARY_PATTERNS = (
    "libigc.so.*",
    "libigdfcl.so.*",
    "libopencl-clang.so.*",
    "libigdgmm.so.*",
    "libze_intel_gpu*.so.*",
)
# The Level Zero driver's file name carries the runtime's build: libze_intel_gpu.so.1.3.27642.40.
_LEVEL_ZERO_FILE = re.compile(r"^libze_intel_gpu(_legacy1)?\.so\.(\d+(?:\.\d+){2,})$")
# dpkg-query patterns that find all of the above, and the helpers around them.
PACKAGE_PATTERNS = (
    "intel-opencl*",
    "intel-level-zero-gpu*",
    "libze*",
    "intel-igc-*",
    "libigc*",
    "libigdfcl*",
    "libigdgmm*",
    "ocl-icd-libopencl1",
    "level-zero",
    "clinfo",
)


def parse_version(version: str) -> tuple[int, ...]:
    """Debian version -> the numbers of its upstream part.

    ``"23.43.27642.40-1ubuntu3"`` -> (23, 43, 27642, 40); ``"1:24.35.30872.36"`` -> (24, 35,
    30872, 36); ``"25.18.33578.15-1124~24.04"`` -> (25, 18, 33578, 15).
    """
    upstream = version.split(":", 1)[-1]
    upstream = re.split(r"[-+~]", upstream, maxsplit=1)[0]
    numbers: list[int] = []
    for part in upstream.split("."):
        match = re.match(r"\d+", part)
        if match is None:
            break
        numbers.append(int(match.group()))
    return tuple(numbers)


@dataclass(frozen=True)
class OpenClRuntime:
    package: str  # the Debian package, or the library file the version was read from
    version: str
    kind: RuntimeKind

    @property
    def numbers(self) -> tuple[int, ...]:
        return parse_version(self.version)

    @property
    def build(self) -> int | None:
        numbers = self.numbers
        return numbers[2] if len(numbers) >= 3 else None

    @property
    def gen12_only(self) -> bool:
        """A regular release from 24.35 on: it no longer drives Gen8-Gen11."""
        return self.kind == "regular" and (self.build or 0) >= LEGACY_CUT_BUILD

    @property
    def before_gtt_fix(self) -> bool | None:
        """Whether this release predates 24.13 (no i915 GPU on kernel 6.8 and later)."""
        return None if self.build is None else self.build < GTT_FIX_BUILD

    def supports(self, generation: str | None) -> bool | None:
        """Whether this runtime drives a GPU of ``generation``; None when not known here."""
        if generation is None:
            return None
        legacy = generation in LEGACY_GENERATIONS
        if self.kind == "legacy1":
            return legacy
        if self.gen12_only:
            return not legacy
        if legacy or generation == "Gen12":
            return True
        return None  # a newer GPU on an older runtime: depends on the exact release

    def describe(self) -> str:
        if self.kind == "legacy1":
            line = "legacy1 (Gen8-Gen11 only)"
        elif self.gen12_only:
            line = "regular, 24.35 or later (Gen12 and newer only)"
        else:
            line = "regular, before 24.35 (Gen8-Gen12)"
        return f"{self.package} {self.version}: {line}"


def opencl_runtimes(packages: dict[str, str]) -> list[OpenClRuntime]:
    """The Intel OpenCL drivers among installed packages (name -> version)."""
    return [
        OpenClRuntime(name, packages[name], kind)
        for name, kind in OPENCL_ICD_PACKAGES.items()
        if name in packages
    ]


def runtimes_from_files(names: list[str]) -> list[OpenClRuntime]:
    """The runtimes that Level Zero driver file names reveal, where no package says (a
    runtime installed from a tarball, or without dpkg)."""
    found = []
    for name in sorted(set(names)):
        match = _LEVEL_ZERO_FILE.match(name)
        if match is not None:
            kind: RuntimeKind = "legacy1" if match.group(1) else "regular"
            library = name[: name.index(".so.") + 3]  # libze_intel_gpu.so
            found.append(OpenClRuntime(library, match.group(2), kind))
    return found


def kernel_version(release: str) -> tuple[int, ...]:
    """``"6.8.0-49-generic"`` -> (6, 8, 0)."""
    return parse_version(release)


def kernel_has_small_gtt(release: str) -> bool:
    return kernel_version(release)[:2] >= GTT_KERNEL


def soname(file_name: str) -> str | None:
    """``"libigc.so.1.0.17537.24"`` -> ``"libigc.so.1"``: the name the linker cache lists."""
    match = re.match(r"^(.+?\.so\.\d+)", file_name)
    return match.group(1) if match else None
