package pathview_test

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pathtrace/pathtrace/exporter/pathview"
)

// chromium returns the browser's path. Where CI is set it must be there (the
// project's rule for tests that need the environment); elsewhere the test skips.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is needed to render the page (CI is set): apt-get install -y chromium (scripts/install-deps.sh)")
	}
	t.Skip("chromium not installed: apt-get install -y chromium (scripts/install-deps.sh)")
	return ""
}

// runChromium runs headless chromium on args with a fresh profile and returns its
// standard output; it is killed, with every process it started, after a minute.
func runChromium(t *testing.T, bin string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args = append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--force-device-scale-factor=1",
		"--no-first-run", "--disable-extensions", "--disable-dev-shm-usage", "--user-data-dir=" + t.TempDir()}, args...)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("chromium %s: killed after 60s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	if err != nil {
		t.Fatalf("chromium %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.Bytes()
}

func hexColour(s string) color.RGBA {
	var c color.RGBA
	fmt.Sscanf(s, "#%02x%02x%02x", &c.R, &c.G, &c.B)
	c.A = 255
	return c
}

// near: every channel within 12 of want.
func near(got color.Color, want color.RGBA) bool {
	r, g, b, _ := got.RGBA()
	d := func(x uint32, y uint8) bool { return int(x>>8)-int(y) <= 12 && int(y)-int(x>>8) <= 12 }
	return d(r, want.R) && d(g, want.G) && d(b, want.B)
}

func rgb(c color.Color) string {
	r, g, b, _ := c.RGBA()
	return fmt.Sprintf("#%02x%02x%02x", r>>8, g>>8, b>>8)
}

// A real browser renders the page: the screenshot has the drop's colour where Layout
// says the dropped packet's mark is (and the stall's where the stall is), not on the
// hops before; the DOM it built has one element per hop, in order, with its
// attributes. PATHVIEW_SCREENSHOT=FILE keeps the screenshot.
func TestChromium(t *testing.T) {
	bin := chromium(t)
	p, page := fixturePage(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "page.html")
	if err := os.WriteFile(file, page, 0o644); err != nil {
		t.Fatal(err)
	}
	ls := p.Layout()
	drop, stall := ls[1], ls[0]
	w, h := 1400, drop.SVG.Y+drop.SVG.H+40
	shot := filepath.Join(dir, "shot.png")
	runChromium(t, bin, fmt.Sprintf("--window-size=%d,%d", w, h), "--screenshot="+shot, "file://"+file)
	b, err := os.ReadFile(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	if keep := os.Getenv("PATHVIEW_SCREENSHOT"); keep != "" {
		if err := os.WriteFile(keep, b, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot kept in %s", keep)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if sz := img.Bounds().Size(); sz != image.Pt(w, h) {
		t.Fatalf("screenshot %v, want %dx%d (device scale 1)", sz, w, h)
	}
	red, blue, orange := hexColour(pathview.ColourDrop), hexColour(pathview.ColourHop), hexColour(pathview.ColourStall)
	check := func(what string, box pathview.Box, want color.RGBA) {
		got := img.At(box.ProbeX, box.ProbeY)
		t.Logf("%s: box %+v, pixel (%d,%d) = %s, want %s", what, box.Rect, box.ProbeX, box.ProbeY, rgb(got), rgb(want))
		if !near(got, want) {
			t.Errorf("%s: pixel (%d,%d) is %s, want %s", what, box.ProbeX, box.ProbeY, rgb(got), rgb(want))
		}
	}
	if drop.Marked != 3 || stall.Marked != 3 {
		t.Fatalf("marked boxes %d and %d, want 3 and 3", drop.Marked, stall.Marked)
	}
	check("packet 2 drop mark", drop.Boxes[3], red)
	check("packet 2 hop 0 (veth)", drop.Boxes[0], blue)
	check("packet 2 hop 2 (FORWARD)", drop.Boxes[2], blue)
	check("packet 1 stall mark", stall.Boxes[3], orange)
	// Most of the drop's box is the drop's colour (the rest is its white text); none of
	// the hop before it is.
	count := func(r pathview.Rect) (n, all int) {
		for y := r.Y; y < r.Y+r.H; y++ {
			for x := r.X; x < r.X+r.W; x++ {
				all++
				if near(img.At(x, y), red) {
					n++
				}
			}
		}
		return n, all
	}
	n, all := count(drop.Boxes[3].Rect)
	m, _ := count(drop.Boxes[2].Rect)
	t.Logf("drop colour: %d of %d pixels of the drop's box, %d of the FORWARD hop's", n, all, m)
	if n < all*7/10 || m != 0 {
		t.Errorf("drop colour: %d of %d pixels of the drop's box, %d of the FORWARD hop's", n, all, m)
	}

	dom := runChromium(t, bin, "--dump-dom", "file://"+file)
	hops, tags := parseDOM(t, dom)
	for pk, want := range wantHops {
		if got := hopStrings(hops[pk]); !slices.Equal(got, want) {
			t.Errorf("chromium's DOM, packet %s hops:\n%s\nwant\n%s", pk, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
	if len(tags["section"]) != 5 || len(tags["svg"]) != 5 || len(tags["script"]) != 0 {
		t.Errorf("chromium's DOM: %d sections, %d svg, %d scripts", len(tags["section"]), len(tags["svg"]), len(tags["script"]))
	}
}
