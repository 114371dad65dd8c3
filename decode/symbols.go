package decode

import (
	"bufio"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
)

// Symbols turns kernel addresses into "symbol+0xoff", from the text of /proc/kallsyms.
type Symbols struct {
	addrs []uint64
	names []string
}

// ParseKallsyms reads /proc/kallsyms-formatted text. When every address is zero (the
// reader lacked privileges, or kptr_restrict hides them) it returns an error, since
// nothing could be named.
func ParseKallsyms(r io.Reader) (*Symbols, error) {
	type sym struct {
		addr uint64
		name string
	}
	var syms []sym
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	nonzero := false
	for sc.Scan() {
		line := sc.Text()
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		switch f[1] {
		case "t", "T", "w", "W":
		default:
			continue // only code can call kfree_skb
		}
		a, err := strconv.ParseUint(f[0], 16, 64)
		if err != nil {
			return nil, fmt.Errorf("kallsyms: bad address in %q", line)
		}
		if a != 0 {
			nonzero = true
		}
		syms = append(syms, sym{a, f[2]})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("kallsyms: %w", err)
	}
	if !nonzero {
		return nil, fmt.Errorf("kallsyms: all addresses are zero (run as root, or lower kernel.kptr_restrict)")
	}
	sort.SliceStable(syms, func(i, j int) bool { return syms[i].addr < syms[j].addr })
	s := &Symbols{addrs: make([]uint64, len(syms)), names: make([]string, len(syms))}
	for i, x := range syms {
		s.addrs[i], s.names[i] = x.addr, x.name
	}
	return s, nil
}

// Symbolize returns "name+0xoff" for addr, or the address in hex when no symbol covers
// it. A nil Symbols gives hex.
func (s *Symbols) Symbolize(addr uint64) string {
	if s == nil || len(s.addrs) == 0 || addr < s.addrs[0] {
		return fmt.Sprintf("0x%x", addr)
	}
	i := sort.Search(len(s.addrs), func(i int) bool { return s.addrs[i] > addr }) - 1
	return fmt.Sprintf("%s+0x%x", s.names[i], addr-s.addrs[i])
}
