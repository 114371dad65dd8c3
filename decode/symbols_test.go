package decode_test

import (
	"os"
	"strings"
	"testing"

	"github.com/pathtrace/pathtrace/decode"
)

func loadSymbols(t testing.TB) *decode.Symbols {
	t.Helper()
	f, err := os.Open("testdata/kallsyms.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s, err := decode.ParseKallsyms(f)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSymbolize(t *testing.T) {
	s := loadSymbols(t)
	for _, tc := range []struct {
		addr uint64
		want string
	}{
		{0xffffffffc0a41000 + 0x2c8, "nft_do_chain+0x2c8"},
		{0xffffffffc0a41000, "nft_do_chain+0x0"},
		{0xffffffffc0a429ff, "nft_do_chain+0x19ff"},
		{0xffffffffc0a42a00 + 0x1d, "nft_do_chain_ipv4+0x1d"},
		{0xffffffff81c7e2a0 + 0x61, "kfree_skb_reason+0x61"},
		{0xffffffff81c7e2a0 - 1, "skb_release_data+0x19f"},
		{0xffffffff81ed0000 + 0x3e5, "ip_rcv_core+0x3e5"},
		{0xffffffff81ed0400 + 0x10, "ip_rcv_finish_core+0x10"},
		{0xffffffff81c90000 + 8, "weak_sk_filter+0x8"},
		{0xffffffff81000000, "_stext+0x0"},
		// Data and bss symbols never name a caller: the code before them does.
		{0xffffffff82a01000 + 4, "ip_rcv_finish_core+0xb30c04"},
		{0xffffffff83b40000, "ip_rcv_finish_core+0x1c6fc00"},
		// Read-only data of a module is skipped too.
		{0xffffffffc0a40010, "ip_rcv_finish_core+0x3eb6fc10"},
		// Below the first code symbol: hex.
		{0xffffffff80ffffff, "0xffffffff80ffffff"},
		{0, "0x0"},
	} {
		if got := s.Symbolize(tc.addr); got != tc.want {
			t.Errorf("Symbolize(%#x) = %q, want %q", tc.addr, got, tc.want)
		}
	}
}

func TestSymbolizeNil(t *testing.T) {
	var s *decode.Symbols
	if got := s.Symbolize(0xffffffffc0a412c8); got != "0xffffffffc0a412c8" {
		t.Errorf("nil Symbols: %q", got)
	}
	if got := (&decode.Symbols{}).Symbolize(0x10); got != "0x10" {
		t.Errorf("empty Symbols: %q", got)
	}
}

func TestParseKallsymsErrors(t *testing.T) {
	f, err := os.Open("testdata/kallsyms_restricted.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if s, err := decode.ParseKallsyms(f); err == nil || !strings.Contains(err.Error(), "all addresses are zero") {
		t.Errorf("restricted kallsyms: symbols %v, error %v", s, err)
	}
	if _, err := decode.ParseKallsyms(strings.NewReader("")); err == nil {
		t.Error("empty kallsyms: no error")
	}
	// Only data symbols have addresses: still nothing to name a caller with.
	if _, err := decode.ParseKallsyms(strings.NewReader("ffffffff82a01000 D init_net\n0000000000000000 T _stext\n")); err == nil {
		t.Error("no non-zero code address: no error")
	}
	if _, err := decode.ParseKallsyms(strings.NewReader("ffffffff81000000 T _stext\nxyz T broken\n")); err == nil || !strings.Contains(err.Error(), "xyz") {
		t.Errorf("bad address: error %v", err)
	}
}
