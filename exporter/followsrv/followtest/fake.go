package followtest

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"time"

	"github.com/pathtrace/pathtrace/decode"
	"github.com/pathtrace/pathtrace/exporter/followsrv"
)

// Source is a followsrv.Source without a kernel.
type Source struct {
	Node  followsrv.View
	C     chan decode.Event
	mu    sync.Mutex
	sels  map[int]decode.Selector
	start time.Time
}

// New returns a source whose node is v.
func New(v followsrv.View) *Source {
	return &Source{Node: v, C: make(chan decode.Event, 1024), sels: map[int]decode.Selector{}, start: time.Now()}
}

// Now is the source's monotonic clock in ns (followsrv.Config.Now).
func (s *Source) Now() uint64 { return uint64(time.Since(s.start)) + 1e9 }

func (s *Source) Events() <-chan decode.Event { return s.C }

func (s *Source) SetSelector(slot int, sel *decode.Selector, _ int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sel == nil {
		delete(s.sels, slot)
	} else {
		s.sels[slot] = *sel
	}
	return nil
}

func (s *Source) SetNetfilter(bool) error          { return nil }
func (s *Source) View() followsrv.View             { return s.Node }
func (s *Source) Where([]decode.Selector) []string { return nil }
func (s *Source) Lost() uint64                     { return 0 }

// Selectors counts the selectors set now.
func (s *Source) Selectors() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sels)
}

func (s *Source) slotOf(f decode.Flow) uint8 {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := 0; i < 16; i++ {
		if sel, ok := s.sels[i]; ok && sel.Matches(f) {
			return uint8(i)
		}
	}
	return decode.FilterUnfollowed
}

// Hop is one interface a packet crosses.
type Hop struct {
	Ifindex uint32
	Name    string
	Dir     decode.Dir
}

// Send emits a TCP SYN from src to dst with IP ID id at each hop, 1 µs apart.
func (s *Source) Send(src, dst string, id uint16, hops ...Hop) {
	data := TCPSyn(src, dst, id)
	var p decode.Packet
	decode.ParsePacket(data, false, nil, &p)
	slot := s.slotOf(p.Flow)
	t := s.Now()
	for i, h := range hops {
		ev := decode.Event{TimeNs: t + uint64(i)*1000, Ifindex: h.Ifindex, Kind: decode.KindHop, Dir: h.Dir,
			Filter: slot, Len: uint32(len(data)), Protocol: binary.NativeEndian.Uint16([]byte{8, 0})}
		copy(ev.Ifname[:15], h.Name)
		ev.SnapLen = uint16(copy(ev.Data[:], data))
		s.C <- ev
	}
}

// TCPSyn is an IPv4 TCP SYN from src to dst with the IP ID id.
func TCPSyn(src, dst string, id uint16) []byte {
	sa, da := netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst)
	b := make([]byte, 40)
	b[0], b[8], b[9] = 0x45, 64, 6
	binary.BigEndian.PutUint16(b[2:], 40)
	binary.BigEndian.PutUint16(b[4:], id)
	copy(b[12:16], sa.Addr().AsSlice())
	copy(b[16:20], da.Addr().AsSlice())
	binary.BigEndian.PutUint16(b[20:], sa.Port())
	binary.BigEndian.PutUint16(b[22:], da.Port())
	b[32], b[33] = 0x50, 0x02
	return b
}
