#!/usr/bin/env bash
# install-deps.sh installs the Debian packages pathtrace's build, tests and lab use.
# Go itself is expected on PATH.
set -euo pipefail
pkgs=(
	clang-14 llvm-14 libbpf-dev # make generate: the pinned clang, llvm-strip, libbpf headers
	iproute2 iptables nftables  # the lab: ip, tc, bridge, iptables (nft backend)
	iputils-ping tcpdump        # the lab by hand; the capture tests compare with tcpdump
	tshark                      # the capture tests read every pcapng file pathtrace writes
	chromium                    # exporter/pathview: TestChromium renders the HTML page headless, checks the screenshot and DOM
	prometheus                  # the agent's tests scrape it with a real Prometheus, and promtool
	etcd-server                 # the control-plane tests: etcd under bin/kube-apiserver (make tools)
	iperf3 jq bpftool curl      # make bench: throughput with and without the agent, BPF run time, capture cost
	git make file
	qemu-system-x86 busybox-static cpio kmod xz-utils zstd debian-archive-keyring # scripts/vm.sh: the kernel matrix in VMs
	qemu-system-arm             # scripts/vm-arm64.sh: qemu-system-aarch64 for the arm64 build (its busybox comes from arm64's busybox-static)
)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	[[ $(id -u) == 0 ]] || { echo "install-deps.sh: missing ${missing[*]}: run as root to apt-get install them" >&2; exit 1; }
	export DEBIAN_FRONTEND=noninteractive
	# tshark asks whether non-root users may capture: no.
	echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections 2>/dev/null || true
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
echo "install-deps.sh: ${#pkgs[@]} packages present"
