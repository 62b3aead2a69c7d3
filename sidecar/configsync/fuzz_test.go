package configsync

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzCheckLink checks the rules of paths and links on any input: a path
// accepted is relative and clean, and a link accepted resolves, step by
// step as the kernel walks it, inside its revision.
func FuzzCheckLink(f *testing.F) {
	for _, seed := range [][2]string{
		{"app.yaml", "conf/app.yaml"}, {"a/b/l", "../../x"}, {"a/l", "../../x"}, {"l", "a/../.."},
		{"a/l", ".."}, {"l", "/etc/passwd"}, {"../x", "y"}, {"a//b", "c"}, {"..data", "..2026_01_01"},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, name, target string) {
		if CheckPath(name) == nil {
			if path.Clean(name) != name || path.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
				t.Fatalf("CheckPath accepted %q", name)
			}
		}
		if CheckLink(name, target) != nil {
			return
		}
		if j := path.Join(path.Dir(name), target); j == ".." || strings.HasPrefix(j, "../") || path.IsAbs(j) {
			t.Fatalf("CheckLink(%q, %q) accepted a link to %q", name, target, j)
		}
		// Walk the target from the link's directory. Every directory up
		// to the link is a real one (a Stage makes them so), so ".." steps
		// go up for real; once a name is taken it may be a link, after
		// which ".." would not go where the path says: there must be none.
		depth := strings.Count(name, "/")
		named := false
		for el := range strings.SplitSeq(target, "/") {
			switch {
			case el == "..":
				if named {
					t.Fatalf("CheckLink(%q, %q) accepted .. after a name", name, target)
				}
				if depth--; depth < 0 {
					t.Fatalf("CheckLink(%q, %q) accepted a link out of the revision", name, target)
				}
			case el == "" || el == "." || strings.IndexByte(el, 0) >= 0:
				t.Fatalf("CheckLink(%q, %q) accepted the element %q", name, target, el)
			default:
				named = true
			}
		}
	})
}

// FuzzParseETag checks that an ETag accepted from a server is safe to send
// back as a header value, and stays the same when parsed again.
func FuzzParseETag(f *testing.F) {
	for _, seed := range []string{`"xyzzy"`, `W/"xyzzy"`, `""`, ` "a" `, `"a"b"`, "\"a\r\nX: y\"", `xyzzy`, `W/`, "\"\x80\""} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, v string) {
		tag, ok := ParseETag(v)
		if !ok {
			return
		}
		for i := 0; i < len(tag); i++ {
			if c := tag[i]; c < 0x20 || c == 0x7f {
				t.Fatalf("ParseETag(%q) = %q, with a control byte", v, tag)
			}
		}
		if !strings.HasSuffix(tag, `"`) || !(strings.HasPrefix(tag, `"`) || strings.HasPrefix(tag, `W/"`)) {
			t.Fatalf("ParseETag(%q) = %q, not a quoted entity tag", v, tag)
		}
		if again, ok := ParseETag(tag); !ok || again != tag {
			t.Fatalf("ParseETag(%q) = %q, which parses as %q, %v", v, tag, again, ok)
		}
	})
}

// FuzzUntarGz unpacks any bytes as a tar.gz into a stage: nothing is ever
// written outside it, and what it holds after a success is files,
// directories and links that stay inside, within the limits.
func FuzzUntarGz(f *testing.F) {
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		base := t.TempDir()
		r, err := OpenRoot(filepath.Join(base, "root"), Limits{MaxFiles: 20, MaxFileBytes: 1 << 10, MaxBytes: 4 << 10})
		if err != nil {
			t.Fatal(err)
		}
		s, err := r.NewStage()
		if err != nil {
			t.Fatal(err)
		}
		err = untarGz(s, bytes.NewReader(data))
		if entries, _ := os.ReadDir(base); len(entries) != 1 {
			t.Fatalf("something was written beside the root: %v", entries)
		}
		if err != nil {
			return
		}
		files := 0
		walkErr := filepath.WalkDir(s.Dir(), func(full string, e fs.DirEntry, err error) error {
			if err != nil || full == s.Dir() {
				return err
			}
			rel, _ := filepath.Rel(s.Dir(), full)
			switch {
			case e.IsDir():
				return nil
			case e.Type()&fs.ModeSymlink != 0:
				target, err := os.Readlink(full)
				if err != nil {
					return err
				}
				if err := CheckLink(filepath.ToSlash(rel), target); err != nil {
					return err
				}
			case !e.Type().IsRegular():
				return errors.New(rel + " is neither a file, a directory nor a link")
			}
			files++
			return nil
		})
		if walkErr != nil {
			t.Fatal(walkErr)
		}
		if files > 20 || files != s.Files() {
			t.Fatalf("%d files on disk, %d counted, limit 20", files, s.Files())
		}
	})
}
