"""The doctor's tables: device ids, architecture strings and runtime versions as found in the
wild (OpenVINO properties, dpkg versions of Debian, Ubuntu, Intel's repository and PPA)."""

from __future__ import annotations

import pytest

from ov_llm_server.doctor.knowledge import (
    DEVICE_IDS,
    GENERATIONS,
    OpenClRuntime,
    classify_device_id,
    generation_of_architecture,
    kernel_has_small_gtt,
    opencl_runtimes,
    parse_hex_id,
    parse_version,
    runtimes_from_files,
    soname,
)


@pytest.mark.parametrize(
    ("device_id", "platform", "generation", "legacy"),
    [
        ("0x3e9b", "Coffee Lake", "Gen9.5", True),  # Mac mini 2018, i7-8700B: UHD 630
        ("0x3E92", "Coffee Lake", "Gen9.5", True),  # desktop UHD 630
        ("3e91", "Coffee Lake", "Gen9.5", True),
        (0x3E98, "Coffee Lake", "Gen9.5", True),
        ("0x5912", "Kaby Lake", "Gen9.5", True),  # HD 630
        ("0x9bc5", "Comet Lake", "Gen9.5", True),
        ("0x3ea0", "Whiskey Lake", "Gen9.5", True),
        ("0x87c0", "Amber Lake", "Gen9.5", True),
        ("0x1912", "Skylake", "Gen9", True),
        ("0x5a85", "Apollo Lake", "Gen9", True),
        ("0x3185", "Gemini Lake", "Gen9", True),
        ("0x1616", "Broadwell", "Gen8", True),
        ("0x8a52", "Ice Lake", "Gen11", True),
        ("0x4e55", "Jasper Lake", "Gen11", True),
        ("0x9a49", "Tiger Lake", "Gen12", False),
        ("0x46a6", "Alder Lake", "Gen12", False),
        ("0xa7a0", "Raptor Lake", "Gen12", False),
        ("0x56a0", "Arc Alchemist (DG2)", "Xe-HPG", False),
        ("0x7d55", "Meteor Lake", "Xe-LPG", False),
        ("0x64a0", "Lunar Lake", "Xe2", False),
        ("0xe20b", "Arc Battlemage (BMG)", "Xe2", False),
    ],
)
def test_device_ids(device_id: str | int, platform: str, generation: str, legacy: bool) -> None:
    family = classify_device_id(device_id)
    assert family is not None
    assert (family.platform, family.generation, family.legacy) == (platform, generation, legacy)


@pytest.mark.parametrize("device_id", ["0x1234", "0x0412", "", "not hex", None, "0x"])
def test_unknown_or_garbage_ids(device_id: str | None) -> None:
    assert classify_device_id(device_id) is None


def test_table_is_consistent() -> None:
    assert {family.generation for family in DEVICE_IDS.values()} <= set(GENERATIONS)
    assert parse_hex_id("0X3E9B") == 0x3E9B


@pytest.mark.parametrize(
    ("architecture", "generation"),
    [
        ("GPU: vendor=0x8086 arch=v9.1.9", "Gen9"),
        ("GPU: vendor=0x8086 arch=v9.0.9", "Gen9"),
        ("GPU: vendor=0x8086 arch=v12.0.0", "Gen12"),
        ("GPU: vendor=0x8086 arch=v12.55.8", "Gen12"),
        ("GPU: vendor=0x8086 arch=v20.4.4", "Xe2"),
        ("11.0.0", "Gen11"),
        ("12.0.0", "Gen12"),
        ("GPU: vendor=0x8086 arch=Intel(R) UHD Graphics 630", None),
        ("unknown", None),
        ("intel64", None),
        ("", None),
        (None, None),
    ],
)
def test_architecture_strings(architecture: str | None, generation: str | None) -> None:
    assert generation_of_architecture(architecture) == generation


@pytest.mark.parametrize(
    ("version", "numbers"),
    [
        ("23.43.27642.40-1ubuntu3", (23, 43, 27642, 40)),  # Ubuntu 24.04 universe
        ("22.43.24595.41-1", (22, 43, 24595, 41)),  # Debian 12
        ("24.35.30872.36", (24, 35, 30872, 36)),  # legacy1 .deb
        ("1:24.35.30872.22-1", (24, 35, 30872, 22)),
        ("24.52.32224.5-1106~24.04", (24, 52, 32224, 5)),  # Intel's repository
        ("25.18.33578.15-0ubuntu1~24.04~ppa1", (25, 18, 33578, 15)),  # kobuk-team PPA
        ("25.35.35096.9", (25, 35, 35096, 9)),
        ("22.5.0", (22, 5, 0)),  # libigdgmm12 of the legacy1 set
        ("1.0.17537.24", (1, 0, 17537, 24)),
        ("22.3.3+ds1-1", (22, 3, 3)),
    ],
)
def test_versions(version: str, numbers: tuple[int, ...]) -> None:
    assert parse_version(version) == numbers


# (package, version) x generation -> does that runtime drive that GPU?
RUNTIMES = {
    "debian 12": ("intel-opencl-icd", "22.43.24595.41-1"),
    "ubuntu 24.04": ("intel-opencl-icd", "23.43.27642.40-1ubuntu3"),
    "legacy1": ("intel-opencl-icd-legacy1", "24.35.30872.36"),
    "regular 24.35": ("intel-opencl-icd", "24.35.30872.22"),
    "intel repo 24.52": ("intel-opencl-icd", "24.52.32224.5-1106~24.04"),
    "ppa 25.18": ("intel-opencl-icd", "25.18.33578.15-0ubuntu1~24.04~ppa1"),
}


@pytest.mark.parametrize(
    ("runtime", "generation", "supports"),
    [
        ("debian 12", "Gen9.5", True),
        ("ubuntu 24.04", "Gen9.5", True),
        ("ubuntu 24.04", "Gen9", True),
        ("ubuntu 24.04", "Gen12", True),
        ("legacy1", "Gen9.5", True),
        ("legacy1", "Gen11", True),
        ("legacy1", "Gen8", True),
        ("legacy1", "Gen12", False),
        ("legacy1", "Xe2", False),
        ("regular 24.35", "Gen9.5", False),
        ("intel repo 24.52", "Gen9.5", False),
        ("intel repo 24.52", "Gen12", True),
        ("ppa 25.18", "Gen9.5", False),
        ("ppa 25.18", "Gen11", False),
        ("ppa 25.18", "Xe-HPG", True),
        ("ubuntu 24.04", "Xe2", None),  # newer than the runtime: not known here
        ("ubuntu 24.04", None, None),
    ],
)
def test_runtime_support(runtime: str, generation: str | None, supports: bool | None) -> None:
    package, version = RUNTIMES[runtime]
    found = opencl_runtimes({package: version})
    assert len(found) == 1
    assert found[0].supports(generation) is supports


def test_runtimes_among_packages() -> None:
    packages = {
        "intel-opencl-icd": "25.18.33578.15-0ubuntu1~24.04~ppa1",
        "intel-opencl-icd-legacy1": "24.35.30872.36",
        "libigdgmm12": "22.5.0",
        "ocl-icd-libopencl1": "2.3.2-1build1",
    }
    found = opencl_runtimes(packages)
    assert [(r.package, r.kind) for r in found] == [
        ("intel-opencl-icd", "regular"),
        ("intel-opencl-icd-legacy1", "legacy1"),
    ]
    assert "Gen12 and newer only" in found[0].describe()
    assert "Gen8-Gen11 only" in found[1].describe()
    assert (
        "before 24.35" in OpenClRuntime("intel-opencl-icd", "23.43.27642.40", "regular").describe()
    )


@pytest.mark.parametrize(
    ("runtime", "before_fix", "gen12_only"),
    [
        ("debian 12", True, False),
        ("ubuntu 24.04", True, False),  # 23.43: no GPU on kernel 6.8 without the NEO keys
        ("legacy1", False, False),
        ("regular 24.35", False, True),
        ("intel repo 24.52", False, True),
        ("ppa 25.18", False, True),
    ],
)
def test_runtime_against_the_kernel_68_fix_and_the_legacy_cut(
    runtime: str, before_fix: bool, gen12_only: bool
) -> None:
    (found,) = opencl_runtimes(dict([RUNTIMES[runtime]]))
    assert (found.before_gtt_fix, found.gen12_only) == (before_fix, gen12_only)


def test_runtime_of_24_13_has_the_fix() -> None:
    (found,) = opencl_runtimes({"intel-opencl-icd": "24.13.29138.7"})
    assert found.before_gtt_fix is False
    (older,) = opencl_runtimes({"intel-opencl-icd": "24.09.28717.12"})
    assert older.before_gtt_fix is True


def test_runtimes_from_library_file_names() -> None:
    found = runtimes_from_files(
        [
            "libze_intel_gpu.so.1",  # the link: no build in it
            "libze_intel_gpu.so.1.3.27642.40",  # Ubuntu 24.04's 23.43
            "libze_intel_gpu_legacy1.so.1.5.30872.36",
            "libigc.so.1.0.17537.24",
        ]
    )
    assert [(r.package, r.version, r.kind, r.build) for r in found] == [
        ("libze_intel_gpu.so", "1.3.27642.40", "regular", 27642),
        ("libze_intel_gpu_legacy1.so", "1.5.30872.36", "legacy1", 30872),
    ]
    assert found[0].before_gtt_fix and found[0].supports("Gen9.5")
    assert not found[1].before_gtt_fix


@pytest.mark.parametrize(
    ("release", "small_gtt"),
    [
        ("6.8.0-49-generic", True),  # Ubuntu 24.04 GA
        ("6.11.0-29-generic", True),  # 24.04 HWE
        ("6.9.3-060903-generic", True),
        ("6.5.0-45-generic", False),
        ("6.1.0-27-amd64", False),  # Debian 12
        ("5.15.0-125-generic", False),
        ("7.0.1", True),
    ],
)
def test_kernels_with_the_smaller_gtt(release: str, small_gtt: bool) -> None:
    assert kernel_has_small_gtt(release) is small_gtt


@pytest.mark.parametrize(
    ("file_name", "expected"),
    [
        ("libigc.so.1.0.17537.24", "libigc.so.1"),
        ("libigc.so.1", "libigc.so.1"),
        ("libopencl-clang.so.14", "libopencl-clang.so.14"),
        ("libigdgmm.so.12.5.0", "libigdgmm.so.12"),
        ("libigc.so", None),
    ],
)
def test_soname(file_name: str, expected: str | None) -> None:
    assert soname(file_name) == expected
