#!/usr/bin/env bash
# Build the Molecule platform images: Debian with systemd as PID 1, one per
# suite (trixie, bookworm).
#
# No container registry is reachable from CI, so each image is bootstrapped
# from Debian's archive with debootstrap and imported into podman. The tag
# carries a hash of this script and of the host CA certificates, so an edit to
# either builds new images while an unchanged setup reuses the cached ones.
#
# Usage: molecule/image/build.sh [SUITE ...]   (default: trixie bookworm; build unless cached)
#        OV_MOLECULE_IMAGE_REBUILD=1 molecule/image/build.sh
set -euo pipefail

readonly mirror="${OV_MOLECULE_MIRROR:-http://deb.debian.org/debian}"
readonly host_ca_dir=/usr/local/share/ca-certificates
# What a fresh Ubuntu server brings and Ansible/testinfra need; nothing of the
# roles' own packages, so that converge installs them the way it would on the host.
readonly packages=systemd,systemd-sysv,dbus,python3,python3-apt,python3-venv,python3-pip,sudo,ca-certificates,iproute2,procps

hash_inputs() {
  cat "$0"
  if [[ -d $host_ca_dir ]]; then
    find "$host_ca_dir" -type f -name '*.crt' -print0 | sort -z | xargs -0r cat
  fi
}
tag="$(hash_inputs | sha256sum | cut -c1-12)"
readonly tag

build() {
  local suite=$1
  local repo_name="localhost/ov-molecule-${suite}"
  local image="${repo_name}:${tag}"
  if [[ -z ${OV_MOLECULE_IMAGE_REBUILD:-} ]] && podman image exists "$image"; then
    echo "image ${image} is cached"
    podman tag "$image" "${repo_name}:latest"
    return 0
  fi
  rootfs="$(mktemp -d /var/tmp/ov-molecule-rootfs.XXXXXX)"
  trap 'rm -rf --one-file-system "$rootfs" "${rootfs}.log"' EXIT
  # mktemp makes the directory 0700, and it becomes the image's /.
  chmod 0755 "$rootfs"

  echo "debootstrap ${suite} into ${rootfs}"
  debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" >"${rootfs}.log" 2>&1 ||
    { tail -n 50 "${rootfs}.log"; exit 1; }

  # Full apt sources as on an installed system (debootstrap writes only main).
  rm -f "$rootfs/etc/apt/sources.list"
  printf '%s\n' \
    "Types: deb" "URIs: ${mirror}" "Suites: ${suite} ${suite}-updates" "Components: main" \
    "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" "" \
    "Types: deb" "URIs: http://deb.debian.org/debian-security" "Suites: ${suite}-security" \
    "Components: main" "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" \
    >"$rootfs/etc/apt/sources.list.d/debian.sources"

  # HTTPS leaves this network through an intercepting proxy: the container must
  # trust the same CAs as the host, or pip and apt fail on certificates.
  if [[ -d $host_ca_dir ]]; then
    find "$host_ca_dir" -maxdepth 1 -type f -name '*.crt' -exec cp -t "$rootfs/usr/local/share/ca-certificates/" {} +
  fi
  chroot "$rootfs" update-ca-certificates >/dev/null

  # Keep the package lists: Ansible's apt cache_valid_time needs them, and a
  # fresh list makes the first converge cheaper.
  chroot "$rootfs" apt-get update -qq
  chroot "$rootfs" apt-get clean

  # Units that need hardware or a console a container does not have.
  for unit in systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket \
    systemd-udev-trigger.service systemd-udev-settle.service systemd-modules-load.service \
    systemd-firstboot.service systemd-remount-fs.service systemd-hwdb-update.service \
    getty@tty1.service getty.target console-getty.service serial-getty@.service \
    sys-kernel-config.mount sys-kernel-debug.mount sys-kernel-tracing.mount \
    sys-fs-fuse-connections.mount dev-hugepages.mount proc-sys-fs-binfmt_misc.automount \
    apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer; do
    ln -sf /dev/null "$rootfs/etc/systemd/system/${unit}"
  done

  # A fresh machine id on first boot, like a freshly installed host.
  : >"$rootfs/etc/machine-id"
  rm -f "$rootfs/var/lib/dbus/machine-id"

  echo "importing ${image}"
  tar -C "$rootfs" --numeric-owner -c . |
    podman import --quiet \
      --change 'CMD ["/sbin/init"]' \
      --change 'STOPSIGNAL SIGRTMIN+3' \
      --change 'ENV container=podman' \
      - "$image"
  podman tag "$image" "${repo_name}:latest"
  # Images of earlier inputs are of no use any more.
  podman images --format '{{.Repository}}:{{.Tag}}' "$repo_name" |
    grep -v -x -e "$image" -e "${repo_name}:latest" |
    xargs -r podman rmi >/dev/null 2>&1 || true
  rm -rf --one-file-system "$rootfs" "${rootfs}.log"
  trap - EXIT
  echo "built ${image}"
}

suites=("$@")
((${#suites[@]})) || suites=(trixie bookworm)
for suite in "${suites[@]}"; do
  build "$suite"
done
