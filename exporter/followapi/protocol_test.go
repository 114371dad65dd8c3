package followapi

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

func TestCheckClampsAndRefuses(t *testing.T) {
	l := DefaultLimits()
	f, err := l.Check(Request{Version: Version, Selectors: []string{"10.0.0.1:80"}, Proto: "tcp", Timeout: "2562047h", Stall: "1h", Oneway: "0", Count: 5e6, Pcap: true, SnapLen: 1e6})
	if err != nil {
		t.Fatal(err)
	}
	if f.Timeout != l.MaxTimeout || f.Stall != l.MaxStall || f.Oneway != 0 || f.Count != l.MaxCount || f.SnapLen != l.MaxSnapLen || len(f.Clamped) != 4 {
		t.Errorf("clamped follow %+v", f)
	}
	if g := f.Granted(); g.Timeout != "30s" || g.Count != l.MaxCount {
		t.Errorf("granted %+v", g)
	}
	d, _ := l.Check(Request{Version: Version, Selectors: []string{"10.0.0.1"}})
	if d.Timeout != 500*time.Millisecond || d.Count != l.MaxCount || d.SnapLen != 0 || len(d.Clamped) != 0 {
		t.Errorf("defaults %+v", d)
	}
	for _, tc := range []struct {
		req  Request
		want string
	}{
		{Request{Selectors: []string{"10.0.0.1"}}, "protocol version 0"},
		{Request{Version: Version}, "no selector"},
		{Request{Version: Version, Selectors: []string{"a", "b", "c", "d", "e"}}, "allows 4"},
		{Request{Version: Version, Selectors: []string{"10.0.0.1"}, Proto: "sctp"}, "sctp"},
		{Request{Version: Version, Selectors: []string{"10.0.0.1"}, Timeout: "soon"}, "timeout"},
		{Request{Version: Version, Selectors: []string{"10.0.0.1"}, Timeout: "0"}, "timeout"},
		{Request{Version: Version, Selectors: []string{"10.0.0.1"}, Count: -3}, "count -3"},
		{Request{Version: Version, Selectors: []string{"10.0.0.1"}, Pcap: true, SnapLen: -1}, "snaplen -1"},
	} {
		if _, err := l.Check(tc.req); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.req, err, tc.want)
		}
	}
}

func TestReadRequestBounded(t *testing.T) {
	if _, err := ReadRequest(strings.NewReader(strings.Repeat("x", 100)+"\n"), 64); !errors.Is(err, ErrTooLong) {
		t.Errorf("100 bytes with a 64-byte limit: %v", err)
	}
	r, err := ReadRequest(strings.NewReader(`{"version":1,"selectors":["1.2.3.4"]}`+"\n"), 64)
	if err != nil || r.Selectors[0] != "1.2.3.4" {
		t.Errorf("%+v %v", r, err)
	}
	if _, err := ReadRequest(strings.NewReader(`{"version":1,"selectors":["1.2.3.4"],"extra":1}`+"\n"), 1024); err == nil {
		t.Errorf("an unknown field was accepted")
	}
	if _, err := ReadRequest(strings.NewReader(`{"version":1}`), 1024); err == nil {
		t.Errorf("a request without its newline was accepted")
	}
}

func TestFrames(t *testing.T) {
	var b bytes.Buffer
	WriteFrame(&b, KindJourney, []byte("hello\n"))
	WriteFrame(&b, KindEnd, nil)
	r := bufio.NewReader(&b)
	f, err := ReadFrame(r, 100)
	if err != nil || f.Kind != KindJourney || string(f.Data) != "hello\n" {
		t.Fatalf("%+v %v", f, err)
	}
	if f, err = ReadFrame(r, 100); err != nil || f.Kind != KindEnd || len(f.Data) != 0 {
		t.Fatalf("%+v %v", f, err)
	}
	if _, err = ReadFrame(r, 100); err != io.EOF {
		t.Errorf("at the end: %v", err)
	}
	for _, bad := range []string{"journey 101\n", "journey -1\n", "bogus 1\nx", "journey\n", "journey 5\nab", `{"kind":"journey"}` + "\n"} {
		if _, err := ReadFrame(bufio.NewReader(strings.NewReader(bad)), 100); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// FuzzRequest: any bytes from a follower are read within the limit, and what parses is
// either refused or bounded by the limits.
func FuzzRequest(f *testing.F) {
	f.Add([]byte(`{"version":1,"selectors":["10.244.1.23:46322"],"proto":"tcp","json":true,"timeout":"500ms","count":3}` + "\n"))
	f.Add([]byte(`{"version":1,"selectors":["[fd00::1]:80",":53"],"pcap":true,"snaplen":99999,"timeout":"2562047h"}` + "\n"))
	f.Add([]byte(`{"version":1,"selectors":["svc/default/api"]}` + "\n"))
	f.Add([]byte("\n"))
	f.Add([]byte(strings.Repeat("[", 5000)))
	l := DefaultLimits()
	l.MaxRequest = 4096
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := ReadRequest(bytes.NewReader(b), l.MaxRequest)
		if err != nil {
			return
		}
		if i := bytes.IndexByte(b, '\n'); i < 0 || i >= l.MaxRequest {
			t.Fatalf("a request was read without a newline within %d bytes", l.MaxRequest)
		}
		fl, err := l.Check(req)
		if err != nil {
			return
		}
		if len(fl.Selectors) == 0 || len(fl.Selectors) > l.MaxSelectors || fl.Timeout <= 0 || fl.Timeout > l.MaxTimeout ||
			fl.Stall < 0 || fl.Stall > l.MaxStall || fl.Oneway < 0 || fl.Oneway > l.MaxOneway ||
			fl.Count <= 0 || fl.Count > l.MaxCount || fl.SnapLen < 0 || fl.SnapLen > l.MaxSnapLen {
			t.Fatalf("accepted out of bounds: %+v", fl)
		}
	})
}

// FuzzFrames: any stream from an agent yields frames of known kinds within the size
// limit, or an error; never a panic or an allocation beyond the limit.
func FuzzFrames(f *testing.F) {
	var b bytes.Buffer
	WriteFrame(&b, KindJourney, []byte(`{"kind":"journey","id":"0"}`+"\n"))
	WriteFrame(&b, KindPcap, []byte{0x0a, 0x0d, 0x0d, 0x0a})
	WriteFrame(&b, KindLost, []byte(`{"events":3,"total":3,"where":"queue"}`))
	WriteFrame(&b, KindEnd, []byte("evicted"))
	f.Add(b.Bytes())
	f.Add([]byte("journey 99999999999999999999\n"))
	f.Add([]byte("pcapng 4\n\x0a\x0d\x0d"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReader(bytes.NewReader(data))
		for {
			fr, err := ReadFrame(r, 1024)
			if err != nil {
				return
			}
			switch fr.Kind {
			case KindJourney, KindOneWay, KindPcap, KindLost, KindEnd:
			default:
				t.Fatalf("kind %q", fr.Kind)
			}
			if len(fr.Data) > 1024 {
				t.Fatalf("%d bytes over the limit", len(fr.Data))
			}
		}
	})
}

func TestMakeCerts(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	if err := MakeCerts(CertRequest{Dir: dir + "/ca", ServerName: DefaultServerName, Follower: "oncall", Validity: time.Hour, Now: now}); err != nil {
		t.Fatal(err)
	}
	// Nothing is overwritten; a wrong CA leaves nothing behind.
	if err := MakeCerts(CertRequest{Dir: dir + "/ca", ServerName: DefaultServerName, Follower: "oncall", Validity: time.Hour, Now: now}); err == nil || !strings.Contains(err.Error(), "not overwritten") {
		t.Errorf("second MakeCerts in one directory: %v", err)
	}
	if err := MakeCerts(CertRequest{Dir: dir + "/bob", ServerName: DefaultServerName, Follower: "bob", Validity: time.Hour, Now: now, CADir: dir + "/none"}); err == nil {
		t.Errorf("a missing CA was accepted")
	}
	if _, err := os.Stat(dir + "/bob"); err == nil {
		t.Errorf("a failed MakeCerts left its directory")
	}
	for _, f := range []string{"ca.key", "agent.key", "follower.key"} {
		fi, err := os.Stat(dir + "/ca/" + f)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v, want 0600", f, fi.Mode(), err)
		}
	}
	srv, err := ServerTLS(TLSFiles{Cert: dir + "/ca/agent.crt", Key: dir + "/ca/agent.key", CA: dir + "/ca/ca.crt"}, false)
	if err != nil || srv.MinVersion != tls.VersionTLS13 {
		t.Fatalf("ServerTLS: %v", err)
	}
	if _, err := ClientTLS(TLSFiles{Cert: dir + "/ca/follower.crt", Key: dir + "/ca/follower.key", CA: dir + "/ca/ca.crt"}, nil, ""); err != nil {
		t.Fatalf("ClientTLS: %v", err)
	}
	if _, err := ServerTLS(TLSFiles{Cert: dir + "/ca/agent.crt", Key: dir + "/ca/agent.key"}, false); err == nil {
		t.Errorf("a TLS listener without a client CA was accepted")
	}
}

// A renewed Secret is picked up by the next handshake, without a restart.
func TestServerTLSReloads(t *testing.T) {
	dir := t.TempDir()
	mk := func(sub string) {
		if err := MakeCerts(CertRequest{Dir: dir + "/" + sub, ServerName: DefaultServerName, Follower: "x", Validity: time.Hour, Now: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	mk("one")
	mk("two")
	live := dir + "/live"
	os.Mkdir(live, 0o700)
	cp := func(sub string) {
		for _, f := range []string{"agent.crt", "agent.key", "ca.crt"} {
			b, _ := os.ReadFile(dir + "/" + sub + "/" + f)
			if err := os.WriteFile(live+"/"+f+".tmp", b, 0o600); err != nil {
				t.Fatal(err)
			}
			os.Rename(live+"/"+f+".tmp", live+"/"+f)
		}
	}
	cp("one")
	cfg, err := ServerTLS(TLSFiles{Cert: live + "/agent.crt", Key: live + "/agent.key", CA: live + "/ca.crt"}, false)
	if err != nil {
		t.Fatal(err)
	}
	leaf := func() []byte {
		c, err := cfg.GetConfigForClient(&tls.ClientHelloInfo{})
		if err != nil {
			t.Fatal(err)
		}
		return c.Certificates[0].Certificate[0]
	}
	first := leaf()
	time.Sleep(10 * time.Millisecond)
	cp("two")
	time.Sleep(1100 * time.Millisecond)
	if bytes.Equal(first, leaf()) {
		t.Errorf("the renewed certificate was not picked up")
	}
	// A broken file keeps the last good one.
	os.WriteFile(live+"/agent.crt", []byte("garbage"), 0o600)
	time.Sleep(1100 * time.Millisecond)
	if c := leaf(); c == nil {
		t.Errorf("no certificate after a broken renewal")
	}
}
