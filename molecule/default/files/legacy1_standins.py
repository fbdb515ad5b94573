"""Build stand-ins of Intel's legacy1 compute-runtime .debs and the list the role installs.

The real names, versions, dependencies (so that only the listed install order works) and the
legacy1 ICD file, but no driver inside: CI has no Intel GPU and cannot reach GitHub. Writes
OUT/<package>_<version>_amd64.deb and OUT/debs.json, the value of the role's
intel_gpu_runtime_legacy1_debs (url and sha256 of each, in install order).

Usage: python3 legacy1_standins.py OUT BASE_URL
"""

import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ICD_LIBRARY = "/usr/lib/x86_64-linux-gnu/intel-opencl/libigdrcl_legacy1.so"
IGC = "1.0.17537.24"
# (package, version, depends, files), in the order Intel's release notes install them.
PACKAGES = [
    ("libigdgmm12", "22.5.0", "", {}),
    ("intel-igc-core", IGC, "", {}),
    ("intel-igc-opencl", IGC, f"intel-igc-core (= {IGC})", {}),
    (
        "intel-opencl-icd-legacy1",
        "24.35.30872.36",
        f"intel-igc-opencl (= {IGC}), libigdgmm12 (>= 22.5.0), ocl-icd-libopencl1",
        {"etc/OpenCL/vendors/intel_legacy1.icd": ICD_LIBRARY + "\n", ICD_LIBRARY[1:]: ""},
    ),
    (
        "intel-level-zero-gpu-legacy1",
        "1.5.30872.36",
        f"intel-igc-core (= {IGC}), libigdgmm12 (>= 22.5.0)",
        {},
    ),
]


def build(out: Path, package: str, version: str, depends: str, files: dict[str, str]) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = {**files, f"usr/share/doc/{package}/README.stand-in": "A CI stand-in.\n"}
        for name, content in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(content)
        control = [
            f"Package: {package}",
            f"Version: {version}",
            "Architecture: amd64",
            "Maintainer: ov-llm-server CI <ci@localhost>",
            "Section: libs",
            "Priority: optional",
        ]
        if depends:
            control.append(f"Depends: {depends}")
        control.append(f"Description: stand-in of Intel's {package} {version}")
        (root / "DEBIAN").mkdir()
        (root / "DEBIAN" / "control").write_text("\n".join(control) + "\n")
        conffiles = ["/" + name for name in files if name.startswith("etc/")]
        if conffiles:
            (root / "DEBIAN" / "conffiles").write_text("\n".join(conffiles) + "\n")
        deb = out / f"{package}_{version}_amd64.deb"
        subprocess.run(
            ["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        return deb


def main() -> int:
    out, base_url = Path(sys.argv[1]), sys.argv[2].rstrip("/")
    out.mkdir(parents=True, exist_ok=True)
    listing = []
    for package, version, depends, files in PACKAGES:
        deb = build(out, package, version, depends, files)
        digest = hashlib.sha256(deb.read_bytes()).hexdigest()
        listing.append({"url": f"{base_url}/{deb.name}", "sha256": digest})
    (out / "debs.json").write_text(json.dumps(listing, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
