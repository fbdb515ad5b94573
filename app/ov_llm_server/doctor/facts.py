"""The host as this process sees it, without OpenVINO: OS, kernel, identity, packages, ICDs,
the runtime's libraries and the linker cache, PCI GPUs and DRM nodes.

Nothing here loads a GPU driver, so it cannot crash; the OpenVINO side runs in a child process
(``ov_child``). Run inside the service's sandbox, these are the service's own facts: its user
and groups, the device nodes its device cgroup lets it open.
"""

from __future__ import annotations

import errno
import grp
import os
import platform
import pwd
import shutil
import stat
import subprocess
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from .knowledge import LINKED_LIBRARY_PATTERNS, NEO_DEBUG_KEYS, PACKAGE_PATTERNS, soname

PYTHON_PACKAGES = ("openvino", "openvino-genai", "openvino-tokenizers", "ov-llm-server")


@dataclass(frozen=True)
class Paths:
    """Where the facts come from; tests point these at a made-up tree."""

    dev_dri: Path = Path("/dev/dri")
    sys_drm: Path = Path("/sys/class/drm")
    icd_dirs: tuple[Path, ...] = (Path("/etc/OpenCL/vendors"),)
    os_release: Path = Path("/etc/os-release")
    proc_self: Path = Path("/proc/self")
    proc_cmdline: Path = Path("/proc/cmdline")
    sys_pci: Path = Path("/sys/bus/pci/devices")
    sys_module: Path = Path("/sys/module")
    # Where the runtime's shared libraries go: Ubuntu's packages, Intel's GitHub .debs.
    lib_dirs: tuple[Path, ...] = (
        Path(f"/usr/lib/{platform.machine()}-linux-gnu"),
        Path("/usr/local/lib"),
    )


HOST = Paths()


@dataclass
class Identity:
    user: str
    uid: int
    groups: list[str]
    # Evidence of a systemd sandbox: no_new_privs, a seccomp filter, an empty bounding set.
    no_new_privs: bool | None = None
    seccomp: bool | None = None
    capabilities_dropped: bool | None = None
    cgroup: str | None = None


@dataclass
class RenderNode:
    name: str  # renderD128
    path: str  # /dev/dri/renderD128
    in_dev: bool  # the node exists in this process's /dev
    in_sysfs: bool  # the kernel has it
    vendor_id: str | None = None  # "0x8086"
    device_id: str | None = None  # "0x3e9b"
    driver: str | None = None  # "i915"
    group: str | None = None
    mode: str | None = None
    access: str = "missing"  # "ok", or why opening it read-write failed


@dataclass
class PciGpu:
    """A display controller (PCI class 0x03xx): there even when no driver binds it."""

    address: str  # 0000:00:02.0
    vendor_id: str | None  # "0x8086"
    device_id: str | None  # "0x3e9b"
    class_id: str | None  # "0x030000"
    driver: str | None  # "i915", or None when no driver is bound


@dataclass
class GpuLibrary:
    path: str
    soname: str  # libigc.so.1
    cached: bool | None  # listed by `ldconfig -p`; None when there is no ldconfig


@dataclass
class IcdFile:
    path: str
    library: str
    library_exists: bool | None  # None: a bare library name, resolved by the dynamic linker
    intel: bool


@dataclass
class SystemFacts:
    os: str
    kernel: str
    cpu: str
    memory_gib: float | None
    python: str
    python_packages: dict[str, str]
    identity: Identity
    # Installed Debian packages of the GPU stack (name -> version); None without dpkg.
    debian_packages: dict[str, str] | None
    # Removed packages whose configuration files (e.g. an ICD file) are still on disk.
    debian_leftovers: list[str] = field(default_factory=list)
    icd_files: list[IcdFile] = field(default_factory=list)
    render_nodes: list[RenderNode] = field(default_factory=list)
    pci_gpus: list[PciGpu] = field(default_factory=list)
    kernel_cmdline: str | None = None
    i915_loaded: bool | None = None  # /sys/module/i915: loaded as a module or built in
    gpu_libraries: list[GpuLibrary] = field(default_factory=list)
    # The compute runtime's debug keys in this process's environment (the kernel 6.8 fix).
    neo_environment: dict[str, str] = field(default_factory=dict)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def os_name(paths: Paths = HOST) -> str:
    text = _read(paths.os_release) or ""
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "PRETTY_NAME":
            return value.strip().strip('"')
    return platform.system()


def cpu_and_memory() -> tuple[str, float | None]:
    """(the CPU's model name, memory in GiB)."""
    cpu = platform.processor() or platform.machine()
    for line in (_read(Path("/proc/cpuinfo")) or "").splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = None
    for line in (_read(Path("/proc/meminfo")) or "").splitlines():
        if line.startswith("MemTotal:"):
            memory = round(int(line.split()[1]) / 1024 / 1024, 1)
            break
    return cpu, memory


def python_packages() -> dict[str, str]:
    versions = {}
    for name in PYTHON_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def identity(paths: Paths = HOST) -> Identity:
    uid = os.geteuid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    primary = _group_name(os.getegid())
    others = sorted({_group_name(gid) for gid in os.getgroups()} - {primary})
    found = Identity(user=user, uid=uid, groups=[primary, *others])
    status = {}
    for line in (_read(paths.proc_self / "status") or "").splitlines():
        key, _, value = line.partition(":")
        status[key] = value.strip()
    if "NoNewPrivs" in status:
        found.no_new_privs = status["NoNewPrivs"] == "1"
    if "Seccomp" in status:
        found.seccomp = status["Seccomp"] != "0"
    if "CapBnd" in status:
        found.capabilities_dropped = int(status["CapBnd"], 16) == 0
    cgroup = _read(paths.proc_self / "cgroup")
    if cgroup:
        found.cgroup = cgroup.splitlines()[-1].split(":", 2)[-1]
    return found


def debian_packages() -> tuple[dict[str, str] | None, list[str]]:
    """(installed GPU-stack packages -> version, removed ones with configuration left)."""
    if shutil.which("dpkg-query") is None:
        return None, []
    result = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package}\t${Version}\t${db:Status-Abbrev}\n"]
        + list(PACKAGE_PATTERNS),
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    installed: dict[str, str] = {}
    leftovers: list[str] = []
    for line in result.stdout.splitlines():
        name, _, rest = line.partition("\t")
        version, _, status = rest.partition("\t")
        name = name.split(":", 1)[0]  # drop a multiarch qualifier
        if status.startswith("ii") or status.startswith("hi"):
            installed[name] = version
        elif status.startswith("rc"):
            leftovers.append(name)
    return installed, sorted(leftovers)


def icd_files(paths: Paths = HOST) -> list[IcdFile]:
    dirs = list(paths.icd_dirs)
    # The ICD loader reads OCL_ICD_VENDORS instead when it names a directory.
    override = os.environ.get("OCL_ICD_VENDORS")
    if override and Path(override).is_dir():
        dirs = [Path(override)]
    found = []
    for directory in dirs:
        for path in sorted(directory.glob("*.icd")):
            library = (_read(path) or "").splitlines()[0:1]
            name = library[0].strip() if library else ""
            exists = Path(name).exists() if name.startswith("/") else None
            found.append(IcdFile(str(path), name, exists, intel="igdrcl" in name))
    return found


def _sysfs_id(device_dir: Path, name: str) -> str | None:
    value = _read(device_dir / name)
    return value.lower() if value else None


def _open_error(path: Path) -> str:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        return f"{code}: {exc.strerror}"
    os.close(fd)
    return "ok"


def render_nodes(paths: Paths = HOST) -> list[RenderNode]:
    """Every render node the kernel has (sysfs) or this process's /dev shows, and whether
    this process may open it: a node in sysfs but not in /dev is hidden by a sandbox or a
    container; one in /dev that fails to open is refused by permissions or a device cgroup."""
    names = {p.name for p in paths.sys_drm.glob("renderD*")}
    names |= {p.name for p in paths.dev_dri.glob("renderD*")}
    nodes = []
    for name in sorted(names):
        sys_dir = paths.sys_drm / name
        dev_path = paths.dev_dri / name
        node = RenderNode(
            name=name, path=str(dev_path), in_dev=dev_path.exists(), in_sysfs=sys_dir.exists()
        )
        device_dir = sys_dir / "device"
        if node.in_sysfs:
            node.vendor_id = _sysfs_id(device_dir, "vendor")
            node.device_id = _sysfs_id(device_dir, "device")
            driver = device_dir / "driver"
            if driver.is_symlink():
                node.driver = os.readlink(driver).rsplit("/", 1)[-1]
        if node.in_dev:
            info = dev_path.stat()
            node.group = _group_name(info.st_gid)
            node.mode = f"{stat.S_IMODE(info.st_mode):04o}"
            node.access = _open_error(dev_path)
        nodes.append(node)
    return nodes


def pci_gpus(paths: Paths = HOST) -> list[PciGpu]:
    found = []
    for device_dir in sorted(paths.sys_pci.glob("*")):
        class_id = _sysfs_id(device_dir, "class")
        if class_id is None or not class_id.startswith("0x03"):
            continue
        driver = device_dir / "driver"
        found.append(
            PciGpu(
                address=device_dir.name,
                vendor_id=_sysfs_id(device_dir, "vendor"),
                device_id=_sysfs_id(device_dir, "device"),
                class_id=class_id,
                driver=os.readlink(driver).rsplit("/", 1)[-1] if driver.is_symlink() else None,
            )
        )
    return found


def linker_cache() -> set[str] | None:
    """The library names `ldconfig -p` lists; None without ldconfig."""
    ldconfig = shutil.which("ldconfig") or shutil.which("ldconfig", path="/sbin:/usr/sbin")
    if ldconfig is None:
        return None
    result = subprocess.run(
        [ldconfig, "-p"], capture_output=True, text=True, check=False, timeout=30
    )
    if result.returncode != 0:
        return None
    # "\tlibigc.so.1 (libc6,x86-64) => /usr/local/lib/libigc.so.1"
    return {line.split()[0] for line in result.stdout.splitlines()[1:] if line.strip()}


def gpu_libraries(paths: Paths = HOST, cache: set[str] | None = None) -> list[GpuLibrary]:
    """The runtime's shared libraries on disk, and whether the linker cache knows each."""
    found: dict[str, GpuLibrary] = {}
    for directory in paths.lib_dirs:
        for pattern in LINKED_LIBRARY_PATTERNS:
            for path in directory.glob(pattern):
                name = soname(path.name)
                known = found.get(name or "")
                # The longest name is the file itself (libigc.so.1.0.17537.24), the others
                # its links; its name carries the version.
                if name is None or (known and len(Path(known.path).name) >= len(path.name)):
                    continue
                cached = None if cache is None else name in cache
                found[name] = GpuLibrary(str(path), name, cached)
    return sorted(found.values(), key=lambda library: library.soname)


def gather(paths: Paths = HOST) -> SystemFacts:
    cpu, memory = cpu_and_memory()
    packages, leftovers = debian_packages()
    return SystemFacts(
        os=os_name(paths),
        kernel=platform.release(),
        cpu=cpu,
        memory_gib=memory,
        python=platform.python_version(),
        python_packages=python_packages(),
        identity=identity(paths),
        debian_packages=packages,
        debian_leftovers=leftovers,
        icd_files=icd_files(paths),
        render_nodes=render_nodes(paths),
        pci_gpus=pci_gpus(paths),
        kernel_cmdline=_read(paths.proc_cmdline),
        i915_loaded=(paths.sys_module / "i915").exists(),
        gpu_libraries=gpu_libraries(paths, linker_cache()),
        neo_environment={k: os.environ[k] for k in NEO_DEBUG_KEYS if k in os.environ},
    )
