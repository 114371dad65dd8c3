package main

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/pathtrace/pathtrace/decode"
	"github.com/pathtrace/pathtrace/tracer"
)

// explainer names what dropped a packet that netfilter dropped: the rule (or chain
// policy) whose counter rose, or conntrack itself when its counters say the table was
// full or an insert failed. It compares with the counters of its previous look.
type explainer struct {
	rules    *tracer.RuleReader // nil when the ruleset cannot be read
	before   decode.RuleSnapshot
	tr       *tracer.Tracer
	ctBefore decode.CTStats
	ctOK     bool
	done     chan struct{} // stops keepTexts
	shared   bool          // rules is the agent's sharedRules': not this explainer's to close
	// last is the rule named last at each hook, and when: a drop whose counter rose
	// before its journey closed (two drops close in two batches, the first batch's
	// read already counted both) is the same rule's.
	last map[string]lastMatch
}

type lastMatch struct {
	m  decode.RuleMatch
	at time.Time
}

// reuseWithin is how long a named rule stands for later drops at its hook that no
// counter rise explains.
const reuseWithin = 3 * time.Second

// keepTexts reads the rules' texts again soon after the ruleset changes, off the
// lookup's path: naming the rule behind a drop then needs only the counters (tens of
// ms for 10,000 rules) instead of a run of iptables-nft-save (about 100 ms more).
func keepTexts(rules *tracer.RuleReader, done <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			if rules.Stale() {
				rules.Snapshot()
			}
		}
	}
}

// newExplainer reads the starting counters. What cannot be read is said once on
// stderr, and drops are then reported without a rule.
func newExplainer(netns string, tr *tracer.Tracer, stderr io.Writer) *explainer {
	e := &explainer{tr: tr}
	r, err := tracer.NewRuleReader(netns)
	if err != nil {
		fmt.Fprintf(stderr, "pathtrace: note: netfilter rules will not be named: %v\n", err)
	} else if e.startRules(r, stderr) {
		e.done = make(chan struct{})
		go keepTexts(r, e.done)
	} else {
		r.Close()
	}
	e.startCT()
	return e
}

// startRules reads the starting counters from r; false when they cannot be read.
func (e *explainer) startRules(r *tracer.RuleReader, stderr io.Writer) bool {
	var err error
	if e.before, err = r.SnapshotCounters(); err != nil {
		fmt.Fprintf(stderr, "pathtrace: note: netfilter rules will not be named: %v\n", err)
		return false
	}
	e.rules = r
	if e.before.Note != "" {
		fmt.Fprintf(stderr, "pathtrace: note: %s\n", e.before.Note)
	}
	return true
}

func (e *explainer) startCT() {
	if s, err := e.tr.ConntrackStats(); err == nil {
		e.ctBefore, e.ctOK = s, true
	}
}

// sharedRules is the agent's one reader of the node's ruleset, opened when the first
// follower needs it and shared by every follower's explainer (RuleReader locks
// itself), with one refresher of its texts: a follow costs one counters read, not a
// reader, its netlink socket and its rule texts.
type sharedRules struct {
	netns  string
	stderr io.Writer
	once   sync.Once
	r      *tracer.RuleReader
	done   chan struct{} // stops the one keepTexts
}

func (s *sharedRules) get() *tracer.RuleReader {
	s.once.Do(func() {
		r, err := tracer.NewRuleReader(s.netns)
		if err != nil {
			fmt.Fprintf(s.stderr, "pathtrace agent: note: netfilter rules will not be named: %v\n", err)
			return
		}
		s.r = r
		s.done = make(chan struct{})
		go keepTexts(r, s.done)
	})
	return s.r
}

// close stops the refresher and closes the reader, once no follower uses it.
func (s *sharedRules) close() {
	s.once.Do(func() {}) // no reader opens after this
	if s.r != nil {
		close(s.done)
		s.r.Close()
	}
}

// explainer gives a follower an explainer on the shared reader: its own starting
// counters, the reader not its to close.
func (s *sharedRules) explainer(tr *tracer.Tracer) *explainer {
	e := &explainer{tr: tr, shared: true}
	if r := s.get(); r != nil {
		e.startRules(r, s.stderr)
	}
	e.startCT()
	return e
}

// explain fills Drop.Rule and Drop.Cause of the netfilter drops among js, with one look
// at the counters for all of them.
func (e *explainer) Explain(js []*decode.Journey) {
	var drops []*decode.Drop
	for _, j := range js {
		if d := j.Drop; d != nil && d.ByNetfilter() {
			drops = append(drops, d)
		}
	}
	if len(drops) == 0 {
		return
	}
	if e.ctOK {
		if after, err := e.tr.ConntrackStats(); err == nil {
			for _, d := range drops {
				d.Cause = decode.ConntrackCause(e.ctBefore, after, d.Hook)
			}
			e.ctBefore = after
		}
	}
	if e.rules == nil {
		return
	}
	after, err := e.rules.SnapshotCounters()
	if err != nil {
		m := &decode.RuleMatch{Why: "the ruleset could not be read: " + err.Error()}
		for _, d := range drops {
			d.Rule = m
		}
		return
	}
	byHook := map[string][]*decode.Drop{}
	for _, d := range drops {
		if d.Cause == "" {
			byHook[d.Hook] = append(byHook[d.Hook], d)
		}
	}
	now := time.Now()
	for hook, ds := range byHook {
		m := decode.MatchDrop(e.before, after, hook, len(ds))
		if m.Rule != nil {
			_ = e.rules.Describe(&m)
		}
		if e.last == nil {
			e.last = map[string]lastMatch{}
		}
		switch l, ok := e.last[hook]; {
		case m.Rule != nil || m.Policy != nil:
			e.last[hook] = lastMatch{m: m, at: now}
		case ok && now.Sub(l.at) < reuseWithin && m.Candidates == 0:
			m = l.m
		}
		for _, d := range ds {
			d.Rule = &m
		}
	}
	e.before = after
}

func (e *explainer) Close() {
	if e.shared {
		return
	}
	if e.done != nil {
		close(e.done)
	}
	if e.rules != nil {
		e.rules.Close()
	}
}

// factsTTL is how long an answer about the node's state (a link, a route, a sysctl)
// serves the diagnoses of further packets: a burst of identical drops reads the node
// once, and a change shows within this long.
const factsTTL = 500 * time.Millisecond
