package decode

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"
)

// A packet that crosses nodes has one journey on each node it passes: the Joiner puts
// them together into a Path, with the underlay crossings between them, and judges the
// whole path. It knows the nodes (their addresses, their pods' prefixes, whether their
// agent answers) and waits a while for the journeys of a packet to come in from every
// node on its way.
//
// Clocks. The journeys' times must be wall-clock times of their node (Hop.TimeNs as
// Unix ns). Two nodes that report the same boot ID run on one kernel and share its
// clock: their times compare as they are. Otherwise the difference of their wall clocks
// (NTP keeps it to a fraction of a millisecond, not to microseconds) is estimated from
// the crossings themselves, as NTP does: the smallest delay seen from A to B is d+θ,
// from B to A d−θ, so θ is half their difference. With crossings seen in one direction
// only, a negative delay cannot be corrected that way: it is shown as 0 and marked.

// NodeInfo is what the Joiner knows of a node.
type NodeInfo struct {
	Name   string
	BootID string         // the kernel's boot ID: equal on two "nodes" of one kernel
	Addrs  []netip.Addr   // the node's own addresses (the underlay's, eth0)
	Pods   []netip.Prefix // the prefixes of the node's pods (cni0's subnet)
}

// PathVerdict judges a whole path.
type PathVerdict uint8

const (
	// PathDone: the last node on the path gave the verdict (its journey's Verdict):
	// delivered, dropped, forwarded out of the traced nodes, or lost inside it.
	PathDone PathVerdict = iota
	// PathUnderlayLost: a node forwarded it to another traced node, whose agent
	// answers, and that node never saw it.
	PathUnderlayLost
	// PathNodeMissing: it went to (or came from) a node whose agent does not answer:
	// what happened there is unknown.
	PathNodeMissing
	// PathUnfinished: tracing stopped while the path waited for another node's
	// journey.
	PathUnfinished
)

// Crossing is the underlay hop between two nodes' journeys.
type Crossing struct {
	From, To       string // nodes
	FromHop, ToHop string // "eth0 egress", "eth0 ingress"
	// RawNs is the arrival time minus the departure time, on the two nodes' clocks;
	// LatencyNs is the same after aligning the clocks (see Clock).
	RawNs, LatencyNs int64
	// Clock says how the two times were compared: "same" (one kernel), "aligned"
	// (the offset estimated from crossings both ways), "unaligned" (one way seen, the
	// raw delay was not negative) or "clamped" (one way seen, negative shown as 0).
	Clock string
}

// Path is one packet's journeys on every node it passed, in order.
type Path struct {
	ID        uint64
	Legs      []*Journey
	Crossings []Crossing // Crossings[i] joins Legs[i] and Legs[i+1] when both ends are known
	Verdict   PathVerdict
	// Lost on the underlay or headed to a silent node: where it left from, and the
	// node it was headed to.
	LeftNode, LeftHop string
	Next              string
	NextAddr          netip.Addr
	// Missing names the node whose agent did not answer, with why.
	Missing, MissingWhy string
	// Diagnosis is why the path failed: the underlay's, from the path itself, or the
	// failing leg's (the node that judged it diagnosed it); nil on success.
	Diagnosis *Diagnosis
}

// Summary is the verdict of the whole path in words.
func (p *Path) Summary() string {
	last := p.Legs[len(p.Legs)-1]
	switch p.Verdict {
	case PathUnderlayLost:
		return fmt.Sprintf("lost on the underlay: left %s %s, never reached %s %s", p.LeftNode, p.LeftHop, p.Next, p.expectHop())
	case PathUnfinished:
		return fmt.Sprintf("unfinished: tracing stopped while waiting for %s's journey (it left %s %s)", p.Next, p.LeftNode, p.LeftHop)
	case PathNodeMissing:
		if p.Next != "" {
			s := fmt.Sprintf("unknown past %s: left %s %s for %s (%s), whose agent did not answer", p.LeftNode, p.LeftNode, p.LeftHop, p.Next, p.NextAddr)
			if p.MissingWhy != "" {
				s += " (" + p.MissingWhy + ")"
			}
			return s + "; not blamed on the network"
		}
		s := fmt.Sprintf("came from %s, whose agent did not answer", p.Missing)
		if p.MissingWhy != "" {
			s += " (" + p.MissingWhy + ")"
		}
		return s + "; on " + last.Node + ": " + last.Summary()
	}
	return last.Summary() + " on " + last.Node
}

func (p *Path) expectHop() string {
	if p.LeftHop != "" {
		if name, _, ok := strings.Cut(p.LeftHop, " "); ok {
			return name + " ingress"
		}
	}
	return "ingress"
}

// JoinStats counts what the Joiner did.
type JoinStats struct {
	Legs, Paths, Joined, UnderlayLost, NodeMissing uint64
}

// LastCrossing is when a packet last went from one node to the other (the arrival,
// on to's clock); ok false when none did since the Joiner began.
func (j *Joiner) LastCrossing(from, to string) (t time.Time, ok bool) {
	t, ok = j.lastCross[[2]string{from, to}]
	return t, ok
}

// Joiner joins the journeys of several nodes into paths. Not safe for concurrent use.
type Joiner struct {
	nodes   map[string]*NodeInfo
	down    map[string]string // node → why its agent does not answer
	wait    time.Duration
	pending map[uint64]*pendingPath
	order   []pendingRef // pending IDs by deadline, for expiry
	minDel  map[[2]string]int64
	// lastCross is the arrival time (the receiving node's wall clock) of the latest
	// crossing from one node to another: whether a direction works.
	lastCross map[[2]string]time.Time
	stats     JoinStats
	// idx finds the nodes that own or host an address without going through them
	// all: built when first needed, dropped when the nodes change.
	idx *nodeIndex
}

// nodeIndex finds nodes by address: those that own it (their own addresses) and those
// that host it (a pod prefix contains it), each list in name order.
type nodeIndex struct {
	owners map[netip.Addr][]*NodeInfo
	hosts  map[netip.Prefix][]*NodeInfo // masked prefixes
	bits   []int                        // the prefixes' lengths, longest first
}

func (j *Joiner) index() *nodeIndex {
	if j.idx != nil {
		return j.idx
	}
	x := &nodeIndex{owners: map[netip.Addr][]*NodeInfo{}, hosts: map[netip.Prefix][]*NodeInfo{}}
	names := slices.Sorted(maps.Keys(j.nodes))
	for _, name := range names {
		n := j.nodes[name]
		for _, a := range n.Addrs {
			a = a.Unmap()
			if !slices.Contains(x.owners[a], n) {
				x.owners[a] = append(x.owners[a], n)
			}
		}
		for _, p := range n.Pods {
			p = p.Masked()
			if !slices.Contains(x.hosts[p], n) {
				x.hosts[p] = append(x.hosts[p], n)
			}
			if !slices.Contains(x.bits, p.Bits()) {
				x.bits = append(x.bits, p.Bits())
			}
		}
	}
	slices.Sort(x.bits)
	slices.Reverse(x.bits)
	j.idx = x
	return x
}

// find returns, in name order, the first node other than except that owns a (when
// own) or hosts it (when host): what a scan of the nodes sorted by name would find.
func (j *Joiner) find(a netip.Addr, own, host bool, except string) *NodeInfo {
	x := j.index()
	a = a.Unmap()
	var best *NodeInfo
	better := func(n *NodeInfo) {
		if n.Name != except && (best == nil || n.Name < best.Name) {
			best = n
		}
	}
	if own {
		for _, n := range x.owners[a] {
			better(n)
		}
	}
	if host {
		for _, bits := range x.bits {
			p, err := a.Prefix(bits)
			if err != nil {
				continue // a prefix longer than this family's addresses
			}
			for _, n := range x.hosts[p] {
				better(n)
			}
		}
	}
	return best
}

type pendingRef struct {
	id       uint64
	deadline time.Time
}

type pendingPath struct {
	legs     []*Journey
	deadline time.Time
}

// NewJoiner returns a Joiner for these nodes. wait is how long, after a packet's
// first journey comes in, its other journeys are waited for.
func NewJoiner(nodes []NodeInfo, wait time.Duration) *Joiner {
	j := &Joiner{nodes: map[string]*NodeInfo{}, down: map[string]string{}, wait: wait,
		pending: map[uint64]*pendingPath{}, minDel: map[[2]string]int64{}, lastCross: map[[2]string]time.Time{}}
	for i := range nodes {
		n := nodes[i]
		j.nodes[n.Name] = &n
	}
	return j
}

// SetDown marks a node whose agent does not answer (never did, or stopped), with why;
// an empty why marks it up again.
func (j *Joiner) SetDown(node, why string) {
	if why == "" {
		delete(j.down, node)
		return
	}
	j.down[node] = why
	if _, ok := j.nodes[node]; !ok {
		j.nodes[node] = &NodeInfo{Name: node}
		j.idx = nil
	}
}

// AddNode tells the Joiner of a node, or updates what it knows of it.
func (j *Joiner) AddNode(n NodeInfo) {
	j.nodes[n.Name] = &n
	j.idx = nil
}

// Stats returns the counts so far.
func (j *Joiner) Stats() JoinStats { return j.stats }

// Pending is the number of packets waiting for journeys from other nodes.
func (j *Joiner) Pending() int { return len(j.pending) }

// Add takes one node's journey, whose times are that node's wall clock, and returns
// the paths it completes (at most one).
func (j *Joiner) Add(leg *Journey, now time.Time) []*Path {
	j.stats.Legs++
	p := j.pending[leg.ID]
	if p == nil {
		p = &pendingPath{deadline: now.Add(j.wait)}
		j.pending[leg.ID] = p
		j.order = append(j.order, pendingRef{leg.ID, p.deadline})
	}
	p.legs = append(p.legs, leg)
	if j.complete(p.legs) {
		delete(j.pending, leg.ID)
		return []*Path{j.judge(leg.ID, p.legs)}
	}
	return nil
}

// Expire returns the paths whose wait is over, judged with the journeys that came.
func (j *Joiner) Expire(now time.Time) []*Path {
	var out []*Path
	i := 0
	for ; i < len(j.order); i++ {
		e := j.order[i]
		p, ok := j.pending[e.id]
		if !ok || p.deadline != e.deadline {
			continue // completed early, or this ID came again and waits from then
		}
		if now.Before(p.deadline) {
			break
		}
		delete(j.pending, e.id)
		out = append(out, j.judge(e.id, p.legs))
	}
	j.order = append(j.order[:0], j.order[i:]...)
	return out
}

// Flush judges every packet still waiting, as tracing ends.
func (j *Joiner) Flush() []*Path {
	var out []*Path
	for _, e := range j.order {
		if p, ok := j.pending[e.id]; ok && p.deadline == e.deadline {
			path := j.judge(e.id, p.legs)
			if path.Verdict == PathUnderlayLost {
				j.stats.UnderlayLost--
				path.Verdict = PathUnfinished
			}
			out = append(out, path)
		}
	}
	j.order, j.pending = nil, map[uint64]*pendingPath{}
	return out
}

// next returns the traced node a forwarded journey was sent to, and the address it
// went to: the VXLAN header's destination, else the packet's own.
func (j *Joiner) next(leg *Journey) (*NodeInfo, netip.Addr) {
	if leg.Verdict != Forwarded || len(leg.Hops) == 0 {
		return nil, netip.Addr{}
	}
	last := &leg.Hops[len(leg.Hops)-1]
	for i := len(leg.Hops) - 1; i >= 0; i-- {
		if o := leg.Hops[i].Outer; o != nil && leg.Hops[i].Kind != KindNetfilter {
			last = &leg.Hops[i]
			break
		}
	}
	if o := last.Outer; o != nil {
		return j.find(o.Dst, true, false, leg.Node), o.Dst
	}
	dst := last.Flow.Dst.Addr()
	return j.find(dst, true, true, leg.Node), dst
}

// source returns the traced node the packet started on, if its source is one of a
// node's pods or the node itself.
func (j *Joiner) source(leg *Journey) *NodeInfo {
	if len(leg.Hops) == 0 {
		return nil
	}
	return j.find(leg.Flow.Src.Addr(), true, true, "")
}

func hasLeg(legs []*Journey, node string) bool {
	return slices.ContainsFunc(legs, func(l *Journey) bool { return l.Node == node })
}

// complete reports whether nothing more is to be waited for: every leg forwarded to a
// traced node has that node's leg, and the node the packet started on has its leg.
func (j *Joiner) complete(legs []*Journey) bool {
	for _, l := range legs {
		if n, _ := j.next(l); n != nil && !hasLeg(legs, n.Name) {
			if _, down := j.down[n.Name]; !down {
				return false
			}
		}
	}
	if s := j.source(legs[0]); s != nil && !hasLeg(legs, s.Name) {
		if _, down := j.down[s.Name]; !down {
			return false
		}
	}
	return true
}

// order puts the legs in the order the packet went: from the leg no other leg
// forwarded to, along where each was forwarded; legs left over follow by time.
func (j *Joiner) orderLegs(legs []*Journey) []*Journey {
	sort.SliceStable(legs, func(a, b int) bool { return legs[a].firstNs() < legs[b].firstNs() })
	if len(legs) < 2 {
		return legs
	}
	byNode := map[string]*Journey{}
	target := map[string]bool{}
	for _, l := range legs {
		if _, ok := byNode[l.Node]; !ok {
			byNode[l.Node] = l
		}
		if n, _ := j.next(l); n != nil {
			target[n.Name] = true
		}
	}
	var out []*Journey
	used := map[*Journey]bool{}
	for _, start := range legs {
		if target[start.Node] || used[start] {
			continue
		}
		for l := start; l != nil && !used[l]; {
			out = append(out, l)
			used[l] = true
			n, _ := j.next(l)
			if n == nil {
				break
			}
			l = byNode[n.Name]
		}
	}
	for _, l := range legs {
		if !used[l] {
			out = append(out, l)
		}
	}
	return out
}

func (j *Joiner) judge(id uint64, legs []*Journey) *Path {
	j.stats.Paths++
	p := &Path{ID: id, Legs: j.orderLegs(legs)}
	if len(p.Legs) > 1 {
		j.stats.Joined++
	}
	// Crossings between consecutive legs the packet went along.
	for i := 0; i+1 < len(p.Legs); i++ {
		a, b := p.Legs[i], p.Legs[i+1]
		if n, _ := j.next(a); n == nil || n.Name != b.Node || len(b.Hops) == 0 {
			continue
		}
		from, to := &a.Hops[len(a.Hops)-1], &b.Hops[0]
		for k := len(a.Hops) - 1; k >= 0; k-- {
			if a.Hops[k].Kind != KindNetfilter {
				from = &a.Hops[k]
				break
			}
		}
		p.Crossings = append(p.Crossings, j.cross(a.Node, b.Node, from, to))
	}
	// What the last leg left open.
	last := p.Legs[len(p.Legs)-1]
	n, addr := j.next(last)
	if n == nil && last.Verdict == Forwarded && addr.IsValid() {
		// Sent to an address no answering agent's node owns: if an agent never
		// answered, its node may be the one.
		var silent, whys []string
		for _, name := range slices.Sorted(maps.Keys(j.down)) {
			if node := j.nodes[name]; node == nil || len(node.Addrs) == 0 {
				silent, whys = append(silent, name), append(whys, j.down[name])
			}
		}
		if len(silent) > 0 {
			p.Verdict, p.LeftNode, p.LeftHop, p.NextAddr = PathNodeMissing, last.Node, lastIfaceHop(last), addr
			p.Next, p.Missing, p.MissingWhy = strings.Join(silent, ", "), strings.Join(silent, ", "), strings.Join(whys, "; ")
			j.stats.NodeMissing++
			return p
		}
	}
	if n != nil {
		p.LeftNode, p.Next, p.NextAddr = last.Node, n.Name, addr
		p.LeftHop = lastIfaceHop(last)
		if why, down := j.down[n.Name]; down {
			p.Verdict, p.Missing, p.MissingWhy = PathNodeMissing, n.Name, why
			j.stats.NodeMissing++
		} else {
			p.Verdict = PathUnderlayLost
			j.stats.UnderlayLost++
		}
		return p
	}
	if s := j.source(p.Legs[0]); s != nil && !hasLeg(p.Legs, s.Name) {
		if why, down := j.down[s.Name]; down {
			p.Verdict, p.Missing, p.MissingWhy = PathNodeMissing, s.Name, why
			j.stats.NodeMissing++
		}
	}
	return p
}

func lastIfaceHop(l *Journey) string {
	for k := len(l.Hops) - 1; k >= 0; k-- {
		if l.Hops[k].Kind != KindNetfilter {
			return l.Hops[k].Name()
		}
	}
	return l.Where
}

// cross measures one crossing and aligns the two clocks.
func (j *Joiner) cross(from, to string, a, b *Hop) Crossing {
	c := Crossing{From: from, To: to, FromHop: a.Name(), ToHop: b.Name(), RawNs: int64(b.TimeNs) - int64(a.TimeNs)}
	if t := time.Unix(0, int64(b.TimeNs)); t.After(j.lastCross[[2]string{from, to}]) {
		j.lastCross[[2]string{from, to}] = t
	}
	na, nb := j.nodes[from], j.nodes[to]
	if na != nil && nb != nil && na.BootID != "" && na.BootID == nb.BootID {
		c.LatencyNs, c.Clock = c.RawNs, "same"
		return c
	}
	fwd, back := [2]string{from, to}, [2]string{to, from}
	if m, ok := j.minDel[fwd]; !ok || c.RawNs < m {
		j.minDel[fwd] = c.RawNs
	}
	if mb, ok := j.minDel[back]; ok {
		// θ, how far to's clock is ahead of from's: (min(a→b) − min(b→a)) / 2.
		theta := (j.minDel[fwd] - mb) / 2
		c.LatencyNs, c.Clock = c.RawNs-theta, "aligned"
		if c.LatencyNs < 0 {
			c.LatencyNs = 0
		}
		return c
	}
	if c.RawNs < 0 {
		c.LatencyNs, c.Clock = 0, "clamped"
		return c
	}
	c.LatencyNs, c.Clock = c.RawNs, "unaligned"
	return c
}
