package diagnose

import (
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/pathtrace/pathtrace/decode"
)

// Cached shares one reader between the diagnosers of several goroutines (an agent's
// followers): calls are serialized, and an answer is reused for ttl, so that a burst
// of identical drops reads the node once, not once per packet. At most maxCached
// answers are kept; the oldest goes first.
func Cached(f Facts, ttl time.Duration) Facts {
	if f == nil {
		return nil
	}
	return &cached{f: f, ttl: ttl, m: map[string]*answer{}, now: time.Now}
}

const maxCached = 1024

type answer struct {
	v   any
	ok  bool
	err error
	at  time.Time
}

type cached struct {
	mu    sync.Mutex
	f     Facts
	ttl   time.Duration
	m     map[string]*answer
	order []string // keys by insertion, for eviction
	now   func() time.Time
}

// get returns the answer for key, reading it with read when there is none younger
// than ttl.
func (c *cached) get(key string, read func() (any, bool, error)) (any, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if a := c.m[key]; a != nil && now.Sub(a.at) < c.ttl {
		return a.v, a.ok, a.err
	}
	v, ok, err := read()
	if _, had := c.m[key]; !had {
		if len(c.order) >= maxCached {
			delete(c.m, c.order[0])
			c.order = c.order[1:]
		}
		c.order = append(c.order, key)
	}
	c.m[key] = &answer{v: v, ok: ok, err: err, at: now}
	return v, ok, err
}

func typed[T any](v any, _ bool, err error) (T, error) {
	t, _ := v.(T)
	return t, err
}

func (c *cached) Link(name string) (Link, error) {
	return typed[Link](c.get("link "+name, func() (any, bool, error) { v, err := c.f.Link(name); return v, true, err }))
}

func (c *cached) Links() ([]Link, error) {
	return typed[[]Link](c.get("links", func() (any, bool, error) { v, err := c.f.Links(); return v, true, err }))
}

func (c *cached) Sysctl(name string) (string, error) {
	return typed[string](c.get("sysctl "+name, func() (any, bool, error) { v, err := c.f.Sysctl(name); return v, true, err }))
}

func (c *cached) RouteGet(dst, src netip.Addr, iif string) (Route, error) {
	key := fmt.Sprintf("routeget %s %s %s", dst, src, iif)
	return typed[Route](c.get(key, func() (any, bool, error) { v, err := c.f.RouteGet(dst, src, iif); return v, true, err }))
}

func (c *cached) Routes(dst netip.Addr) ([]Route, error) {
	return typed[[]Route](c.get("routes "+dst.String(), func() (any, bool, error) { v, err := c.f.Routes(dst); return v, true, err }))
}

func (c *cached) Neigh(dev string, a netip.Addr) (Neigh, bool, error) {
	v, ok, err := c.get("neigh "+dev+" "+a.String(), func() (any, bool, error) { return c.f.Neigh(dev, a) })
	n, _ := v.(Neigh)
	return n, ok, err
}

func (c *cached) FDB(dev string) ([]FDBEntry, error) {
	return typed[[]FDBEntry](c.get("fdb "+dev, func() (any, bool, error) { v, err := c.f.FDB(dev); return v, true, err }))
}

func (c *cached) Qdiscs(dev string) ([]Qdisc, error) {
	return typed[[]Qdisc](c.get("qdiscs "+dev, func() (any, bool, error) { v, err := c.f.Qdiscs(dev); return v, true, err }))
}

func (c *cached) Conntrack() (Conntrack, error) {
	return typed[Conntrack](c.get("conntrack", func() (any, bool, error) { v, err := c.f.Conntrack(); return v, true, err }))
}

func (c *cached) NATRules() (decode.RuleSnapshot, error) {
	return typed[decode.RuleSnapshot](c.get("natrules", func() (any, bool, error) { v, err := c.f.NATRules(); return v, true, err }))
}

func (c *cached) Node() (NodeAddrs, error) {
	return typed[NodeAddrs](c.get("node", func() (any, bool, error) { v, err := c.f.Node(); return v, true, err }))
}
