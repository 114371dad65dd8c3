package decode

import (
	"fmt"
	"strings"
)

// DropReasons names the values of the running kernel's enum skb_drop_reason. The
// tracer fills it from the kernel's BTF; decode never assumes a numbering.
type DropReasons map[uint32]string

// ReasonPrefix is stripped from the enum's names: SKB_DROP_REASON_NETFILTER_DROP is
// reported as NETFILTER_DROP.
const ReasonPrefix = "SKB_DROP_REASON_"

// NewDropReasons builds the table from enum entries as BTF lists them.
func NewDropReasons(entries map[string]uint32) DropReasons {
	d := make(DropReasons, len(entries))
	for name, v := range entries {
		if !strings.HasPrefix(name, ReasonPrefix) {
			continue
		}
		n := strings.TrimPrefix(name, ReasonPrefix)
		if n == "MAX" {
			continue
		}
		d[v] = n
	}
	// SKB_CONSUMED and SKB_NOT_DROPPED_YET carry no SKB_DROP_REASON_ prefix.
	for _, n := range []string{"SKB_CONSUMED", "SKB_NOT_DROPPED_YET"} {
		if v, ok := entries[n]; ok {
			d[v] = strings.TrimPrefix(n, "SKB_")
		}
	}
	return d
}

// Name returns the kernel's name for a reason value. Values from a drop-reason
// subsystem (the upper 16 bits) that the table lacks are shown as SUBSYS_n/code.
func (d DropReasons) Name(v uint32) string {
	if n, ok := d[v]; ok {
		return n
	}
	if v>>16 != 0 {
		return fmt.Sprintf("SUBSYS_%d/%d", v>>16, v&0xffff)
	}
	return fmt.Sprintf("REASON_%d", v)
}

// NotADrop reports whether a reason says the packet was not dropped at all (some
// kernels report consumed packets through kfree_skb).
func (d DropReasons) NotADrop(v uint32) bool {
	n := d[v]
	return n == "CONSUMED" || n == "NOT_DROPPED_YET"
}
