package configsync

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"sort"
	"strings"
)

// Revision names one version of a source's content: a commit hash, a
// content hash, a bucket revision. It is also the name of the revision's
// directory under <root>/.revisions, so it must be [ValidRevision].
type Revision string

// ValidRevision reports whether rev can name a revision directory: 1 to
// 128 letters, digits, '.', '_' or '-', starting with a letter or digit (so
// never ".", ".." or a hidden name like the stages').
func ValidRevision(rev Revision) bool {
	if len(rev) == 0 || len(rev) > 128 || !alnum(rev[0]) {
		return false
	}
	for i := 1; i < len(rev); i++ {
		if c := rev[i]; !alnum(c) && c != '.' && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

func alnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// ErrUnsafe reports content refused because publishing it could harm the
// reader or the machine: a path escaping the revision, a link pointing out
// of it, a file too large, too many files.
var ErrUnsafe = errors.New("configsync: unsafe content")

// Limits bound what one revision may hold. A zero field takes its default.
type Limits struct {
	// MaxFiles bounds the files and links of a revision; default 10,000.
	MaxFiles int
	// MaxFileBytes bounds one file; default 16 MiB.
	MaxFileBytes int64
	// MaxBytes bounds all files together; default 128 MiB.
	MaxBytes int64
}

// Default limits.
const (
	DefaultMaxFiles     = 10_000
	DefaultMaxFileBytes = 16 << 20
	DefaultMaxBytes     = 128 << 20
)

func (l Limits) withDefaults() Limits {
	if l.MaxFiles <= 0 {
		l.MaxFiles = DefaultMaxFiles
	}
	if l.MaxFileBytes <= 0 {
		l.MaxFileBytes = DefaultMaxFileBytes
	}
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	return l
}

// maxPath and maxName bound a path in a revision and one of its elements,
// as Linux does (PATH_MAX, NAME_MAX).
const (
	maxPath = 4096
	maxName = 255
)

// CheckPath returns nil if name can be a file's path in a revision: a
// relative, slash-separated path whose elements are not empty, "." or
// "..", without NUL bytes, within the lengths Linux allows. Otherwise it
// returns an error wrapping [ErrUnsafe] that names the path.
func CheckPath(name string) error {
	bad := func(why string) error { return fmt.Errorf("%w: path %q %s", ErrUnsafe, name, why) }
	if err := checkText(name, "is absolute", bad); err != nil {
		return err
	}
	return checkNames(name, "escapes the revision", bad)
}

// CheckLink returns nil if a symbolic link at name (a valid path) may point
// to target: a relative target made of "../" steps that stay within the
// revision followed by plain names. Any ".." after a name is refused, even
// one that seems to stay inside, because the kernel resolves it after
// following the links before it, which may sit higher in the tree than
// their path says.
func CheckLink(name, target string) error {
	if err := CheckPath(name); err != nil {
		return err
	}
	bad := func(why string) error {
		return fmt.Errorf("%w: link %q -> %q %s", ErrUnsafe, name, target, why)
	}
	if err := checkText(target, "points to an absolute path", bad); err != nil {
		return err
	}
	depth := strings.Count(name, "/") // of the directory holding the link
	rest := target
	for strings.HasPrefix(rest, "../") {
		rest = rest[len("../"):]
		if depth--; depth < 0 {
			return bad("points out of the revision")
		}
	}
	if rest == ".." {
		if depth--; depth < 0 {
			return bad("points out of the revision")
		}
		return nil
	}
	return checkNames(rest, `has ".." after a name`, bad)
}

// checkText checks what a path and a link's target have in common: not
// empty, not too long, relative (absolute says how it is not), no NUL.
func checkText(p, absolute string, bad func(why string) error) error {
	switch {
	case p == "":
		return bad("is empty")
	case len(p) > maxPath:
		return bad("is too long")
	case strings.HasPrefix(p, "/"):
		return bad(absolute)
	case strings.IndexByte(p, 0) >= 0:
		return bad("holds a NUL byte")
	}
	return nil
}

// checkNames checks the elements of a slash path: none empty or ".", none
// longer than Linux allows, and none ".." (dotdot says why not).
func checkNames(p, dotdot string, bad func(why string) error) error {
	for el := range strings.SplitSeq(p, "/") {
		switch {
		case el == "" || el == ".":
			return bad("is not clean")
		case el == "..":
			return bad(dotdot)
		case len(el) > maxName:
			return bad("has an element longer than 255 bytes")
		}
	}
	return nil
}

// entry kinds in a digest.
const (
	kindFile = 'f'
	kindExec = 'x'
	kindLink = 'l'
)

// digest hashes a tree the same way whoever walks it: a Stage as it
// writes, DirSource as it reads, so both name equal content alike.
type digest struct {
	entries []digestEntry
}

type digestEntry struct {
	name string
	kind byte
	sum  [sha256.Size]byte // of the content, or of a link's target
}

func (d *digest) add(name string, kind byte, sum []byte) {
	e := digestEntry{name: name, kind: kind}
	copy(e.sum[:], sum)
	d.entries = append(d.entries, e)
}

func (d *digest) addLink(name, target string) {
	d.add(name, kindLink, sumOf(target))
}

func sumOf(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

// revision is the hex SHA-256 of the entries sorted by name.
func (d *digest) revision() Revision {
	sort.Slice(d.entries, func(i, j int) bool { return d.entries[i].name < d.entries[j].name })
	h := sha256.New()
	var n [8]byte
	for _, e := range d.entries {
		binary.BigEndian.PutUint64(n[:], uint64(len(e.name)))
		h.Write(n[:])
		h.Write([]byte(e.name))
		h.Write([]byte{e.kind})
		h.Write(e.sum[:])
	}
	return Revision(hex.EncodeToString(h.Sum(nil)))
}

// newContentHash returns the hash a file's content goes through.
func newContentHash() hash.Hash { return sha256.New() }
