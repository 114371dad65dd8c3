/* SPDX-License-Identifier: GPL-2.0 */
/* What vmlinux.h lacks for the architectures other than the one it was dumped from.
 *
 * vmlinux.h comes from an x86 kernel. The CO-RE reads of kernel structs relocate to any
 * architecture's layout at load time, so one header serves every target but for the
 * kprobe context: libbpf's PT_REGS_PARM* (and so BPF_KPROBE) read an arm64 kprobe's
 * arguments from struct user_pt_regs, which only an arm64 kernel's BTF has. Its layout
 * is arm64's user ABI (arch/arm64/include/uapi/asm/ptrace.h) and the first member of the
 * kernel's struct pt_regs, so it is declared here as plain offsets, outside vmlinux.h's
 * preserve_access_index region: nothing to relocate. Another architecture needs its
 * entry here, or the build fails on the missing type instead of loading a program that
 * reads the wrong registers. */
#ifndef PATHTRACE_ARCH_H
#define PATHTRACE_ARCH_H

#if defined(__TARGET_ARCH_arm64)
struct user_pt_regs {
	__u64 regs[31];
	__u64 sp;
	__u64 pc;
	__u64 pstate;
};
#endif

#endif /* PATHTRACE_ARCH_H */
