#!/usr/bin/env bash
# Builds, with no container registry, the local images the Docker end-to-end
# test needs, and skips each one that already exists with the current recipe:
#
#   backupd-test/debian:bookworm   debootstrap --variant=minbase from Debian's
#                                  mirror, slimmed like debian:bookworm-slim,
#                                  imported with `docker import`
#   backupd-test/postgres:15       Debian's postgresql-15 on that base
#                                  (postgres/Dockerfile beside this script)
#
# Usage: build-base-images.sh [--force]      (FORCE=1 works too)
# Env:   DEBIAN_MIRROR (http://deb.debian.org/debian), PG_MAJOR (15),
#        BASE_IMAGE, PG_IMAGE (tags), ROOTFS_CACHE (dir for the rootfs tarball,
#        default .cache/ beside this script; empty = no tarball cache)
#
# Idempotence: each image carries LABEL backupd-test.recipe=<N>; bump the
# RECIPE constants when a recipe changes and the next run rebuilds. The rootfs
# tarball is kept in ROOTFS_CACHE, so an image removed by `docker image prune`
# is re-imported in seconds without debootstrap.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BASE_IMAGE=${BASE_IMAGE:-backupd-test/debian:bookworm}
PG_MAJOR=${PG_MAJOR:-15}
PG_IMAGE=${PG_IMAGE:-backupd-test/postgres:${PG_MAJOR}}
SUITE=bookworm
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
ROOTFS_CACHE=${ROOTFS_CACHE-$HERE/.cache}
BASE_RECIPE=1
PG_RECIPE=1
FORCE=${FORCE:-0}
[ "${1:-}" = "--force" ] && FORCE=1

log() { printf '%s build-base-images: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# The recipe label of IMAGE, or nothing when the image does not exist.
recipe_of() {
    docker image inspect --format '{{index .Config.Labels "backupd-test.recipe"}}' "$1" 2>/dev/null || true
}

up_to_date() { [ "$FORCE" != 1 ] && [ "$(recipe_of "$1")" = "$2" ]; }

# Slim the rootfs the way debuerreotype makes debian:*-slim, and configure apt
# as in the official images (no recommends setting: Dockerfiles say it).
slim_rootfs() {
    local root=$1
    cat > "$root/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/man/*
EOF
    find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
    rm -rf "$root"/usr/share/{groff,info,linda,lintian,man}/*
    find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +

    cat > "$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
    echo 'Acquire::Languages "none";' > "$root/etc/apt/apt.conf.d/docker-no-languages"
    printf 'Acquire::GzipIndexes "true";\nAcquire::CompressionTypes::Order:: "gz";\n' \
        > "$root/etc/apt/apt.conf.d/docker-gzip-indexes"
    echo 'Apt::AutoRemove::SuggestsImportant "false";' > "$root/etc/apt/apt.conf.d/docker-autoremove-suggests"
    # Services never start during package installs (as in the official images).
    printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
    chmod 755 "$root/usr/sbin/policy-rc.d"

    # Sources as in debian:bookworm (deb822), with updates and security.
    rm -f "$root/etc/apt/sources.list"
    cat > "$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $DEBIAN_MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${DEBIAN_MIRROR%/debian}/debian-security
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    rm -rf "${root:?}"/var/lib/apt/lists/* "${root:?}"/var/cache/apt/*.bin \
        "${root:?}"/var/cache/apt/archives/*.deb "${root:?}"/var/cache/apt/archives/partial/* \
        "${root:?}"/var/log/* "${root:?}"/tmp/* "${root:?}"/var/tmp/* "${root:?}"/dev/*
    # Docker bind-mounts its own; leave empty files as the official images do.
    : > "$root/etc/resolv.conf"
    : > "$root/etc/hostname"
}

build_base() {
    if up_to_date "$BASE_IMAGE" "$BASE_RECIPE"; then
        log "$BASE_IMAGE is up to date (recipe $BASE_RECIPE): skipped"
        return
    fi
    local tarball=""
    [ -n "$ROOTFS_CACHE" ] && tarball="$ROOTFS_CACHE/debian-$SUITE-minbase-r$BASE_RECIPE.tar"
    if [ "$FORCE" = 1 ] || [ -z "$tarball" ] || [ ! -s "$tarball" ]; then
        if ! command -v debootstrap >/dev/null; then
            log "installing debootstrap"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null \
                || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null; }
        fi
        local work
        work=$(mktemp -d "${TMPDIR:-/var/tmp}/backupd-rootfs.XXXXXX")
        # shellcheck disable=SC2064
        trap "rm -rf '$work'" EXIT
        log "debootstrap --variant=minbase $SUITE from $DEBIAN_MIRROR"
        local t0=$SECONDS
        debootstrap --variant=minbase "$SUITE" "$work/rootfs" "$DEBIAN_MIRROR" > "$work/debootstrap.log" 2>&1 \
            || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
        log "debootstrap took $((SECONDS - t0)) s"
        slim_rootfs "$work/rootfs"
        if [ -n "$tarball" ]; then
            mkdir -p "$ROOTFS_CACHE"
            tar --numeric-owner -C "$work/rootfs" -cf "$tarball.partial" .
            mv "$tarball.partial" "$tarball"
        else
            tarball="$work/rootfs.tar"
            tar --numeric-owner -C "$work/rootfs" -cf "$tarball" .
        fi
    else
        log "re-importing the cached rootfs $tarball"
    fi
    local t0=$SECONDS
    docker import \
        --change 'LABEL backupd-test=1' \
        --change "LABEL backupd-test.recipe=$BASE_RECIPE" \
        --change "LABEL org.opencontainers.image.title=debian-$SUITE-minbase" \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["bash"]' \
        --message "debootstrap --variant=minbase $SUITE $DEBIAN_MIRROR" \
        "$tarball" "$BASE_IMAGE" >/dev/null
    log "imported $BASE_IMAGE in $((SECONDS - t0)) s"
}

build_postgres() {
    # Rebuilt when the recipe or the base's root filesystem layer changes (a
    # re-import of the same cached tarball keeps the layer digest, not the id).
    local layer
    layer=$(docker image inspect --format '{{index .RootFS.Layers 0}}' "$BASE_IMAGE")
    local want="$PG_RECIPE-${layer:7:12}"
    if up_to_date "$PG_IMAGE" "$want"; then
        log "$PG_IMAGE is up to date (recipe $want): skipped"
        return
    fi
    local t0=$SECONDS
    # DOCKER_BUILDKIT=0: the legacy builder (this CLI has no buildx); the
    # engine's default bridge network gives RUN steps DNS and the mirror.
    DOCKER_BUILDKIT=0 docker build -q \
        --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "PG_MAJOR=$PG_MAJOR" \
        --label backupd-test=1 --label "backupd-test.recipe=$want" \
        -t "$PG_IMAGE" "$HERE/postgres" >/dev/null
    log "built $PG_IMAGE in $((SECONDS - t0)) s"
}

build_base
build_postgres
docker image ls --filter label=backupd-test=1 >&2
