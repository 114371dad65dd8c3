package decode

import (
	"sort"
	"strconv"
	"strings"
	"time"
)

// OneWay is a TCP connection whose SYNs left and whose SYN-ACK never came back: the
// missing-SNAT case, a peer that cannot route back, a reply dropped beyond the node.
type OneWay struct {
	Node    string
	Flow    Flow // the first SYN as first seen
	SYNs    int  // SYNs sent, retransmissions included
	FirstNs uint64
	LastNs  uint64
	// LeftVia is the last interface hop of the last SYN ("eth0 egress"); Expect is
	// where the SYN-ACK should have come back in ("eth0 ingress").
	LeftVia string
	Expect  string
	Wait    time.Duration
	// LeftFlow is the SYN's flow at that last hop, after any NAT on the node (the
	// missing-SNAT case leaves it with the pod's address); LeftOuter its VXLAN header
	// when it left encapsulated, nil otherwise.
	LeftFlow  Flow
	LeftOuter *Outer
	// Diagnosis says why, when a Diagnoser could tell (or what it could not read).
	Diagnosis *Diagnosis
}

type pendingSYN struct {
	ow      OneWay
	answers []Flow // the flows an answer would have, one per translated form of the SYN
}

// FlowWatch notices TCP connections that get no answer. Feed it closed journeys; it
// reports a connection once its last SYN is older than the wait and nothing came back
// on any of the SYN's flows (before or after NAT).
type FlowWatch struct {
	wait    time.Duration
	pending map[Flow]*pendingSYN // by the SYN's first flow
	byReply map[Flow]*pendingSYN // by the flow an answer would have
}

// NewFlowWatch returns a watch that waits this long for an answer.
func NewFlowWatch(wait time.Duration) *FlowWatch {
	return &FlowWatch{wait: wait, pending: map[Flow]*pendingSYN{}, byReply: map[Flow]*pendingSYN{}}
}

// Observe takes a closed journey.
func (w *FlowWatch) Observe(j *Journey) {
	if j.Flow.Proto != ProtoTCP || len(j.Hops) == 0 {
		return
	}
	// Any packet on a reply flow answers: a SYN-ACK, and a RST too (refused is not
	// one-way).
	for i := range j.Hops {
		if p := w.byReply[j.Hops[i].Flow]; p != nil {
			w.forget(p)
			break
		}
	}
	if j.TCPFlags&(TCPSyn|TCPAck) != TCPSyn || (j.Verdict != Forwarded && j.Verdict != Delivered) {
		return
	}
	p := w.pending[j.Flow]
	if p == nil {
		p = &pendingSYN{ow: OneWay{Node: j.Node, Flow: j.Flow, FirstNs: j.FirstNs(), Wait: w.wait}}
		w.pending[j.Flow] = p
	}
	p.ow.SYNs++
	p.ow.LastNs = max(p.ow.LastNs, j.lastNs)
	for i := len(j.Hops) - 1; i >= 0; i-- {
		if h := &j.Hops[i]; h.Kind != KindNetfilter {
			p.ow.LeftVia = h.Name()
			p.ow.Expect = h.Ifname + " " + Ingress.String()
			p.ow.LeftFlow = h.Flow
			p.ow.LeftOuter = nil
			if h.Outer != nil {
				o := *h.Outer // the hop's lives in the journey's storage, released after this
				p.ow.LeftOuter = &o
			}
			break
		}
	}
	for i := range j.Hops {
		r := j.Hops[i].Flow.Reverse()
		if w.byReply[r] == nil {
			w.byReply[r] = p
			p.answers = append(p.answers, r)
		}
	}
}

func (w *FlowWatch) forget(p *pendingSYN) {
	delete(w.pending, p.ow.Flow)
	for _, f := range p.answers {
		if w.byReply[f] == p {
			delete(w.byReply, f)
		}
	}
}

// Expire reports the connections whose last SYN is older than the wait, as of nowNs
// (CLOCK_MONOTONIC), oldest first.
func (w *FlowWatch) Expire(nowNs uint64) []*OneWay {
	var out []*OneWay
	for _, p := range w.pending {
		if nowNs >= p.ow.LastNs && nowNs-p.ow.LastNs >= uint64(w.wait) {
			ow := p.ow
			out = append(out, &ow)
			w.forget(p)
		}
	}
	sort.Slice(out, func(i, k int) bool { return out[i].FirstNs < out[k].FirstNs })
	return out
}

// Pending is the number of connections waiting for an answer.
func (w *FlowWatch) Pending() int { return len(w.pending) }

// Summary says it in words.
func (o *OneWay) Summary() string {
	var b strings.Builder
	b.WriteString("one-way: ")
	if o.SYNs == 1 {
		b.WriteString("1 SYN")
	} else {
		b.WriteString(strconv.Itoa(o.SYNs) + " SYNs")
	}
	b.WriteString(" left via " + o.LeftVia + ", no SYN-ACK came back")
	if o.Expect != "" {
		b.WriteString(" through " + o.Expect)
	}
	b.WriteString(" within " + o.Wait.String())
	return b.String()
}
