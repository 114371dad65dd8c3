#!/usr/bin/env bash
# vm.sh boots a Debian kernel under qemu with this machine's root filesystem and runs one
# command inside it, as root, in the VM's own root network namespace.
#
#   scripts/vm.sh fetch SUITE            download the kernel of SUITE (bullseye = 5.10,
#                                        bookworm = 6.1, bookworm-backports = 6.12) into the cache
#   scripts/vm.sh run SUITE -- CMD ...   boot it and run CMD (cwd: the directory vm.sh was run
#                                        from); exit status is CMD's
#
# The host's / is shared read-only over virtio-9p under a tmpfs overlay, the kernel's own
# modules as a second 9p share; a busybox initramfs loads virtio, 9p and overlay and
# switches root. The host's apt sources are not touched: a private apt configuration
# under $VM_CACHE downloads the packages. TCG unless VM_ACCEL=kvm (this workplace's KVM hangs guests).
# Environment: VM_CACHE (default /var/cache/pathtrace-vm), VM_MEM (MiB, 2048), VM_CPUS (2),
# VM_TIMEOUT (seconds for the whole run, 1800), VM_SHARE (a host directory the VM may write,
# at the same path: the rest of / is read-only to it).
set -euo pipefail
shopt -s inherit_errexit
cache=${VM_CACHE:-/var/cache/pathtrace-vm}
die() { echo "vm.sh: $*" >&2; exit 1; }

aptopts() {
	echo -o Dir::Etc::SourceList="$cache/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null \
		-o Dir::State::Lists="$cache/apt/lists" -o Dir::Cache="$cache/apt" -o Debug::NoLocking=1 -o APT::Sandbox::User=root
}

aptsetup() {
	mkdir -p "$cache/apt/lists/partial" "$cache/apt/archives/partial" "$cache/kernels"
	local kr=/usr/share/keyrings/debian-archive-keyring.gpg
	[[ -r $kr ]] || die "$kr missing: apt-get install debian-archive-keyring"
	local want; want=$(mktemp)
	cat >"$want" <<SRC
deb [signed-by=$kr] http://deb.debian.org/debian bullseye main
deb [signed-by=$kr] http://deb.debian.org/debian bookworm main
deb [signed-by=$kr] http://deb.debian.org/debian bookworm-backports main
SRC
	cmp -s "$want" "$cache/apt/sources.list" || cp "$want" "$cache/apt/sources.list"
	rm -f "$want"
	# Refresh the lists once a day.
	local stamp=$cache/apt/lists/.updated
	if [[ ! -f $stamp || $cache/apt/sources.list -nt $stamp || -n $(find "$stamp" -mmin +1440) ]]; then
		# shellcheck disable=SC2046
		apt-get $(aptopts) update -qq || die "apt-get update with the private configuration failed"
		touch "$stamp"
	fi
}

# fetch SUITE: unpack the generic amd64 kernel of SUITE into $cache/kernels/SUITE.
fetch() {
	local suite=$1 dir=$cache/kernels/$1
	[[ -f $dir/vmlinuz && -d $dir/modules ]] && { echo "$dir"; return; }
	aptsetup
	local tmp; tmp=$(mktemp -d)
	(
		cd "$tmp"
		# shellcheck disable=SC2046
		apt-get $(aptopts) download -qq "linux-image-amd64/$suite" >&2 || die "download linux-image-amd64/$suite failed"
		local dep
		dep=$(dpkg-deb -f linux-image-amd64_*.deb Depends | tr ',' '\n' | grep -o 'linux-image-[^ ]*-amd64' | grep -v cloud | head -1)
		[[ -n $dep ]] || die "linux-image-amd64/$suite names no kernel package"
		# shellcheck disable=SC2046
		apt-get $(aptopts) download -qq "$dep/$suite" >&2 || apt-get $(aptopts) download -qq "$dep" >&2 ||
			die "download $dep failed"
		mkdir x
		dpkg-deb -x "$dep"_*.deb x
		local rel=${dep#linux-image-}
		rm -rf "$dir.new"; mkdir -p "$dir.new"
		cp x/boot/vmlinuz-"$rel" "$dir.new/vmlinuz"
		[[ -d x/lib/modules ]] || { mkdir -p x/lib && mv x/usr/lib/modules x/lib/; }
		depmod -b x "$rel" || die "depmod $rel failed"
		mv x/lib/modules/"$rel" "$dir.new/modules"
		echo "$rel" >"$dir.new/release"
	)
	rm -rf "$dir" && mv "$dir.new" "$dir"
	rm -rf "$tmp"
	echo "$dir"
}

# initramfs DIR: a busybox init that loads the modules the 9p root needs and switches root.
initramfs() {
	local dir=$1 rel; rel=$(cat "$dir/release")
	[[ -f $dir/initrd.cpio.gz && $dir/initrd.cpio.gz -nt "$0" ]] && return
	command -v busybox >/dev/null || die "busybox not found: apt-get install busybox-static"
	file -L "$(command -v busybox)" | grep -q static || die "busybox is not static: apt-get install busybox-static"
	local r; r=$(mktemp -d)
	mkdir -p "$r"/{bin,dev,proc,sys,mnt,root,lower,upper,modules}
	cp "$(command -v busybox)" "$r/bin/busybox"
	for m in virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci netfs fscache 9pnet 9pnet_virtio 9p overlay; do
		local f; f=$(find "$dir/modules/kernel" -name "$m.ko*" | head -1)
		[[ -n $f ]] || continue
		case $f in
		*.xz) xz -dc "$f" >"$r/modules/$m.ko" ;;
		*.zst) zstd -qdc "$f" >"$r/modules/$m.ko" ;;
		*) cp "$f" "$r/modules/$m.ko" ;;
		esac
		echo "$m" >>"$r/modules/order"
	done
	cat >"$r/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /modules/order); do insmod /modules/$m.ko 2>/dev/null; done
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose,ro hostroot /lower || { echo "vm: 9p root failed"; poweroff -f; }
mount -t tmpfs -o size=4g tmpfs /upper
mkdir -p /upper/u /upper/w /root
mount -t overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w overlay /root || { echo "vm: overlay failed"; poweroff -f; }
rel=$(uname -r)
s2=$(sed -n "s/.*stage2=\([^ ]*\).*/\1/p" /proc/cmdline)
mkdir -p /root/lib/modules/$rel
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose,ro modules /root/lib/modules/$rel
mount --move /proc /root/proc; mount --move /sys /root/sys; mount --move /dev /root/dev
exec switch_root /root /bin/sh $s2
INIT
	chmod +x "$r/init"
	(cd "$r" && find . | cpio -o -H newc --quiet | gzip -1) >"$dir/initrd.cpio.gz"
	rm -rf "$r"
}

run() {
	local suite=$1; shift
	[[ ${1:-} == -- ]] && shift
	(($#)) || die "run $suite: no command"
	command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found: apt-get install qemu-system-x86"
	local dir; dir=$(fetch "$suite")
	initramfs "$dir"
	local work; work=$(mktemp -d /tmp/vm.XXXXXX)
	# The second stage runs inside the VM, from the overlay: /tmp there is the VM's own.
	# It is handed in through a 9p share of $work, mounted at /vmio.
	printf '%q ' "$@" >"$work/cmd"
	cat >"$work/stage2" <<STAGE2
#!/bin/sh
export PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root CI="${CI:-}" GOFLAGS="${GOFLAGS:-}"
[ -e /proc/modules ] || mount -t proc proc /proc
mkdir -p /vmio /tmp /run /var/run/netns /sys/fs/bpf
mount -t tmpfs tmpfs /tmp; mount -t tmpfs tmpfs /run; mkdir -p /var/run/netns
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 vmio /vmio
[ -n "${VM_SHARE:-}" ] && mkdir -p "${VM_SHARE:-}" && mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 share "${VM_SHARE:-}"
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
ip link set lo up
modprobe br_netfilter 2>/dev/null
modprobe veth 2>/dev/null; modprobe vxlan 2>/dev/null; modprobe nf_conntrack 2>/dev/null
cd "$PWD" 2>/dev/null || cd /
echo "vm: kernel \$(uname -r), running: \$(cat /vmio/cmd)"
sh -c "\$(cat /vmio/cmd)"
echo \$? >/vmio/rc
sync
poweroff -f
STAGE2
	# The stage2 file must be visible in the VM's /tmp before the tmpfs goes on: place it in
	# the overlay through the init, which execs /tmp/.vm-stage2 from the lower layer's view.
	# TCG by default: this workplace's /dev/kvm opens but its guests hang after the kernel
	# is decompressed. VM_ACCEL=kvm where KVM works.
	local accel=(-accel "${VM_ACCEL:-tcg}")
	cp "$work/stage2" /tmp/.vm-stage2.$$ && chmod +x /tmp/.vm-stage2.$$
	local share=()
	[[ -n ${VM_SHARE:-} ]] && share=(-fsdev "local,id=s,path=$VM_SHARE,security_model=passthrough" -device virtio-9p-pci,fsdev=s,mount_tag=share)
	local rc=0
	timeout "${VM_TIMEOUT:-1800}" qemu-system-x86_64 "${accel[@]}" -cpu max -smp "${VM_CPUS:-2}" -m "${VM_MEM:-2048}" \
		-nographic -nic none -no-reboot -serial mon:stdio -display none -monitor none \
		-kernel "$dir/vmlinuz" -initrd "$dir/initrd.cpio.gz" \
		-append "console=ttyS0 panic=-1 loglevel=4 stage2=/tmp/.vm-stage2.$$" \
		-fsdev local,id=r,path=/,multidevs=remap,security_model=passthrough,readonly=on -device virtio-9p-pci,fsdev=r,mount_tag=hostroot \
		-fsdev local,id=m,path="$dir/modules",security_model=passthrough,readonly=on -device virtio-9p-pci,fsdev=m,mount_tag=modules \
		-fsdev local,id=io,path="$work",security_model=passthrough -device virtio-9p-pci,fsdev=io,mount_tag=vmio \
		"${share[@]}" </dev/null || rc=$?
	rm -f /tmp/.vm-stage2.$$
	if [[ -f $work/rc ]]; then rc=$(cat "$work/rc"); else
		echo "vm.sh: the VM ended without the command's exit status (qemu exit $rc)" >&2; rc=125
	fi
	rm -rf "$work"
	return "$rc"
}

case ${1:-} in
fetch) fetch "${2:?suite}" ;;
run) shift; run "$@" ;;
*) sed -n '2,10p' "$0" >&2; exit 2 ;;
esac
