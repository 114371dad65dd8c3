package decode_test

import (
	"strings"
	"testing"

	"github.com/pathtrace/pathtrace/decode"
)

func TestInferReason(t *testing.T) {
	for loc, want := range map[string]string{
		"nf_hook_slow+0x93":          "NETFILTER_DROP",
		"ip_rcv_finish_core+0x10":    "IP_RPFILTER",
		"ip_rcv_finish.isra.0+0x1c":  "IP_RPFILTER",
		"__dev_queue_xmit+0x5a1":     "QDISC_DROP",
		"tcp_v4_rcv+0x120":           "NO_SOCKET",
		"udp_queue_rcv_one_skb+0x2f": "SOCKET_RCVBUFF",
		"skb_made_up_site+0x2c8":     "",
		"0xffffffffc0a412c8":         "",
		"":                           "",
	} {
		r, fn, ok := decode.InferReason(loc)
		if r != want || ok != (want != "") {
			t.Errorf("InferReason(%q) = %q, %q, %v; want %q", loc, r, fn, ok, want)
		}
		if ok && !strings.HasPrefix(loc, fn) {
			t.Errorf("InferReason(%q): function %q", loc, fn)
		}
	}
}

// On a kernel without drop reasons (Reasons nil), a drop at nf_hook_slow is named
// NETFILTER_DROP, marked inferred; a kernel's own reason is kept as the kernel's.
func TestDropReasonInferred(t *testing.T) {
	syms, err := decode.ParseKallsyms(strings.NewReader("ffffffff81000000 T _stext\nffffffff81e00000 T nf_hook_slow\nffffffff81e01000 T skb_made_up_site\n"))
	if err != nil {
		t.Fatal(err)
	}
	drop := func(reasons decode.DropReasons, reason uint32, loc uint64) *decode.Drop {
		a := decode.NewAssembler(decode.Config{Node: "n", Symbols: syms, Reasons: reasons})
		ev := decode.Event{Kind: decode.KindDrop, TimeNs: 10, Location: loc, Reason: reason, L2: true}
		ev.SnapLen = uint16(copy(ev.Data[:], copyFixturePacket()))
		a.Add(&ev)
		js := a.Flush(1e12)
		if len(js) != 1 || js[0].Drop == nil {
			t.Fatalf("journeys %v", js)
		}
		return js[0].Drop
	}
	d := drop(nil, 0, 0xffffffff81e00093)
	if d.Reason != "NETFILTER_DROP" || d.ReasonSource != decode.ReasonInferred || d.InferredFrom != "nf_hook_slow" || d.Location != "nf_hook_slow+0x93" {
		t.Errorf("old kernel: %+v", d)
	}
	if got := d.ReasonText(); got != "NETFILTER_DROP (inferred from nf_hook_slow)" {
		t.Errorf("ReasonText %q", got)
	}
	if !d.ByNetfilter() {
		t.Error("inferred NETFILTER_DROP: not ByNetfilter")
	}
	if d := drop(nil, 0, 0xffffffff81e01010); d.Reason != "" || d.ReasonSource != "" {
		t.Errorf("unknown site: %+v", d)
	}
	r := decode.NewDropReasons(btfReasons())
	if d := drop(r, 3, 0xffffffff81e00093); d.Reason != "NO_SOCKET" || d.ReasonSource != decode.ReasonKernel || d.ReasonText() != "NO_SOCKET" {
		t.Errorf("kernel reason: %+v", d)
	}
	if d := drop(r, 2, 0xffffffff81e00093); d.Reason != "NETFILTER_DROP" || d.ReasonSource != decode.ReasonInferred {
		t.Errorf("NOT_SPECIFIED: %+v", d)
	}
}
