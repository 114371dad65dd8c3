package decode_test

import (
	"testing"

	"github.com/pathtrace/pathtrace/decode"
)

// btfReasons is enum skb_drop_reason as a 6.8 kernel's BTF lists it (an excerpt; the
// tracer passes every entry).
func btfReasons() map[string]uint32 {
	return map[string]uint32{
		"SKB_NOT_DROPPED_YET":            0,
		"SKB_CONSUMED":                   1,
		"SKB_DROP_REASON_NOT_SPECIFIED":  2,
		"SKB_DROP_REASON_NO_SOCKET":      3,
		"SKB_DROP_REASON_PKT_TOO_SMALL":  4,
		"SKB_DROP_REASON_TCP_CSUM":       5,
		"SKB_DROP_REASON_NETFILTER_DROP": 12,
		"SKB_DROP_REASON_OTHERHOST":      13,
		"SKB_DROP_REASON_IP_NOPROTO":     15,
		"SKB_DROP_REASON_NEIGH_FAILED":   36,
		"SKB_DROP_REASON_TC_INGRESS":     41,
		"SKB_DROP_REASON_IP_OUTNOROUTES": 21,
		"SKB_DROP_REASON_MAX":            90,
		"SKB_DROP_REASON_SUBSYS_MASK":    0xffff0000,
	}
}

func TestDropReasons(t *testing.T) {
	d := decode.NewDropReasons(btfReasons())
	for v, want := range map[uint32]string{
		0:       "NOT_DROPPED_YET",
		1:       "CONSUMED",
		2:       "NOT_SPECIFIED",
		3:       "NO_SOCKET",
		12:      "NETFILTER_DROP",
		21:      "IP_OUTNOROUTES",
		41:      "TC_INGRESS",
		90:      "REASON_90", // SKB_DROP_REASON_MAX is not a reason
		77:      "REASON_77",
		0x10003: "SUBSYS_1/3", // e.g. a mac80211 reason this table lacks
		0x2000c: "SUBSYS_2/12",
	} {
		if got := d.Name(v); got != want {
			t.Errorf("Name(%#x) = %q, want %q", v, got, want)
		}
	}
	for _, n := range d {
		if n == "MAX" || n == "SKB_CONSUMED" || n == "" {
			t.Errorf("table holds %q", n)
		}
	}
	for v, want := range map[uint32]bool{0: true, 1: true, 2: false, 12: false, 77: false, 0x10001: false} {
		if got := d.NotADrop(v); got != want {
			t.Errorf("NotADrop(%d) = %v, want %v", v, got, want)
		}
	}
}

// The values are the running kernel's: a kernel where CONSUMED has another value
// is read by its table, not by a built-in numbering.
func TestDropReasonsOtherNumbering(t *testing.T) {
	d := decode.NewDropReasons(map[string]uint32{
		"SKB_CONSUMED":                   7,
		"SKB_DROP_REASON_NOT_SPECIFIED":  1,
		"SKB_DROP_REASON_NETFILTER_DROP": 9,
		"SKB_DROP_REASON_MAX":            10,
	})
	if d.Name(9) != "NETFILTER_DROP" || d.Name(12) != "REASON_12" || d.Name(1) != "NOT_SPECIFIED" {
		t.Errorf("Name: 9=%q 12=%q 1=%q", d.Name(9), d.Name(12), d.Name(1))
	}
	if !d.NotADrop(7) || d.NotADrop(1) || d.NotADrop(0) {
		t.Errorf("NotADrop: 7=%v 1=%v 0=%v", d.NotADrop(7), d.NotADrop(1), d.NotADrop(0))
	}
}
