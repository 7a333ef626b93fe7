#!/usr/bin/env bash
# Fetch Debian's kernel packages for the kernel matrix into a cache outside
# the repository (never committed): bookworm's 6.1 and bookworm-backports'
# 6.12, each unpacked to <cache>/<release>/{vmlinuz,modules/}.
#
#   sudo test/kernels/fetch.sh [cache dir]     (default /var/cache/tenantnet/kernels)
#
# apt is pointed at a private configuration (bookworm + bookworm-backports):
# the system's sources and package state are not changed.
set -euo pipefail
CACHE="${1:-${TN_KERNEL_CACHE:-/var/cache/tenantnet/kernels}}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
mkdir -p "$CACHE"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK"/{etc/sources.list.d,etc/preferences.d,lists/partial,cache/archives/partial,dl}
touch "$WORK/status"
cat >"$WORK/etc/sources.list" <<EOT
deb $MIRROR bookworm main
deb $MIRROR bookworm-backports main
deb http://deb.debian.org/debian-security bookworm-security main
EOT
APT=(-o "Dir::Etc::sourcelist=$WORK/etc/sources.list" -o "Dir::Etc::sourceparts=$WORK/etc/sources.list.d"
	-o "Dir::Etc::preferencesparts=$WORK/etc/preferences.d" -o "Dir::State::Lists=$WORK/lists"
	-o "Dir::State::status=$WORK/status" -o "Dir::Cache=$WORK/cache" -o "APT::Get::List-Cleanup=0")
apt-get "${APT[@]}" -qq update 2>&1 | grep -v "unsandboxed" || true

# The versioned image packages behind the metapackage: bookworm's 6.1 and
# bookworm-backports' 6.12.
pkgs=$(apt-cache "${APT[@]}" show linux-image-amd64 2>/dev/null | awk '/^Depends: linux-image-[0-9]/ { print $2 }' | sort -u)
[[ -n $pkgs ]] || { echo "no kernel image packages found" >&2; exit 1; }
for pkg in $pkgs; do
	rel=${pkg#linux-image-}
	rel=${rel%-unsigned}
	if [[ -f $CACHE/$rel/vmlinuz ]]; then
		echo "$rel: cached"
		continue
	fi
	echo ">> $pkg"
	rm -rf "$WORK/dl"/*
	(cd "$WORK/dl" && apt-get "${APT[@]}" -qq download "$pkg")
	mkdir -p "$CACHE/$rel.tmp"
	dpkg-deb -x "$WORK"/dl/*.deb "$CACHE/$rel.tmp/root"
	cp "$CACHE/$rel.tmp/root/boot/vmlinuz-"* "$CACHE/$rel.tmp/vmlinuz"
	mv "$CACHE/$rel.tmp/root/lib/modules/"* "$CACHE/$rel.tmp/modules"
	rm -rf "$CACHE/$rel.tmp/root"
	rm -rf "$CACHE/$rel" && mv "$CACHE/$rel.tmp" "$CACHE/$rel"
	echo "$rel: $(du -sh "$CACHE/$rel" | cut -f1)"
done
ls "$CACHE"
