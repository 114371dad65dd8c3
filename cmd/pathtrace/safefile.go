package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Files named on the command line (--pcap FILE, --ready-file) are written by a process
// that usually runs as root, often in a directory others may write to (/tmp). Whatever
// is at the name is never opened: a new file is made next to it with O_CREAT|O_EXCL
// (which follows no link, and fails on any existing name) and renamed over the name,
// which replaces a link planted there instead of writing through it. A name that holds
// anything but a regular file is refused before that, so that a link or a device the
// user meant (/dev/stdout) is not silently replaced.

// checkReplaceable fails when path exists and is not a regular file.
func checkReplaceable(path string) error {
	st, err := os.Lstat(path)
	if err != nil {
		return nil // missing, or a directory that cannot be read: creating says why
	}
	var what string
	switch m := st.Mode(); {
	case m.IsRegular():
		return nil
	case m&fs.ModeSymlink != 0:
		what = "a symbolic link"
	case m.IsDir():
		return fmt.Errorf("%s is a directory", path)
	case m&fs.ModeNamedPipe != 0:
		what = "a named pipe"
	case m&fs.ModeDevice != 0:
		what = "a device"
	default:
		what = "not a regular file"
	}
	return fmt.Errorf("%s is %s: pathtrace follows no link and writes no special file (it runs as root), it only replaces a regular file: remove it or name another file", path, what)
}

// createReplacing makes a new, empty file of mode perm and puts it at path, replacing
// the regular file (or a link planted since checkReplaceable) that was there. The file
// is new whatever the name held: its owner is the process's user, and nobody else has
// it open.
func createReplacing(path string, perm os.FileMode) (*os.File, error) {
	if err := checkReplaceable(path); err != nil {
		return nil, err
	}
	// CreateTemp: O_RDWR|O_CREAT|O_EXCL, mode 0600, a random name in path's directory.
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*os.File, error) {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	if perm != 0o600 {
		if err := f.Chmod(perm); err != nil {
			return fail(err)
		}
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fail(err)
	}
	return f, nil
}

// writeReplacing writes data to a new file of mode perm and renames it to path, so a
// reader of path sees all of data or no file.
func writeReplacing(path string, data []byte, perm os.FileMode) error {
	if err := checkReplaceable(path); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil && perm != 0o600 {
		err = f.Chmod(perm)
	}
	if err = errors.Join(err, f.Close()); err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// removeIfSame removes path if it still names f, a file this process made and still
// holds open (so that its inode number is not another's yet), and not whatever another
// process put at the name since.
func removeIfSame(path string, f *os.File) {
	st, err := f.Stat()
	if err != nil {
		return
	}
	if cur, err := os.Lstat(path); err == nil && os.SameFile(cur, st) {
		os.Remove(path)
	}
}
