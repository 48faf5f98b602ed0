#!/bin/sh
# The container's entry point: pxq with bcc pointed at the node's kernel headers. The DaemonSet
# mounts the node's /lib/modules and /usr/src at the same paths; where the node's
# /lib/modules/<release>/build link is missing (kernels whose headers were installed apart), bcc
# is told where the headers are (BCC_KERNEL_SOURCE) instead of a link in a read-only mount.
set -eu
release=$(uname -r)
if [ ! -e "/lib/modules/$release/build" ] && [ -z "${BCC_KERNEL_SOURCE:-}" ]; then
    for candidate in "/usr/src/linux-headers-$release" "/usr/src/kernels/$release"; do
        if [ -d "$candidate" ]; then
            BCC_KERNEL_SOURCE=$candidate
            export BCC_KERNEL_SOURCE
            break
        fi
    done
fi
exec /opt/pxq/venv/bin/pxq "$@"
