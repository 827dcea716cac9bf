#!/usr/bin/env bash
# Build the container image for real with Debian's buildah, without pulling anything, and run
# its entry point once. No registry is reachable here, so the base image is made locally with
# debootstrap and stored under the name the Dockerfile starts FROM.
#
#   bash scripts/build-image.sh [COMMAND ARGS...]   # default check: csi-vduse --version
#
# Apt inside the build reaches the same Debian mirror as the host: the base gets the host's
# Debian sources (read with apt-get indextargets) and its apt proxy, if any (apt-config).
# Pip reaches the package index through the host's CA bundle, passed as a build secret.
# The debootstrap base is cached in ~/.cache/csi-vduse/image; buildah's store is a fresh
# temporary directory, removed at exit.
set -euo pipefail
cd "$(dirname "$0")/.."

base_image=docker.io/library/debian:bookworm-slim
suite=bookworm
image=localhost/csi-vduse:ci
cache=${CSI_VDUSE_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/csi-vduse/image}
ca_bundle=${CSI_VDUSE_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
check=("$@")
(( ${#check[@]} )) || check=(csi-vduse --version)

for tool in buildah debootstrap apt-get apt-config; do
    command -v "$tool" >/dev/null || { echo "build-image: $tool is missing (scripts/setup.sh installs it)" >&2; exit 1; }
done

# Host apt configuration: the Debian archive and security URIs for this suite, and a proxy.
sources=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' 'Identifier: Packages' \
          | awk -v s="$suite" '$2 == s || $2 == s "-updates" || $2 == s "-security"' | sort -u)
archive=$(awk -v s="$suite" '$2 == s && $3 == "main" {print $1; exit}' <<<"$sources")
security=$(awk -v s="$suite" '$2 == s "-security" && $3 == "main" {print $1; exit}' <<<"$sources")
[[ -n $archive ]] || { echo "build-image: the host has no apt source for Debian $suite main" >&2; exit 1; }
apt_proxy=""
eval "$(apt-config shell apt_proxy Acquire::http::Proxy)"

store=$(mktemp -d /tmp/csi-vduse-buildah.XXXXXX)
cleanup() {
    buildah --root "$store/root" --runroot "$store/run" --storage-driver vfs rm --all >/dev/null 2>&1 || true
    rm -rf "$store"
}
trap cleanup EXIT
bah() { buildah --root "$store/root" --runroot "$store/run" --storage-driver vfs "$@"; }

# 1. The base: debootstrap minbase, trimmed like Debian's slim images, cached as a tarball.
base_tar=$cache/$suite-minbase.tar
if [[ ! -s $base_tar ]]; then
    echo "build-image: debootstrap $suite (minbase) from the host's Debian mirror"
    mkdir -p "$cache"
    rootfs=$store/rootfs
    http_proxy=$apt_proxy debootstrap --variant=minbase "$suite" "$rootfs" "$archive" \
        >"$store/debootstrap.log" 2>&1 || { tail -20 "$store/debootstrap.log"; exit 1; }
    {
        printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
            "$archive" "$suite" "$suite"
        if [[ -n $security ]]; then
            printf '\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
                "$security" "$suite"
        fi
    } >"$rootfs/etc/apt/sources.list.d/debian.sources"
    rm -f "$rootfs/etc/apt/sources.list"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
           "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
    tar -C "$rootfs" --numeric-owner -cf "$base_tar.tmp" .
    mv "$base_tar.tmp" "$base_tar"
fi

started=$SECONDS
container=$(bah from scratch)
bah add "$container" "$base_tar" / >/dev/null
bah config --cmd /bin/bash --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$container"
bah commit --quiet "$container" "$base_image" >/dev/null
bah rm "$container" >/dev/null
echo "build-image: base $base_image imported ($((SECONDS - started)) s)"

# 2. The image, from the Dockerfile, as any builder would build it.
build_args=(--build-arg "APT_PROXY=$apt_proxy")
if [[ -r $ca_bundle ]]; then
    build_args+=(--secret "id=pip-ca,src=$ca_bundle" --build-arg PIP_CERT=/run/secrets/pip-ca)
fi
started=$SECONDS
bah build --isolation chroot --pull=never --layers=false "${build_args[@]}" \
    -f Dockerfile -t "$image" . >"$store/build.log" 2>&1 || { tail -40 "$store/build.log"; exit 1; }
echo "build-image: $image built ($((SECONDS - started)) s)"
bah images --format '{{.Name}}:{{.Tag}} {{.Size}}' "$image"

# 3. The tools the node plugin calls are there, and the entry point runs as the default user.
container=$(bah from --pull=never "$image")
bah run --isolation chroot "$container" -- sh -c '
    for tool in mkfs.ext4 mkfs.xfs blkid mount umount findmnt fsck resize2fs xfs_growfs modprobe; do
        command -v "$tool" >/dev/null || { echo "build-image: $tool missing from the image" >&2; exit 1; }
    done
    /opt/csi-vduse/bin/python -c "import csi_vduse.dataplane.rbd._rbd" \
        || { echo "build-image: the RBD backend cannot load librbd" >&2; exit 1; }'
user=$(bah inspect --format '{{.OCIv1.Config.User}}' "$container")
echo "build-image: running '${check[*]}' as user $user"
bah run --isolation chroot "$container" -- "${check[@]}"
echo "build-image: ok"
