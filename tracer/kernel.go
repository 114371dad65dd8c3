package tracer

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/cilium/ebpf/btf"

	"github.com/pathtrace/pathtrace/decode"
)

// KernelBTF is where the running kernel publishes its BTF.
const KernelBTF = "/sys/kernel/btf/vmlinux"

// loadBTF reads the kernel's types, once, and fails with what to do when there are
// none: the programs are CO-RE and cannot be relocated without them. The tracer calls
// it before anything is opened or attached, so a missing or wrong --kernel-btf file
// fails first.
func loadBTF(path string) (*btf.Spec, error) {
	if path == "" || path == KernelBTF {
		path = KernelBTF
		if _, err := os.Stat(KernelBTF); err != nil {
			return nil, fmt.Errorf("kernel BTF not found at %s (%v): pathtrace needs a kernel built with CONFIG_DEBUG_INFO_BTF=y (most distribution kernels since 5.10 have it), or --kernel-btf FILE with this kernel's BTF (BTFHub has files for most distribution kernels)", KernelBTF, err)
		}
	} else if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("--kernel-btf %s: %v: give a BTF file of this kernel (as BTFHub provides)", path, err)
	}
	spec, err := btf.LoadSpec(path)
	if err != nil {
		return nil, btfError(path, err)
	}
	return spec, nil
}

// btfError says that a BTF file could not be read, and what to do.
func btfError(path string, err error) error {
	if path == KernelBTF {
		return fmt.Errorf("read kernel BTF from %s: %v", path, err)
	}
	return fmt.Errorf("--kernel-btf %s: not a BTF file of a kernel (%v): give this kernel's BTF (BTFHub's file for %s, uncompressed)", path, err, kernelRelease())
}

// DropReasons reads the names of enum skb_drop_reason from the running kernel's BTF.
// It returns nil, without error, on kernels that have no such enum (before 5.17).
func DropReasons(spec *btf.Spec) (decode.DropReasons, error) {
	var e *btf.Enum
	if err := spec.TypeByName("skb_drop_reason", &e); err != nil {
		if errors.Is(err, btf.ErrNotFound) {
			return nil, nil
		}
		return nil, fmt.Errorf("look up enum skb_drop_reason in kernel BTF: %w", err)
	}
	entries := make(map[string]uint32, len(e.Values))
	for _, v := range e.Values {
		entries[v.Name] = uint32(v.Value)
	}
	return decode.NewDropReasons(entries), nil
}

// kfreeSkbHasReason reports whether the kfree_skb tracepoint passes a drop reason: its
// BTF prototype btf_trace_kfree_skb(void *, skb, location, reason, ...) has four
// parameters or more.
func kfreeSkbHasReason(spec *btf.Spec) bool {
	var td *btf.Typedef
	if err := spec.TypeByName("btf_trace_kfree_skb", &td); err != nil {
		return false
	}
	ptr, ok := td.Type.(*btf.Pointer)
	if !ok {
		return false
	}
	fp, ok := ptr.Target.(*btf.FuncProto)
	if !ok {
		return false
	}
	return len(fp.Params) >= 4
}

// SymbolCache reads /proc/kallsyms once, when first asked, and keeps the table
// (about 9 MiB for 120,000 symbols) for everyone who shares the cache.
type SymbolCache struct {
	once sync.Once
	syms *decode.Symbols
	err  error
}

// Get returns the kernel's symbols, read on the first call.
func (c *SymbolCache) Get() (*decode.Symbols, error) {
	c.once.Do(func() { c.syms, c.err = LoadSymbols() })
	return c.syms, c.err
}

// LoadSymbols reads /proc/kallsyms.
func LoadSymbols() (*decode.Symbols, error) {
	f, err := os.Open("/proc/kallsyms")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return decode.ParseKallsyms(f)
}
