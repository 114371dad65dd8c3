package kube

import (
	"net/netip"
	"testing"
)

// FuzzIPKey reads the addresses of the API server's objects as the indexes do. They
// are outside input: anyone allowed to write an EndpointSlice writes its addresses.
// A key is an address in canonical text, without a zone, IPv4-mapped addresses
// unmapped, and it is its own key; anything else has none, and names nothing.
func FuzzIPKey(f *testing.F) {
	for _, s := range []string{"10.244.1.7", "fd00:10:244::5", "::ffff:10.0.0.1", "FD00::0:1", "fe80::1%eth0",
		"None", "", "10.244.1.7/24", "010.1.1.1", " 10.0.0.1", "1.2.3.4:80", "::ffff:0:0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k := ipKey(s)
		if k == "" {
			if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
				t.Fatalf("%q: an address without a key", s)
			}
			return
		}
		a, err := netip.ParseAddr(k)
		if err != nil || a.Zone() != "" || a.Is4In6() || a.String() != k {
			t.Fatalf("%q: key %q is no canonical address", s, k)
		}
		if again := ipKey(k); again != k {
			t.Fatalf("%q: key %q has the key %q", s, k, again)
		}
		if orig, _ := netip.ParseAddr(s); orig.Unmap() != a {
			t.Fatalf("%q: key %q is another address", s, k)
		}
	})
}
