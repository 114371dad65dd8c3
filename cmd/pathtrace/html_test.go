package main

import (
	"bytes"
	"fmt"
	"html"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pathtrace/pathtrace/exporter"
)

// htmlLines are follow's JSON lines for five packets (a stall through DNAT, a drop by
// an nftables rule, a path over two nodes, one lost on the underlay, a one-way SYN),
// as exporter's TestPathviewFixtures writes them.
func htmlLines(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "exporter", "pathview", "testdata", "follow.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// runOutput sends lines through follow's output as followWith sets it up, and ends it.
func runOutput(t *testing.T, o *followOpts, lines []byte) (stdout, stderr string, err error) {
	t.Helper()
	if _, err := o.outputConfig([]string{"10.244.0.5"}); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	w, finish := o.outputWriter(&out, &errOut)
	if !o.json {
		t.Fatal("the producers were not switched to JSON lines")
	}
	// As the JSON writer does: a line per write.
	for _, l := range bytes.SplitAfter(lines, []byte("\n")) {
		if _, err := w.Write(l); err != nil {
			t.Fatal(err)
		}
	}
	err = finish()
	return out.String(), errOut.String(), err
}

// follow --html FILE: the terminal shows the text blocks it shows without --html, and
// FILE is the page, with every packet and the drop marked.
func TestHTMLFileWithText(t *testing.T) {
	file := filepath.Join(t.TempDir(), "follow.html")
	o := &followOpts{output: "text", html: file, title: "pathtrace follow 10.244.0.5"}
	stdout, stderr, err := runOutput(t, o, htmlLines(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"10.244.0.5:40001 → 10.96.0.10:53 UDP len=57", "  dropped: NETFILTER_DROP at nft_do_chain+0x2c8",
		"underlay: node-a eth0 egress → node-b eth0 ingress", "TCP one-way"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout)
		}
	}
	if strings.Contains(stdout, `{"kind"`) || strings.Contains(stdout, "<html") {
		t.Errorf("stdout has JSON or HTML:\n%s", stdout)
	}
	if !strings.Contains(stderr, "wrote 5 packets to "+file) {
		t.Errorf("stderr %q", stderr)
	}
	page, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	checkHTMLPage(t, string(page))
	// Written whole, through a temporary file that is gone.
	if m, _ := filepath.Glob(filepath.Join(filepath.Dir(file), ".*")); len(m) != 0 {
		t.Errorf("left behind: %v", m)
	}
}

func checkHTMLPage(t *testing.T, page string) {
	t.Helper()
	if !strings.HasPrefix(page, "<!DOCTYPE html>") || !strings.HasSuffix(page, "</html>\n") {
		t.Errorf("not a whole HTML document: %.80q ... %q", page, page[max(0, len(page)-20):])
	}
	for _, want := range []string{"<title>pathtrace follow 10.244.0.5</title>", `data-packet="5"`, `data-mark="drop"`,
		`data-ifname="veth3f8a2c1e"`, "NETFILTER_DROP at nft_do_chain+0x2c8", "nft delete rule inet filter forward handle 7",
		"Content-Security-Policy"} {
		if !strings.Contains(html.UnescapeString(page), want) {
			t.Errorf("the page lacks %q", want)
		}
	}
}

// -o html: the page, and nothing else, on standard output when follow ends; with
// --html too, the same page in the file.
func TestHTMLStdout(t *testing.T) {
	file := filepath.Join(t.TempDir(), "also.html")
	o := &followOpts{output: "html", html: file, title: "pathtrace follow 10.244.0.5"}
	stdout, _, err := runOutput(t, o, htmlLines(t))
	if err != nil {
		t.Fatal(err)
	}
	checkHTMLPage(t, stdout)
	if strings.Contains(stdout, `{"kind"`) {
		t.Error("-o html printed JSON lines")
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != stdout {
		t.Errorf("--html's file differs from the page on stdout (%v)", err)
	}
	// With JSON output and a filter, the lines printed and the packets drawn are the
	// ones the filter kept.
	o = &followOpts{output: "json", html: file, verdicts: []string{"dropped"}}
	stdout, stderr, err := runOutput(t, o, htmlLines(t))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(stdout, "\n"); n != 1 || !strings.HasPrefix(stdout, `{"kind":"journey"`) {
		t.Errorf("-o json --verdict dropped: %d lines:\n%s", n, stdout)
	}
	page, _ := os.ReadFile(file)
	if !strings.Contains(stderr, "wrote 1 packets") || strings.Contains(string(page), `data-packet="2"`) {
		t.Errorf("the filtered page: stderr %q", stderr)
	}
}

// An --html file that cannot be written is refused before anything is traced (exit
// 1, what to do), and a failure at the end leaves no half-written page.
func TestHTMLUnwritable(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		path, want string
	}{
		{"/nonexistent-dir/p.html", "--html /nonexistent-dir/p.html: cannot write in /nonexistent-dir"},
		{dir, "--html " + dir + " is a directory"},
	} {
		code, stderr := runBin(t, nil, "follow", "--html", tc.path, "10.0.0.1")
		if code != 1 || !strings.Contains(stderr, tc.want) {
			t.Errorf("follow --html %s: exit %d, stderr %q; want exit 1 and %q", tc.path, code, stderr, tc.want)
		}
	}
	link := filepath.Join(dir, "link.html")
	os.Symlink(filepath.Join(dir, "victim"), link)
	if code, stderr := runBin(t, nil, "follow", "--html", link, "10.0.0.1"); code != 1 || !strings.Contains(stderr, "is a symbolic link") {
		t.Errorf("follow --html LINK: exit %d, stderr %q", code, stderr)
	}
	// The directory goes away while following: finish fails, says so, writes nothing.
	sub := filepath.Join(dir, "gone")
	os.Mkdir(sub, 0o755)
	o := &followOpts{output: "text", html: filepath.Join(sub, "p.html")}
	if _, err := o.outputConfig([]string{"10.244.0.5"}); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	w, finish := o.outputWriter(&out, &errOut)
	w.Write(htmlLines(t))
	os.Remove(sub)
	err := finish()
	if err == nil || !strings.Contains(err.Error(), "--html "+filepath.Join(sub, "p.html")) || !strings.Contains(err.Error(), "the page (5 packets) was not written") {
		t.Errorf("finish: %v", err)
	}
	if _, err := os.Stat(sub); err == nil {
		t.Error("the directory came back")
	}
}

// In the lab (root): follow --html beside --json on the policy drop of node-b. The
// page draws each SYN the terminal printed, its hops in the order the JSON has them
// and the drop marked with the kernel's reason and the iptables rule.
// PATHVIEW_PAGE=FILE keeps the page.
func TestHTMLPolicyDrop(t *testing.T) {
	needLab(t)
	fault(t, "policy")
	file := filepath.Join(t.TempDir(), "drop.html")
	f := startFollow(t, "node-b", "--html", file, "10.244.1.42:6379")
	if out, err := pod(t, "b-api", "tcp", "10.244.1.42:6379", "--timeout", "1500ms"); err == nil {
		t.Fatalf("client got through the policy: %s", out)
	}
	js := f.stop(t)
	syn := find(js, "S", "10.244.2.57:", "10.244.1.42:6379")
	if len(syn) == 0 || syn[0].Drop == nil {
		t.Fatalf("no dropped SYN:\n%s", dump(js))
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("no page: %v\n%s", err, f.stderr.String())
	}
	if keep := os.Getenv("PATHVIEW_PAGE"); keep != "" { // to look at, or render
		os.WriteFile(keep, b, 0o644)
	}
	page := html.UnescapeString(string(b))
	if n := strings.Count(page, `<section class="packet"`); n != len(js) {
		t.Errorf("the page draws %d packets, follow printed %d", n, len(js))
	}
	// The first SYN's section: its hops in order, then the drop.
	i := strings.Index(page, "#"+fmt.Sprint(slices.IndexFunc(js, func(j exporter.JourneyJSON) bool { return j.ID == syn[0].ID })+1)+" TCP 10.244.2.57:")
	if i < 0 {
		t.Fatalf("no section for the SYN %s", syn[0].ID)
	}
	sec := page[i:]
	sec = sec[:strings.Index(sec, "</section>")]
	last := -1
	for _, h := range syn[0].Hops {
		dir := h.Dir
		if h.Kind == "netfilter" {
			dir = h.Hook
		}
		el := `data-ifname="` + h.Ifname + `" data-kind="` + h.Kind + `" data-dir="` + dir + `"`
		k := strings.Index(sec[last+1:], el)
		if k < 0 {
			t.Fatalf("hop %s: no element after the hop before:\n%s", el, sec)
		}
		last += 1 + k
	}
	if k := strings.Index(sec, `data-mark="drop"`); k <= last {
		t.Errorf("the drop mark at %d, after the hops (%d)", k, last)
	}
	for _, want := range []string{syn[0].Drop.Reason + " at " + syn[0].Drop.Location, syn[0].Drop.Rule, "fix"} {
		if !strings.Contains(sec, want) {
			t.Errorf("the SYN's section lacks %q", want)
		}
	}
	assertNothingLeft(t)
}
