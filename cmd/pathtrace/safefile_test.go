package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// What root writes at a name given on the command line (--pcap FILE, --ready-file) is
// a new file of its own: a link at the name is refused and its target left alone, a
// regular file is replaced (another name of it, a hard link, keeps the old bytes), and
// no temporary file stays behind. No privilege needed.
func TestCreateReplacing(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	os.WriteFile(victim, []byte("someone's file"), 0o644)
	link := filepath.Join(dir, "link")
	os.Symlink(victim, link)
	dangling := filepath.Join(dir, "dangling")
	os.Symlink(filepath.Join(dir, "created"), dangling)
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "sub")
	os.Mkdir(sub, 0o755)
	for _, tc := range []struct{ path, want string }{
		{link, link + " is a symbolic link: pathtrace follows no link"},
		{dangling, dangling + " is a symbolic link"},
		{fifo, fifo + " is a named pipe"},
		{"/dev/null", "/dev/null is a device"},
		{sub, sub + " is a directory"},
	} {
		if f, err := createReplacing(tc.path, 0o600); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("createReplacing(%s): %v, want an error with %q", tc.path, err, tc.want)
			if f != nil {
				f.Close()
			}
		}
		if err := writeReplacing(tc.path, []byte("x"), 0o644); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("writeReplacing(%s): %v, want an error with %q", tc.path, err, tc.want)
		}
	}
	if b, _ := os.ReadFile(victim); string(b) != "someone's file" {
		t.Errorf("the link's target holds %q", b)
	}
	if _, err := os.Lstat(filepath.Join(dir, "created")); err == nil {
		t.Error("the dangling link's target was created")
	}

	// An existing file, with a second name: replaced, not truncated.
	old := filepath.Join(dir, "old.pcapng")
	os.WriteFile(old, []byte("old bytes"), 0o644)
	hard := filepath.Join(dir, "hard")
	if err := os.Link(old, hard); err != nil {
		t.Fatal(err)
	}
	f, err := createReplacing(old, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("new")
	st, _ := f.Stat()
	if b, _ := os.ReadFile(hard); string(b) != "old bytes" {
		t.Errorf("the old file's other name holds %q: it was written through", b)
	}
	if b, _ := os.ReadFile(old); string(b) != "new" {
		t.Errorf("%s holds %q, want the new file", old, b)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("new file mode %04o, want 0600", st.Mode().Perm())
	}
	// The name now holds another file: it is not removed as ours; ours is.
	os.Rename(old, old+".moved")
	os.WriteFile(old, []byte("another"), 0o644)
	removeIfSame(old, f)
	if _, err := os.Stat(old); err != nil {
		t.Errorf("removeIfSame removed a file it did not make: %v", err)
	}
	removeIfSame(old+".moved", f)
	if _, err := os.Stat(old + ".moved"); err == nil {
		t.Error("removeIfSame left its own file")
	}
	f.Close()

	ready := filepath.Join(dir, "ready")
	if err := writeReplacing(ready, []byte("mode: tcx\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(ready); err != nil || st.Mode().Perm() != 0o644 {
		t.Errorf("ready file: %v %v, want mode 0644", st, err)
	}
	if err := writeReplacing(ready, []byte("mode: clsact\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(ready); string(b) != "mode: clsact\n" {
		t.Errorf("ready file holds %q", b)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary file left: %s", e.Name())
		}
	}
	// A directory that cannot be written to: the error says so.
	if os.Geteuid() != 0 {
		ro := filepath.Join(dir, "ro")
		os.Mkdir(ro, 0o500)
		if err := writeReplacing(filepath.Join(ro, "ready"), nil, 0o644); err == nil || !os.IsPermission(err) {
			t.Errorf("read-only directory: %v", err)
		}
	}
}
