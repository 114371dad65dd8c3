package tracer

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/pathtrace/pathtrace/decode"
)

// RuleReader reads the nftables ruleset of one network namespace with its counters,
// for decode.MatchDrop to name the rule behind a NETFILTER_DROP. It covers the rules
// of iptables-nft and of native nftables alike, both being nftables rules in the
// kernel; rules of iptables-legacy live in x_tables and are out of its reach (the
// snapshot's Note says when such tables exist).
//
// Counters, chains, hooks, policies and verdicts come from netlink. The rules' text,
// as their user wrote them, comes from iptables-save (tables of iptables-nft) or from
// nft (other tables), run in the namespace; those texts are cached per table and read
// again only when the ruleset's generation changed, so a lookup in an unchanged
// ruleset runs no tool. A RuleReader is safe for concurrent use.
type RuleReader struct {
	ns   *nsRef
	mu   sync.Mutex
	conn *nftables.Conn
	fd   int    // NETLINK_NETFILTER socket in the namespace: rule dumps, the generation
	seq  uint32 // of the last request on fd
	buf  []byte // receive buffer of fd

	texts map[nfrTableID]*nfrTexts
	tools map[string]string // tool name → path ("" when missing)

	// The rules of the last snapshot per table, in order, and its generation.
	last      map[nfrTableID][]nfrTextKey
	lastGen   uint32
	lastGenOK bool

	toolRuns int // how many times a tool ran (tests)
}

// nfrTableID names one nftables table.
type nfrTableID struct{ family, table string }

// nfrTextKey names one rule in a table.
type nfrTextKey struct {
	chain  string
	handle uint64
}

// nfrTexts is what the tools said about one table's rules at one generation.
type nfrTexts struct {
	gen     uint32
	genOK   bool                  // gen was read; false: trust the handles alone
	texts   map[nfrTextKey]string // every rule the table had then, "" when no text
	backend map[string]string     // chain → backend its texts are in
	err     error                 // why texts are missing, if they are
}

// Generation of the ruleset: NFT_MSG_GETGEN / NFT_MSG_NEWGEN, NFTA_GEN_ID.
const (
	nfrMsgGetGen = 16
	nfrMsgNewGen = 15
	nfrAttrGenID = 1
)

// nfrBufSize is the receive buffer for dumps; the kernel fills each part of a dump up
// to the reader's buffer size (32 KiB at most in current kernels).
const nfrBufSize = 256 << 10

// nfrIptablesTables are the tables iptables-nft creates in the ip and ip6 families.
var nfrIptablesTables = map[string]bool{"filter": true, "nat": true, "mangle": true, "raw": true, "security": true}

// NewRuleReader opens the ruleset of a network namespace: a path such as
// /run/netns/NAME or /proc/PID/ns/net, a name under /run/netns, or "" for the
// caller's own. It needs CAP_NET_ADMIN in that namespace.
func NewRuleReader(netnsPath string) (*RuleReader, error) {
	ns, err := openNetns(netnsPath)
	if err != nil {
		return nil, err
	}
	r := &RuleReader{ns: ns, fd: -1, buf: make([]byte, nfrBufSize), texts: make(map[nfrTableID]*nfrTexts), tools: make(map[string]string)}
	opts := []nftables.ConnOption{nftables.AsLasting()}
	if ns.path != "" {
		opts = append(opts, nftables.WithNetNSFd(int(ns.handle)))
	}
	r.conn, err = nftables.New(opts...)
	if err != nil {
		ns.close()
		return nil, fmt.Errorf("open nftables netlink socket in %s: %w", ns, err)
	}
	err = ns.do(func() error {
		fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
		if err != nil {
			return err
		}
		tv := unix.Timeval{Sec: 2}
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			unix.Close(fd)
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			unix.Close(fd)
			return err
		}
		r.fd = fd
		return nil
	})
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("open netfilter netlink socket in %s: %w", ns, err)
	}
	return r, nil
}

// Close releases the sockets and the namespace.
func (r *RuleReader) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var err error
	if r.conn != nil {
		err = r.conn.CloseLasting()
		r.conn = nil
	}
	if r.fd >= 0 {
		unix.Close(r.fd)
		r.fd = -1
	}
	if r.ns != nil {
		r.ns.close()
		r.ns = nil
	}
	return err
}

// Snapshot reads every rule with its counters, verdict and text, and every chain
// with its hook and policy. Texts come from the cache, read again with the tools for
// tables whose rules changed since (a new ruleset generation, or a rule the cache
// does not know).
func (r *RuleReader) Snapshot() (decode.RuleSnapshot, error) {
	return r.snapshot(true)
}

// SnapshotCounters is Snapshot without running any tool: rules have their text only
// when the cache holds it for the current ruleset. Name the matched rule afterwards
// with Describe. Use it where the ruleset changes often (kube-proxy) and only the
// matched rule needs its text.
func (r *RuleReader) SnapshotCounters() (decode.RuleSnapshot, error) {
	return r.snapshot(false)
}

// Describe gives the rule that m names its text, running the tool for its table
// when the cache does not hold the rule.
func (r *RuleReader) Describe(m *decode.RuleMatch) error {
	if m == nil || m.Rule == nil || m.Rule.Text != "" {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conn == nil {
		return errors.New("rule reader closed")
	}
	gen, genOK := r.generation()
	id := nfrTableID{m.Rule.Family, m.Rule.Table}
	k := nfrTextKey{m.Rule.Chain, m.Rule.Handle}
	tt := r.texts[id]
	if tt == nil || !tt.fresh(gen, genOK, k) {
		// The positions of iptables-save's lines need the table's rules in order:
		// those of the last snapshot if the ruleset is still the same.
		rules, ok := r.last[id]
		if !ok || !genOK || !r.lastGenOK || gen != r.lastGen {
			var err error
			if rules, err = r.tableRules(id); err != nil {
				return err
			}
		}
		r.loadTexts(map[nfrTableID][]nfrTextKey{id: rules}, gen, genOK)
		tt = r.texts[id]
	}
	if tt == nil {
		return nil
	}
	m.Rule.Text = tt.texts[k]
	if b := tt.backend[m.Rule.Chain]; b != "" {
		m.Rule.Backend = b
	}
	return tt.err
}

func (r *RuleReader) snapshot(withTexts bool) (decode.RuleSnapshot, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conn == nil {
		return decode.RuleSnapshot{}, errors.New("rule reader closed")
	}
	var snap decode.RuleSnapshot
	var gen uint32
	var genOK bool
	// A ruleset that changed while it was read is read again (as nft does), at most
	// twice; the generation before and after tells.
	for try := 0; ; try++ {
		gen, genOK = r.generation()
		var err error
		snap, err = r.read(nil)
		if err != nil {
			return decode.RuleSnapshot{}, err
		}
		if !genOK || try == 2 {
			break
		}
		if again, ok := r.generation(); ok && again == gen {
			break
		}
	}

	// The rules of each table in order, as the tools' texts are matched to them.
	byTable := make(map[nfrTableID][]nfrTextKey)
	for i := range snap.Rules {
		rule := &snap.Rules[i]
		id := nfrTableID{rule.Family, rule.Table}
		byTable[id] = append(byTable[id], nfrTextKey{rule.Chain, rule.Handle})
	}
	r.last, r.lastGen, r.lastGenOK = byTable, gen, genOK
	stale := make(map[nfrTableID][]nfrTextKey)
	for id, rules := range byTable {
		tt := r.texts[id]
		if tt == nil || !tt.freshAll(gen, genOK, rules) {
			stale[id] = rules
		}
	}
	if withTexts && len(stale) > 0 {
		r.loadTexts(stale, gen, genOK)
		stale = nil
	}
	for id := range r.texts {
		if _, ok := byTable[id]; !ok {
			delete(r.texts, id) // the table is gone
		}
	}
	var errs []string
	for i := range snap.Rules {
		rule := &snap.Rules[i]
		id := nfrTableID{rule.Family, rule.Table}
		tt := r.texts[id]
		if tt == nil {
			continue
		}
		if _, ok := stale[id]; ok {
			continue // texts of another ruleset
		}
		rule.Text = tt.texts[nfrTextKey{rule.Chain, rule.Handle}]
		if b := tt.backend[rule.Chain]; b != "" {
			rule.Backend = b
		}
	}
	for i := range snap.Chains {
		c := &snap.Chains[i]
		if tt := r.texts[nfrTableID{c.Family, c.Table}]; tt != nil {
			if b := tt.backend[c.Name]; b != "" {
				c.Backend = b
			}
		}
	}
	if withTexts {
		seen := make(map[string]bool)
		for id := range byTable {
			if tt := r.texts[id]; tt != nil && tt.err != nil && !seen[tt.err.Error()] {
				seen[tt.err.Error()] = true
				errs = append(errs, tt.err.Error())
			}
		}
	}
	sort.Strings(errs)
	notes := errs
	if legacy := r.legacyTables(); legacy != "" {
		notes = append([]string{"iptables-legacy tables exist in this namespace (" + legacy + "): their rules live in x_tables, where no nftables counter sees them"}, notes...)
	}
	snap.Note = strings.Join(notes, "; ")
	return snap, nil
}

// read dumps chains and rules through netlink: all of them, or those of one table.
//
// Chains come from google/nftables. Rules come from one dump of our own, read with a
// large buffer: the kernel fills each part of a dump up to the size of the reader's
// buffer, and restarts each part by walking the chain from its head, so the page-sized
// buffer of a generic netlink reader makes a dump of 10,000 rules quadratic. Of the
// rules' expressions only those that count or decide (counter, immediate verdicts,
// reject, queue, xt targets, verdict maps) are decoded, with google/nftables/expr.
func (r *RuleReader) read(only *nfrTableID) (decode.RuleSnapshot, error) {
	var snap decode.RuleSnapshot
	var chains []*nftables.Chain
	var err error
	var family nftables.TableFamily
	if only == nil {
		chains, err = r.conn.ListChains()
	} else {
		family = nfrFamily(only.family)
		chains, err = r.conn.ListChainsOfTableFamily(family)
	}
	if err != nil {
		return snap, fmt.Errorf("list nftables chains in %s: %w", r.ns, err)
	}
	// Stable order: by family, table, then the kernel's order of chains.
	sort.SliceStable(chains, func(i, j int) bool {
		a, b := chains[i].Table, chains[j].Table
		if a.Family != b.Family {
			return a.Family < b.Family
		}
		return a.Name < b.Name
	})
	type chainAt struct {
		c     decode.Chain
		fam   nftables.TableFamily
		rules []decode.Rule
	}
	type key struct {
		fam          nftables.TableFamily
		table, chain string
	}
	byKey := make(map[key]*chainAt, len(chains))
	var order []*chainAt
	for _, c := range chains {
		if c.Table == nil || only != nil && c.Table.Name != only.table {
			continue
		}
		ca := &chainAt{c: nfrChain(c), fam: c.Table.Family}
		byKey[key{c.Table.Family, c.Table.Name, c.Name}] = ca
		order = append(order, ca)
	}

	var attrs []byte
	if only != nil {
		attrs = nfrAttrString(attrs, unix.NFTA_RULE_TABLE, only.table)
	}
	var cur *chainAt
	var curTable, curChain []byte
	var curFam uint8
	for try := 0; ; try++ {
		for _, ca := range order {
			ca.rules = ca.rules[:0]
		}
		cur = nil
		intr, err := r.dump(unix.NFT_MSG_GETRULE, uint8(family), attrs, func(data []byte) error {
			m, err := nfrParseRuleMsg(data)
			if err != nil {
				return err
			}
			// The dump comes chain by chain: look a chain up only when it changes.
			if cur == nil || m.fam != curFam || !bytes.Equal(m.table, curTable) || !bytes.Equal(m.chain, curChain) {
				k := key{nftables.TableFamily(m.fam), string(m.table), string(m.chain)}
				cur = byKey[k]
				if cur == nil {
					// A chain made after the chains were listed: the generation check
					// reads everything again.
					fname := nfrFamilyName(k.fam)
					cur = &chainAt{c: decode.Chain{Family: fname, Table: k.table, Name: k.chain, Backend: nfrBackend(fname, k.table)}, fam: k.fam}
					byKey[k] = cur
					order = append(order, cur)
				}
				curFam, curTable, curChain = m.fam, m.table, m.chain
			}
			rule := decode.Rule{Family: cur.c.Family, Table: cur.c.Table, Chain: cur.c.Name, Hook: cur.c.Hook,
				Handle: m.handle, Position: len(cur.rules) + 1, Backend: cur.c.Backend}
			nfrApplyExprs(&rule, m.fam, m.exprs)
			cur.rules = append(cur.rules, rule)
			return nil
		})
		if err != nil {
			return snap, fmt.Errorf("list nftables rules in %s: %w", r.ns, err)
		}
		if !intr || try == 3 {
			break // an interrupted dump (the ruleset changed) is read again
		}
	}
	n := 0
	for _, ca := range order {
		n += len(ca.rules)
	}
	snap.Rules = make([]decode.Rule, 0, n)
	for _, ca := range order {
		snap.Chains = append(snap.Chains, ca.c)
		snap.Rules = append(snap.Rules, ca.rules...)
	}
	return snap, nil
}

// tableRules reads the rules of one table, in order.
func (r *RuleReader) tableRules(id nfrTableID) ([]nfrTextKey, error) {
	snap, err := r.read(&id)
	if err != nil {
		return nil, err
	}
	var out []nfrTextKey
	for _, rule := range snap.Rules {
		if rule.Family == id.family && rule.Table == id.table {
			out = append(out, nfrTextKey{rule.Chain, rule.Handle})
		}
	}
	return out, nil
}

func nfrFamilyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	case nftables.TableFamilyINet:
		return "inet"
	case nftables.TableFamilyARP:
		return "arp"
	case nftables.TableFamilyBridge:
		return "bridge"
	case nftables.TableFamilyNetdev:
		return "netdev"
	}
	return fmt.Sprintf("family%d", f)
}

func nfrFamily(name string) nftables.TableFamily {
	for _, f := range []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyIPv6,
		nftables.TableFamilyINet, nftables.TableFamilyARP, nftables.TableFamilyBridge, nftables.TableFamilyNetdev} {
		if nfrFamilyName(f) == name {
			return f
		}
	}
	return nftables.TableFamilyUnspecified
}

func nfrHookName(f nftables.TableFamily, h nftables.ChainHook) string {
	switch f {
	case nftables.TableFamilyNetdev:
		switch h {
		case unix.NF_NETDEV_INGRESS:
			return "INGRESS"
		case unix.NF_NETDEV_EGRESS:
			return "EGRESS"
		}
	case nftables.TableFamilyARP:
		switch h {
		case 0:
			return "INPUT"
		case 1:
			return "OUTPUT"
		case 2:
			return "FORWARD"
		}
	default:
		switch h {
		case unix.NF_INET_PRE_ROUTING:
			return "PREROUTING"
		case unix.NF_INET_LOCAL_IN:
			return "INPUT"
		case unix.NF_INET_FORWARD:
			return "FORWARD"
		case unix.NF_INET_LOCAL_OUT:
			return "OUTPUT"
		case unix.NF_INET_POST_ROUTING:
			return "POSTROUTING"
		case 5: // NF_INET_INGRESS (inet family)
			return "INGRESS"
		}
	}
	return fmt.Sprintf("HOOK%d", h)
}

func nfrBackend(family, table string) string {
	if (family == "ip" || family == "ip6") && nfrIptablesTables[table] {
		return decode.BackendIptablesNft
	}
	return decode.BackendNftables
}

func nfrChain(c *nftables.Chain) decode.Chain {
	fam := nfrFamilyName(c.Table.Family)
	dc := decode.Chain{Family: fam, Table: c.Table.Name, Name: c.Name, Backend: nfrBackend(fam, c.Table.Name)}
	if c.Hooknum != nil {
		dc.Hook = nfrHookName(c.Table.Family, *c.Hooknum)
		dc.Policy = "accept"
		if c.Policy != nil && *c.Policy == nftables.ChainPolicyDrop {
			dc.Policy = "drop"
		}
	}
	return dc
}

// nfrRuleMsg is what one message of a rule dump (NFT_MSG_NEWRULE) says. The byte
// slices point into the message.
type nfrRuleMsg struct {
	fam          uint8
	table, chain []byte
	handle       uint64
	exprs        []byte // NFTA_RULE_EXPRESSIONS, for nfrApplyExprs
}

// nfrParseRuleMsg reads a rule message: its nfgenmsg header, then its attributes.
// Attributes it does not know, or of the wrong size, are left out.
func nfrParseRuleMsg(data []byte) (nfrRuleMsg, error) {
	var m nfrRuleMsg
	if len(data) < 4 {
		return m, errors.New("short rule message")
	}
	m.fam = data[0]
	nfrEachAttr(data[4:], func(typ uint16, v []byte) {
		switch typ {
		case unix.NFTA_RULE_TABLE:
			m.table = bytes.TrimRight(v, "\x00")
		case unix.NFTA_RULE_CHAIN:
			m.chain = bytes.TrimRight(v, "\x00")
		case unix.NFTA_RULE_HANDLE:
			if len(v) == 8 {
				m.handle = binary.BigEndian.Uint64(v)
			}
		case unix.NFTA_RULE_EXPRESSIONS:
			m.exprs = v
		}
	})
	return m, nil
}

// nfrApplyExprs reads a rule's expressions (the list of NFTA_RULE_EXPRESSIONS) into
// rule: its counter and its verdict.
func nfrApplyExprs(rule *decode.Rule, fam uint8, exprs []byte) {
	nfrEachAttr(exprs, func(typ uint16, elem []byte) {
		if typ != unix.NFTA_LIST_ELEM {
			return
		}
		var name, edata []byte
		nfrEachAttr(elem, func(typ uint16, v []byte) {
			switch typ {
			case unix.NFTA_EXPR_NAME:
				name = bytes.TrimRight(v, "\x00")
			case unix.NFTA_EXPR_DATA:
				edata = v
			}
		})
		nfrApplyExpr(rule, fam, string(name), edata)
	})
}

// nfrApplyExpr reads what matters of one expression of a rule: its counter, or the
// verdict it gives (a later one overrides an earlier one).
func nfrApplyExpr(rule *decode.Rule, fam uint8, name string, data []byte) {
	switch name {
	case "counter":
		// Decoded here rather than with expr.Counter: this runs for every rule, and
		// a generic attribute decoder costs more than the whole dump's parsing.
		nfrEachAttr(data, func(typ uint16, v []byte) {
			if len(v) != 8 {
				return
			}
			switch typ {
			case unix.NFTA_COUNTER_BYTES:
				rule.Bytes = binary.BigEndian.Uint64(v)
			case unix.NFTA_COUNTER_PACKETS:
				rule.Packets = binary.BigEndian.Uint64(v)
			}
		})
		rule.HasCounter = true
	case "immediate":
		// A verdict is an immediate writing to the verdict register (as expr.Verdict).
		dreg := ^uint32(0)
		var verdict []byte
		nfrEachAttr(data, func(typ uint16, v []byte) {
			switch typ {
			case unix.NFTA_IMMEDIATE_DREG:
				if len(v) == 4 {
					dreg = binary.BigEndian.Uint32(v)
				}
			case unix.NFTA_IMMEDIATE_DATA:
				nfrEachAttr(v, func(typ uint16, v []byte) {
					if typ == unix.NFTA_DATA_VERDICT {
						verdict = v
					}
				})
			}
		})
		if dreg != unix.NFT_REG_VERDICT || verdict == nil {
			return
		}
		var e expr.Verdict
		nfrEachAttr(verdict, func(typ uint16, v []byte) {
			switch typ {
			case unix.NFTA_VERDICT_CODE:
				if len(v) == 4 {
					e.Kind = expr.VerdictKind(int32(binary.BigEndian.Uint32(v)))
				}
			case unix.NFTA_VERDICT_CHAIN:
				e.Chain = string(bytes.TrimRight(v, "\x00"))
			}
		})
		rule.Verdict = nfrVerdict(&e)
	case "reject":
		rule.Verdict = "reject"
	case "queue":
		rule.Verdict = "queue"
	case "target":
		// iptables-nft keeps extensions it cannot express natively as xt targets.
		var t expr.Target
		if expr.Unmarshal(fam, data, &t) != nil {
			return
		}
		switch strings.ToUpper(t.Name) {
		case "DROP":
			rule.Verdict = "drop"
		case "REJECT":
			rule.Verdict = "reject"
		case "ACCEPT":
			rule.Verdict = "accept"
		}
	case "lookup":
		var l expr.Lookup
		if expr.Unmarshal(fam, data, &l) == nil && l.IsDestRegSet && l.DestRegister == unix.NFT_REG_VERDICT {
			rule.Verdict = "vmap @" + l.SetName
		}
	}
}

func nfrVerdict(v *expr.Verdict) string {
	switch v.Kind {
	case expr.VerdictDrop:
		return "drop"
	case expr.VerdictAccept:
		return "accept"
	case expr.VerdictQueue:
		return "queue"
	case expr.VerdictStolen:
		return "stolen"
	case expr.VerdictJump:
		return "jump " + v.Chain
	case expr.VerdictGoto:
		return "goto " + v.Chain
	case expr.VerdictReturn:
		return "return"
	}
	return "" // continue, break
}

// generation reads the ruleset's generation: every committed change increments it.
func (r *RuleReader) generation() (uint32, bool) {
	if r.fd < 0 {
		return 0, false
	}
	seq, err := r.request(nfrMsgGetGen, unix.NLM_F_REQUEST, unix.AF_UNSPEC, nil)
	if err != nil {
		return 0, false
	}
	var gen uint32
	found := false
	_, err = r.receive(seq, false, func(data []byte) error {
		if len(data) < 4 {
			return errors.New("short generation message")
		}
		nfrEachAttr(data[4:], func(typ uint16, v []byte) {
			if typ == nfrAttrGenID && len(v) == 4 {
				gen, found = binary.BigEndian.Uint32(v), true
			}
		})
		return nil
	})
	return gen, err == nil && found
}

// dump sends a dump request and hands fn each message of the answer. intr says that
// the ruleset changed during the dump (NLM_F_DUMP_INTR): what fn saw may be torn.
func (r *RuleReader) dump(msg uint16, family uint8, attrs []byte, fn func(data []byte) error) (intr bool, err error) {
	seq, err := r.request(msg, unix.NLM_F_REQUEST|unix.NLM_F_DUMP, family, attrs)
	if err != nil {
		return false, err
	}
	return r.receive(seq, true, fn)
}

// request sends one nftables message on the reader's own socket.
func (r *RuleReader) request(msg, flags uint16, family uint8, attrs []byte) (uint32, error) {
	r.seq++
	req := make([]byte, unix.NLMSG_HDRLEN+4, unix.NLMSG_HDRLEN+4+len(attrs))
	req = append(req, attrs...)
	binary.NativeEndian.PutUint32(req[0:], uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:], unix.NFNL_SUBSYS_NFTABLES<<8|msg)
	binary.NativeEndian.PutUint16(req[6:], flags)
	binary.NativeEndian.PutUint32(req[8:], r.seq)
	req[16] = family
	req[17] = unix.NFNETLINK_V0
	return r.seq, unix.Sendto(r.fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
}

// receive reads the answer to request seq: every message of a dump up to its end, or
// the first message of a single answer. Answers to earlier requests are skipped.
func (r *RuleReader) receive(seq uint32, dump bool, fn func(data []byte) error) (intr bool, err error) {
	for {
		n, _, err := unix.Recvfrom(r.fd, r.buf, unix.MSG_TRUNC)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return intr, err
		}
		if n > len(r.buf) {
			return intr, fmt.Errorf("netlink message of %d bytes, larger than the buffer", n)
		}
		b := r.buf[:n]
		for len(b) >= unix.NLMSG_HDRLEN {
			l := int(binary.NativeEndian.Uint32(b[0:]))
			typ := binary.NativeEndian.Uint16(b[4:])
			flags := binary.NativeEndian.Uint16(b[6:])
			mseq := binary.NativeEndian.Uint32(b[8:])
			if l < unix.NLMSG_HDRLEN || l > len(b) {
				return intr, errors.New("malformed netlink message")
			}
			data := b[unix.NLMSG_HDRLEN:l]
			b = b[min((l+3)&^3, len(b)):]
			if mseq != seq {
				continue
			}
			if flags&unix.NLM_F_DUMP_INTR != 0 {
				intr = true
			}
			switch typ {
			case unix.NLMSG_DONE:
				return intr, nil
			case unix.NLMSG_ERROR:
				if len(data) >= 4 {
					if errno := int32(binary.NativeEndian.Uint32(data)); errno != 0 {
						return intr, unix.Errno(-errno)
					}
				}
				if !dump {
					return intr, errors.New("no answer")
				}
			default:
				if err := fn(data); err != nil {
					return intr, err
				}
				if !dump {
					return intr, nil
				}
			}
		}
	}
}

// nfrEachAttr calls fn for each netlink attribute in b, with its type less the
// nested and byte-order flags.
func nfrEachAttr(b []byte, fn func(typ uint16, v []byte)) {
	for len(b) >= 4 {
		l := int(binary.NativeEndian.Uint16(b))
		typ := binary.NativeEndian.Uint16(b[2:]) &^ (unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
		if l < 4 || l > len(b) {
			return
		}
		fn(typ, b[4:l])
		b = b[min((l+3)&^3, len(b)):]
	}
}

// nfrAttrString appends a string attribute.
func nfrAttrString(b []byte, typ uint16, s string) []byte {
	l := 4 + len(s) + 1
	b = binary.NativeEndian.AppendUint16(b, uint16(l))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, s...)
	b = append(b, 0)
	for l%4 != 0 {
		b = append(b, 0)
		l++
	}
	return b
}

// legacyTables lists the x_tables (iptables-legacy) tables of the namespace, such as
// "ip: filter, nat"; "" when there are none.
func (r *RuleReader) legacyTables() string {
	var out []string
	_ = r.ns.do(func() error {
		for _, f := range []struct{ fam, file string }{{"ip", "ip_tables_names"}, {"ip6", "ip6_tables_names"}} {
			b, err := os.ReadFile("/proc/thread-self/net/" + f.file)
			if err != nil {
				continue
			}
			names := strings.Fields(string(b))
			if len(names) > 0 {
				sort.Strings(names)
				out = append(out, f.fam+": "+strings.Join(names, ", "))
			}
		}
		return nil
	})
	return strings.Join(out, "; ")
}

func (tt *nfrTexts) fresh(gen uint32, genOK bool, k nfrTextKey) bool {
	if genOK && tt.genOK {
		return gen == tt.gen
	}
	_, ok := tt.texts[k]
	return ok
}

func (tt *nfrTexts) freshAll(gen uint32, genOK bool, rules []nfrTextKey) bool {
	if genOK && tt.genOK {
		return gen == tt.gen
	}
	for _, k := range rules {
		if _, ok := tt.texts[k]; !ok {
			return false
		}
	}
	return true
}

// loadTexts runs the tools for the tables given with their rules (in chain order) and
// caches what they say at generation gen.
func (r *RuleReader) loadTexts(tables map[nfrTableID][]nfrTextKey, gen uint32, genOK bool) {
	// iptables-save gives all of a family's tables in one run.
	saved := make(map[string]*nfrSave)
	for id := range tables {
		if nfrBackend(id.family, id.table) != decode.BackendIptablesNft || saved[id.family] != nil {
			continue
		}
		saved[id.family] = r.iptablesSave(id.family)
	}
	for id, rules := range tables {
		tt := &nfrTexts{gen: gen, genOK: genOK, texts: make(map[nfrTextKey]string, len(rules)),
			backend: make(map[string]string)}
		byChain := make(map[string][]nfrTextKey)
		var order []string
		for _, k := range rules {
			tt.texts[k] = ""
			if _, ok := byChain[k.chain]; !ok {
				order = append(order, k.chain)
			}
			byChain[k.chain] = append(byChain[k.chain], k)
		}
		var needNft []string // chains whose texts must come from nft
		if s := saved[id.family]; s != nil {
			for _, chain := range order {
				lines, ok := s.lines(id.table, chain)
				crules := byChain[chain]
				if !ok || len(lines) != len(crules) {
					needNft = append(needNft, chain)
					continue
				}
				for i, k := range crules {
					tt.texts[k] = lines[i]
				}
				tt.backend[chain] = decode.BackendIptablesNft
			}
			if s.err != nil && len(needNft) > 0 {
				tt.err = s.err
			}
		} else {
			needNft = order
		}
		if len(needNft) > 0 {
			texts, err := r.nftTexts(id)
			if err != nil {
				tt.err = errors.Join(tt.err, err)
			}
			for _, chain := range needNft {
				for _, k := range byChain[chain] {
					if t, ok := texts[k]; ok {
						tt.texts[k] = t
						tt.backend[chain] = decode.BackendNftables
					}
				}
			}
		}
		r.texts[id] = tt
	}
	// The ruleset changed while the tools ran: iptables-save's lines may no longer
	// sit at the positions of the rules read, so drop the texts and read them again
	// next time. A wrong text is worse than none.
	if genOK {
		if now, ok := r.generation(); !ok || now != gen {
			for id := range tables {
				r.texts[id].genOK, r.texts[id].texts = false, map[nfrTextKey]string{}
			}
		}
	}
}

// nfrSave is the parsed output of iptables-save: -A lines per table and chain.
type nfrSave struct {
	tables       map[string]map[string][]string
	incompatible map[string]bool
	err          error
}

func (s *nfrSave) lines(table, chain string) ([]string, bool) {
	if s.incompatible[table] {
		return nil, false
	}
	t, ok := s.tables[table]
	if !ok {
		return nil, false
	}
	return t[chain], true
}

// iptablesSave runs iptables-nft-save (ip6tables-nft-save for ip6) in the namespace.
func (r *RuleReader) iptablesSave(family string) *nfrSave {
	names := []string{"iptables-nft-save", "iptables-save"}
	if family == "ip6" {
		names = []string{"ip6tables-nft-save", "ip6tables-save"}
	}
	var path string
	for _, n := range names {
		if path = r.tool(n); path != "" {
			break
		}
	}
	if path == "" {
		return &nfrSave{err: fmt.Errorf("%s not found: rule texts of iptables-nft are unknown", names[0])}
	}
	out, err := r.run(path)
	if err != nil {
		return &nfrSave{err: err}
	}
	s := nfrParseIptablesSave(out)
	if s.legacy {
		return &nfrSave{err: fmt.Errorf("%s is iptables-legacy's: rule texts of iptables-nft are unknown", path)}
	}
	return &nfrSave{tables: s.tables, incompatible: s.incompatible}
}

type nfrParsedSave struct {
	tables       map[string]map[string][]string
	incompatible map[string]bool
	legacy       bool // the tool shows x_tables, not nftables
}

// nfrParseIptablesSave reads iptables-save's output: "*table" sections with "-A CHAIN"
// lines in rule order.
func nfrParseIptablesSave(out []byte) nfrParsedSave {
	s := nfrParsedSave{tables: make(map[string]map[string][]string), incompatible: make(map[string]bool)}
	var table map[string][]string
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 64*1024), 16*1024*1024)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), " \t\r")
		switch {
		case strings.HasPrefix(line, "# Generated by") && strings.Contains(line, "(legacy)"):
			s.legacy = true
		case strings.HasPrefix(line, "# Table `") && strings.Contains(line, "incompatible"):
			// # Table `filter' is incompatible, use 'nft' tool.
			name := strings.TrimPrefix(line, "# Table `")
			if i := strings.IndexAny(name, "'`"); i > 0 {
				s.incompatible[name[:i]] = true
			}
		case strings.HasPrefix(line, "*"):
			name := line[1:]
			table = make(map[string][]string)
			s.tables[name] = table
		case line == "COMMIT":
			table = nil
		case strings.HasPrefix(line, ":") && table != nil:
			if f := strings.Fields(line[1:]); len(f) > 0 {
				if _, ok := table[f[0]]; !ok {
					table[f[0]] = nil
				}
			}
		case strings.HasPrefix(line, "-A ") && table != nil:
			f := strings.Fields(line)
			if len(f) >= 2 {
				table[f[1]] = append(table[f[1]], line)
			}
		}
	}
	return s
}

// nftTexts runs nft -a -s list table FAMILY NAME in the namespace.
func (r *RuleReader) nftTexts(id nfrTableID) (map[nfrTextKey]string, error) {
	path := r.tool("nft")
	if path == "" {
		return nil, errors.New("nft not found: rule texts of nftables are unknown")
	}
	out, err := r.run(path, "-a", "-s", "list", "table", id.family, id.table)
	if err != nil {
		return nil, err
	}
	return nfrParseNft(out), nil
}

var (
	nfrHandleRe = regexp.MustCompile(`\s*# handle (\d+)\s*$`)
	// A counter's values, in a text whose spaces are single: they change while the
	// rule does not, and its text is kept as long as the rule.
	nfrCounterRe = regexp.MustCompile(`\bcounter( packets \d+ bytes \d+)+`)
)

// nfrParseNft reads nft -a's listing of one table: the rules of each chain, each
// ending in "# handle N" (a rule with a long set may span lines).
func nfrParseNft(out []byte) map[nfrTextKey]string {
	texts := make(map[nfrTextKey]string)
	var chain string // "" outside a chain
	depth := 0       // open blocks: table 1, chain/set/... 2
	var pending []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 64*1024), 16*1024*1024)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if len(pending) == 0 {
			switch {
			case line == "}":
				depth--
				if depth < 2 {
					chain = ""
				}
				continue
			case depth == 1 && strings.HasSuffix(nfrHandleRe.ReplaceAllString(line, ""), "{"):
				head := strings.TrimSuffix(nfrHandleRe.ReplaceAllString(line, ""), "{")
				if f := strings.Fields(head); len(f) >= 2 && f[0] == "chain" {
					chain = strings.Trim(strings.Join(f[1:], " "), `"`)
				} else {
					chain = ""
				}
				depth++
				continue
			case depth == 0 && strings.HasSuffix(nfrHandleRe.ReplaceAllString(line, ""), "{"):
				depth++ // table ... {
				continue
			}
			if chain == "" {
				if strings.HasSuffix(line, "{") {
					depth++ // a block inside a set or an object
				}
				continue
			}
			if !nfrHandleRe.MatchString(line) && (strings.HasSuffix(line, ";") || strings.HasPrefix(line, `comment "`)) {
				continue // type ... hook ... policy ...; comment "..."
			}
		}
		m := nfrHandleRe.FindStringSubmatchIndex(line)
		if m == nil {
			pending = append(pending, line)
			continue
		}
		h, err := strconv.ParseUint(line[m[2]:m[3]], 10, 64)
		text := strings.Join(append(pending, line[:m[0]]), " ")
		pending = pending[:0]
		if err != nil {
			continue
		}
		text = strings.Join(strings.Fields(text), " ")
		texts[nfrTextKey{chain, h}] = nfrCounterRe.ReplaceAllString(text, "counter")
	}
	return texts
}

// tool finds a program on PATH or in the sbin directories.
func (r *RuleReader) tool(name string) string {
	if p, ok := r.tools[name]; ok {
		return p
	}
	p, err := exec.LookPath(name)
	if err != nil {
		p = ""
		for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
			cand := filepath.Join(dir, name)
			if fi, err := os.Stat(cand); err == nil && !fi.IsDir() {
				p = cand
				break
			}
		}
	}
	r.tools[name] = p
	return p
}

// run runs a tool in the namespace: the child inherits the network namespace of the
// OS thread that starts it.
func (r *RuleReader) run(path string, args ...string) ([]byte, error) {
	var out []byte
	r.toolRuns++
	err := r.ns.do(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, path, args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		var err error
		out, err = cmd.Output()
		if err != nil {
			msg := strings.TrimSpace(stderr.String())
			if len(msg) > 200 {
				msg = msg[:200] + "..."
			}
			return fmt.Errorf("%s %s: %v: %s", filepath.Base(path), strings.Join(args, " "), err, msg)
		}
		return nil
	})
	return out, err
}

// Stale reports whether the ruleset changed since the texts were last read (or none
// were): then a Snapshot reads them again. Asking costs one small netlink request.
func (r *RuleReader) Stale() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conn == nil {
		return false
	}
	gen, ok := r.generation()
	if !ok {
		return false // nothing to compare: texts are refreshed on demand instead
	}
	if len(r.texts) == 0 {
		return true
	}
	for _, tt := range r.texts {
		if !tt.genOK || tt.gen != gen {
			return true
		}
	}
	return false
}
