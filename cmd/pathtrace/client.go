package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// agentAddrs returns the agents to follow through: those named with --agents, or the
// default socket when an agent answers there; none means trace standalone.
func agentAddrs(flag []string) ([]string, error) {
	if len(flag) == 0 {
		c, err := net.DialTimeout("unix", DefaultAgentSocket, 500*time.Millisecond)
		if err != nil {
			return nil, nil
		}
		c.Close()
		return []string{DefaultAgentSocket}, nil
	}
	var out []string
	for _, a := range flag {
		path, ok := strings.CutPrefix(a, "unix:")
		if !ok || path == "" {
			return nil, usageError{fmt.Errorf("--agents %q: want unix:PATH", a)}
		}
		out = append(out, path)
	}
	return out, nil
}

// followViaAgents asks each agent to follow the selectors and copies what they send,
// a whole journey at a time, until the duration, the count, an interrupt or the last
// agent ends it.
//
// With --pcap each agent also sends its journeys' packets as pcapng, in frames between
// the journeys. One agent's stream is written to the file as it comes; several are
// merged into one pcapng section.
func followViaAgents(paths []string, o *followOpts, sels []string, stdout, stderr io.Writer, pc *pcapOut) error {
	ctx, stop := signalContext()
	defer stop()
	if o.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.duration)
		defer cancel()
	}
	req := followRequest{Selectors: sels, Proto: o.proto, JSON: o.json, Timeout: o.timeout.String(),
		Stall: o.stall.String(), Oneway: o.oneway.String(), Count: o.count, Pcap: pc != nil, SnapLen: o.snaplen}
	pc.startAgents(len(paths), stderr)
	defer pc.endAgents()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	var readers []*bufio.Reader
	for _, p := range paths {
		c, err := net.DialTimeout("unix", p, 2*time.Second)
		if err != nil {
			return fmt.Errorf("agent unix:%s: %w (is `pathtrace agent --api unix:%s` running?)", p, err, p)
		}
		conns = append(conns, c)
		b, _ := json.Marshal(req)
		if _, err := c.Write(append(b, '\n')); err != nil {
			return fmt.Errorf("agent unix:%s: %w", p, err)
		}
		r := bufio.NewReader(c)
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		line, err := r.ReadBytes('\n')
		if err != nil {
			return fmt.Errorf("agent unix:%s: no answer: %w", p, err)
		}
		c.SetReadDeadline(time.Time{})
		var rep followReply
		if err := json.Unmarshal(line, &rep); err != nil || !rep.OK {
			if rep.Error == "" && err != nil {
				rep.Error = err.Error()
			}
			return fmt.Errorf("agent unix:%s refused: %s", p, rep.Error)
		}
		fmt.Fprintf(stderr, "pathtrace: following %s through the agent of node %s (unix:%s): %s\n", strings.Join(sels, ", "), rep.Node, p, rep.Mode)
		readers = append(readers, r)
	}
	if o.readyFile != "" {
		if err := os.WriteFile(o.readyFile, []byte("agents: "+strings.Join(paths, ",")+"\n"), 0o644); err != nil {
			return fmt.Errorf("write --ready-file: %w", err)
		}
		defer os.Remove(o.readyFile)
	}
	var (
		mu      sync.Mutex
		written int
		wg      sync.WaitGroup
		werr    error
	)
	for i, r := range readers {
		wg.Add(1)
		go func(r *bufio.Reader) {
			defer wg.Done()
			for {
				if n, ok := pcapFrame(r); ok {
					if err := pc.frame(i, r, n, stderr); err != nil {
						return
					}
					continue
				}
				item, err := readItem(r, o.json)
				if len(item) > 0 {
					mu.Lock()
					if o.count == 0 || written < o.count {
						if _, e := stdout.Write(item); e != nil && werr == nil {
							werr = fmt.Errorf("write output: %w", e)
							stop()
						}
						if isJourney(item, o.json) {
							written++
						}
						if o.count > 0 && written >= o.count {
							stop()
						}
					}
					mu.Unlock()
				}
				if err != nil {
					return
				}
			}
		}(r)
	}
	go func() { wg.Wait(); stop() }()
	<-ctx.Done()
	for _, c := range conns {
		c.Close()
	}
	wg.Wait()
	if werr != nil {
		return werr
	}
	fmt.Fprintf(stderr, "pathtrace: %d journeys through %d agent(s)\n", written, len(paths))
	return nil
}

// pcapFrame reads the header of a frame of pcapng bytes, if one comes next.
func pcapFrame(r *bufio.Reader) (int, bool) {
	b, err := r.Peek(len(pcapFramePrefix))
	if err != nil || string(b) != pcapFramePrefix {
		return 0, false
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return 0, false
	}
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, pcapFramePrefix)))
	if err != nil || n < 0 || n > 64<<20 {
		return 0, false
	}
	return n, true
}

// readItem reads one journey or report: a line of JSON, or a text block ending in an
// empty line.
func readItem(r *bufio.Reader, jsonLines bool) ([]byte, error) {
	if jsonLines {
		return r.ReadBytes('\n')
	}
	var item []byte
	for {
		line, err := r.ReadBytes('\n')
		item = append(item, line...)
		if err != nil || len(line) == 1 {
			if err != nil && !errors.Is(err, io.EOF) {
				return item, err
			}
			return item, err
		}
	}
}

func isJourney(item []byte, jsonLines bool) bool {
	if jsonLines {
		return strings.Contains(string(item), `"kind":"journey"`)
	}
	return !strings.Contains(string(item), " one-way\n")
}
