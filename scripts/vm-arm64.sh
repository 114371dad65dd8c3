#!/usr/bin/env bash
# vm-arm64.sh proves that the arm64 build of pathtrace loads, attaches and sees packets on
# an arm64 kernel: it boots Debian bookworm's generic arm64 kernel under qemu-system-aarch64
# (TCG) with an initramfs of a static arm64 busybox, the given pathtrace and the kernel
# modules the test needs, and no other root filesystem. Inside, the init script runs
# `pathtrace doctor --programs`, then follows ICMP in a network namespace joined to the VM's
# own by a veth pair (192.0.2.1 in the VM's namespace, 192.0.2.2 in "pt") while the VM
# pings across it, and checks that the journeys show the veth hops (tc) and a netfilter
# hook (the kprobe on nf_hook_slow, on 6.1). All traffic stays in the VM; the VM has no
# network device.
#
#   scripts/vm-arm64.sh fetch          download the kernel and busybox into the cache
#   scripts/vm-arm64.sh run [BINARY]   boot with BINARY (default bin/linux_arm64/pathtrace);
#                                      exit 0 when the VM printed PASS, 1 otherwise
#
# The host's apt sources are not touched: a private apt configuration for arm64 under
# $VM_CACHE/arm64 downloads the packages (apt-get download, nothing is installed).
# Environment: VM_CACHE (default /var/cache/pathtrace-vm), VM_MEM (MiB, 1536), VM_CPUS (2),
# VM_TIMEOUT (seconds for the whole VM run, 1800), VM_LOG (the serial console's copy,
# default $VM_CACHE/arm64/console.log).
set -euo pipefail
shopt -s inherit_errexit
cache=${VM_CACHE:-/var/cache/pathtrace-vm}/arm64
suite=bookworm
# veth for the pair; sch_ingress and cls_bpf for tc before tcx (6.6); nf_conntrack and
# br_netfilter as scripts/vm.sh loads them for the x86 matrix, so that doctor reports
# under the same conditions.
modules=(veth sch_ingress cls_bpf nf_conntrack br_netfilter)
die() { echo "vm-arm64.sh: $*" >&2; exit 1; }
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

aptopts() {
	echo -o Dir::Etc::SourceList="$cache/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null \
		-o Dir::State::Lists="$cache/apt/lists" -o Dir::Cache="$cache/apt" -o Dir::State::status="$cache/apt/status" \
		-o APT::Architecture=arm64 -o APT::Architectures=arm64 -o Acquire::Languages=none \
		-o Debug::NoLocking=1 -o APT::Sandbox::User=root
}

aptsetup() {
	mkdir -p "$cache/apt/lists/partial" "$cache/apt/archives/partial"
	touch "$cache/apt/status" # no packages "installed" for arm64: the host's dpkg status is not read
	local kr=/usr/share/keyrings/debian-archive-keyring.gpg
	[[ -r $kr ]] || die "$kr missing: apt-get install debian-archive-keyring"
	local want; want=$(mktemp)
	echo "deb [arch=arm64 signed-by=$kr] http://deb.debian.org/debian $suite main" >"$want"
	cmp -s "$want" "$cache/apt/sources.list" || cp "$want" "$cache/apt/sources.list"
	rm -f "$want"
	# Refresh the lists once a day.
	local stamp=$cache/apt/lists/.updated
	if [[ ! -f $stamp || $cache/apt/sources.list -nt $stamp || -n $(find "$stamp" -mmin +1440) ]]; then
		# shellcheck disable=SC2046
		apt-get $(aptopts) update -qq || die "apt-get update with the private arm64 configuration failed"
		touch "$stamp"
	fi
}

# fetch: unpack the kernel (vmlinuz, modules with their modules.dep, release) into
# $cache/kernel and the static busybox into $cache/busybox.
fetch() {
	local dir=$cache/kernel
	[[ -f $dir/vmlinuz && -d $dir/modules && -x $cache/busybox ]] && return
	aptsetup
	local tmp; tmp=$(mktemp -d)
	(
		cd "$tmp"
		# shellcheck disable=SC2046
		apt-get $(aptopts) download -qq linux-image-arm64 busybox-static >&2 ||
			die "download linux-image-arm64 busybox-static ($suite, arm64) failed"
		local dep
		dep=$(dpkg-deb -f linux-image-arm64_*.deb Depends | tr ',' '\n' | grep -o 'linux-image-[^ ]*-arm64' | grep -v cloud | head -1)
		[[ -n $dep ]] || die "linux-image-arm64 ($suite) names no kernel package"
		# shellcheck disable=SC2046
		apt-get $(aptopts) download -qq "$dep" >&2 || die "download $dep failed"
		mkdir k b
		dpkg-deb -x "$dep"_*.deb k
		dpkg-deb -x busybox-static_*.deb b
		file -L b/bin/busybox | grep -q 'ARM aarch64.*statically linked' || die "busybox-static is not a static arm64 binary: $(file -L b/bin/busybox)"
		local rel=${dep#linux-image-}
		[[ -d k/lib/modules ]] || { mkdir -p k/lib && mv k/usr/lib/modules k/lib/; }
		depmod -b k "$rel" || die "depmod $rel failed"
		rm -rf "$dir.new"; mkdir -p "$dir.new"
		cp k/boot/vmlinuz-"$rel" "$dir.new/vmlinuz"
		cp k/boot/config-"$rel" "$dir.new/config"
		mv k/lib/modules/"$rel" "$dir.new/modules"
		echo "$rel" >"$dir.new/release"
		cp b/bin/busybox "$cache/busybox.new"
	)
	rm -rf "$dir" && mv "$dir.new" "$dir"
	mv "$cache/busybox.new" "$cache/busybox"
	rm -rf "$tmp"
}

# moddeps NAME: append NAME's module file and those it needs to $load, needed ones first,
# each once. modules.dep lists every module a module needs (transitively); loading each of
# those after its own needs gives an order insmod accepts. A soft dependency ("softdep M
# pre: crc32c", an alias: libcrc32c fails to load without a crc32c) counts as a need.
load=()
declare -A seen=()
moddeps() {
	local dir=$cache/kernel/modules m=$1 line f d
	line=$(grep -m1 -E "(^|/)$m\.ko(\.xz|\.zst)?:" "$dir/modules.dep") || {
		d=$(awk -v a="$m" '$1 == "alias" && $2 == a { print $3; exit }' "$dir/modules.alias")
		[[ -n $d ]] && { moddeps "$d"; return; }
		grep -qE "(^|/)$m\.ko$" "$dir/modules.builtin" && return # built in: nothing to load
		die "module $m: neither in modules.dep nor built in"
	}
	f=${line%%:*}
	[[ -n ${seen[$f]:-} ]] && return
	seen[$f]=1
	for d in $(awk -v m="$m" '$1 == "softdep" && $2 == m {
		for (i = 3; i <= NF; i++) { if ($i == "post:") break; if ($i != "pre:") print $i } }' "$dir/modules.softdep"); do
		moddeps "$d"
	done
	for d in ${line#*:}; do moddeps "$(basename "${d%%.ko*}")"; done
	load+=("$f")
}

# initramfs BINARY OUT: busybox, BINARY as /bin/pathtrace, the modules (decompressed, in
# load order) and the init script that runs the test.
initramfs() {
	local bin=$1 out=$2 dir=$cache/kernel
	local r; r=$(mktemp -d)
	mkdir -p "$r"/{bin,dev,proc,sys,tmp,run,modules}
	cp "$cache/busybox" "$r/bin/busybox"
	cp "$bin" "$r/bin/pathtrace"
	local m f n
	for m in "${modules[@]}"; do moddeps "$m"; done
	touch "$r/modules/order"
	for f in "${load[@]}"; do
		n=$(basename "${f%%.ko*}")
		case $f in
		*.xz) xz -dc "$dir/modules/$f" >"$r/modules/$n.ko" ;;
		*.zst) zstd -qdc "$dir/modules/$f" >"$r/modules/$n.ko" ;;
		*) cp "$dir/modules/$f" "$r/modules/$n.ko" ;;
		esac
		echo "$n" >>"$r/modules/order"
	done
	cat >"$r/init" <<'INIT'
#!/bin/busybox sh
# PID 1 of the arm64 VM: the test, then poweroff. Every line the host judges starts "vm-arm64:".
/bin/busybox --install -s /bin
export PATH=/bin HOME=/
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mkdir -p /sys/fs/bpf /run/netns
mount -t bpf bpf /sys/fs/bpf
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t tmpfs tmpfs /tmp
mount -t securityfs securityfs /sys/kernel/security
hostname arm64-vm
up() { cut -d' ' -f1 /proc/uptime; }
fail() { echo "vm-arm64: FAIL: $*"; sync; poweroff -f; }
echo "vm-arm64: up at $(up) s: kernel $(uname -r) $(uname -m), $(grep -c ^processor /proc/cpuinfo) CPUs"
echo "vm-arm64: $(cat /proc/version)"
for m in $(cat /modules/order); do insmod /modules/$m.ko || fail "insmod $m"; done
echo "vm-arm64: modules $(tr '\n' ' ' </modules/order); LSMs $(cat /sys/kernel/security/lsm)"

# The namespace "pt" with vethpt1 (192.0.2.2); its peer vethpt0 (192.0.2.1) in the VM's.
# busybox ip ignores "peer name": the kernel names the peer veth0, renamed below.
touch /run/netns/pt
unshare --net=/run/netns/pt true || fail "unshare --net"
ip link set lo up
pt() { nsenter --net=/run/netns/pt "$@"; }
pt ip link set lo up
pt ip link add vethpt1 type veth || fail "ip link add type veth"
pt ip link set veth0 netns 1 || fail "move the peer to the VM's namespace"
ip link set veth0 name vethpt0
ip addr add 192.0.2.1/24 dev vethpt0 && ip link set vethpt0 up || fail "vethpt0 up"
pt ip addr add 192.0.2.2/24 dev vethpt1 && pt ip link set vethpt1 up || fail "vethpt1 up"

echo "vm-arm64: doctor --programs at $(up) s"
t0=$(up)
pathtrace doctor --programs; rc=$?
echo "vm-arm64: doctor exit $rc after $(awk "BEGIN{print $(up)-$t0}") s"
[ $rc = 0 ] || fail "pathtrace doctor --programs exit $rc"

echo "vm-arm64: follow at $(up) s"
t0=$(up)
pathtrace follow --netns pt --ifaces 'veth*' --proto icmp --ready-file /tmp/ready \
	--count 4 --duration 600s 192.0.2.2 >/tmp/follow.out 2>/tmp/follow.err &
fpid=$!
i=0
while [ ! -e /tmp/ready ]; do
	kill -0 $fpid 2>/dev/null || { cat /tmp/follow.err; fail "follow exited before it was ready"; }
	i=$((i + 1)); [ $i -le 600 ] || { cat /tmp/follow.err; fail "follow not ready in 600 s"; }
	sleep 1
done
echo "vm-arm64: follow ready after $(awk "BEGIN{print $(up)-$t0}") s"
ping -c 6 -i 0.5 -W 2 192.0.2.2 || fail "ping 192.0.2.2 over the veth pair"
wait $fpid; rc=$?
echo "vm-arm64: follow exit $rc; its output:"
cat /tmp/follow.out /tmp/follow.err
[ $rc = 0 ] || fail "pathtrace follow exit $rc"

# What a user would check: the echo request enters pt at vethpt1 (ingress); the reply
# passes POSTROUTING on its way out of pt and leaves at vethpt1 (egress). Without
# netfilter links (6.4) the POSTROUTING hop comes from the kprobe on nf_hook_slow, the one
# program whose arguments arm64 passes in other registers (x0, x1: user_pt_regs.regs[0],
# [1]): the hop is there, with the hook and device, only if it read both the skb and the
# hook state (with the registers shifted by one, it loads and attaches but the hop
# vanishes and this fails). The hook there is the LSM's, no table needed: Debian's
# kernels run AppArmor, which hooks IPv4 POSTROUTING in every namespace (SELinux would add
# OUTPUT). The kprobe reports the traced namespace's hooks only, so the request's
# POSTROUTING in the VM's namespace is not in its journey.
res=$(awk '
	/^[^ ]/ { req = $0 ~ /^192\.0\.2\.1 .* 192\.0\.2\.2 ICMP/; rep = $0 ~ /^192\.0\.2\.2 .* 192\.0\.2\.1 ICMP/ }
	req && /^ .* vethpt1 +ingress/ { a = 1 }
	rep && /^ .* POSTROUTING +entry +out=vethpt1/ { b = 1 }
	rep && /^ .* vethpt1 +egress/ { c = 1 }
	END {
		if (!a) printf " no request at vethpt1 ingress;"
		if (!b) printf " no reply at POSTROUTING out=vethpt1 (kprobe);"
		if (!c) printf " no reply at vethpt1 egress;"
	}
' /tmp/follow.out)
[ -z "$res" ] || fail "follow's journeys:$res"
echo "vm-arm64: PASS: doctor loaded every program; follow saw the pings at vethpt1 (tc) and POSTROUTING (kprobe) ($(up) s)"
sync
poweroff -f
INIT
	chmod +x "$r/init"
	(cd "$r" && find . | cpio -o -H newc --quiet | gzip -1) >"$out"
	rm -rf "$r"
}

run() {
	local bin=${1:-bin/linux_arm64/pathtrace}
	[[ -x $bin ]] || die "$bin missing: make build GOARCH=arm64"
	file -L "$bin" | grep -q 'ARM aarch64.*statically linked' || die "$bin is not a static arm64 binary: $(file -L "$bin")"
	command -v qemu-system-aarch64 >/dev/null || die "qemu-system-aarch64 not found: apt-get install qemu-system-arm"
	fetch
	local work; work=$(mktemp -d /tmp/vm-arm64.XXXXXX)
	initramfs "$bin" "$work/initrd.cpio.gz"
	local log=${VM_LOG:-$cache/console.log}
	echo "vm-arm64.sh: kernel $(cat "$cache/kernel/release"), initramfs $(du -h "$work/initrd.cpio.gz" | cut -f1), console copied to $log" >&2
	# -cpu max emulates every arm64 feature; pauth-impdef=on swaps the architected pointer
	# authentication hash (QARMA, slow under TCG, and the kernel signs every return
	# address) for QEMU's cheaper one: on 2 busy cores the whole run took 46 s instead of
	# 203 s, doctor --programs 27 s instead of 150 s.
	local start=$EPOCHREALTIME rc=0 line booted=""
	timeout "${VM_TIMEOUT:-1800}" qemu-system-aarch64 -M virt -cpu max,pauth-impdef=on -accel tcg \
		-smp "${VM_CPUS:-2}" -m "${VM_MEM:-1536}" -nographic -nic none -no-reboot \
		-kernel "$cache/kernel/vmlinuz" -initrd "$work/initrd.cpio.gz" \
		-append "console=ttyAMA0 panic=-1 loglevel=4" </dev/null 2>&1 |
		while IFS= read -r line; do
			line=${line%$'\r'}
			printf '%s\n' "$line"
			if [[ -z $booted && $line == "vm-arm64: up at"* ]]; then
				booted=1
				echo "vm-arm64.sh: init started $(elapsed "$start") s after qemu did"
			fi
		done | tee "$log" || rc=$?
	rm -rf "$work"
	echo "vm-arm64.sh: the VM ran $(elapsed "$start") s" >&2
	if grep -q '^vm-arm64: PASS' "$log"; then
		echo "vm-arm64.sh: PASS" >&2
		return 0
	fi
	if grep -q '^vm-arm64: FAIL' "$log"; then
		echo "vm-arm64.sh: FAIL: $(grep '^vm-arm64: FAIL' "$log" | head -1 | cut -d' ' -f3-)" >&2
	else
		echo "vm-arm64.sh: FAIL: the VM ended without a verdict (pipeline exit $rc; timeout ${VM_TIMEOUT:-1800} s)" >&2
	fi
	return 1
}

case ${1:-} in
fetch) fetch && echo "$cache: kernel $(cat "$cache/kernel/release")" ;;
run) shift; run "$@" ;;
*) sed -n '2,14p' "$0" >&2; exit 2 ;;
esac
