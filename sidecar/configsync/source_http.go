package configsync

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
)

// HTTPSource is a URL that answers either one file or a tar.gz archive of
// a tree, as its Content-Type says (application/gzip and its aliases). It
// remembers the ETag of the last answer and asks with If-None-Match, so
// an unchanged source answers 304 and costs no transfer. Its revision is
// the content hash of what it answered ([Stage.Digest]), so a server that
// changes its ETag but not the content publishes nothing new.
//
// An HTTPSource must not be copied after first use.
type HTTPSource struct {
	// URL is the http:// or https:// URL to get.
	URL string
	// File names the file a single-file answer is written to; "" means
	// the last element of the URL's path.
	File string
	// Client makes the requests; nil means http.DefaultClient. The sync's
	// context bounds each request.
	Client *http.Client

	mu   sync.Mutex
	etag string   // of the answer whose content is rev
	rev  Revision // "" before the first answer
}

// String names the URL, without its credentials or query.
func (s *HTTPSource) String() string {
	u, err := url.Parse(s.URL)
	if err != nil {
		return "http (unparsable URL)"
	}
	u.User, u.RawQuery, u.Fragment = nil, "", ""
	return "http " + u.String()
}

// fileName is the name of a single-file answer.
func (s *HTTPSource) fileName() (string, error) {
	if s.File != "" {
		return s.File, nil
	}
	u, err := url.Parse(s.URL)
	if err != nil {
		return "", fmt.Errorf("configsync: http source: %w", err)
	}
	name := path.Base(u.Path)
	if name == "/" || name == "." || name == "" {
		return "", fmt.Errorf("configsync: http source %s: the URL has no file name; set the file name", s)
	}
	return name, nil
}

// Fetch implements Source.
func (s *HTTPSource) Fetch(ctx context.Context, have Revision, stage *Stage) (Revision, bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL, nil)
	if err != nil {
		return "", false, fmt.Errorf("configsync: %s: %w", s, err)
	}
	s.mu.Lock()
	etag, last := s.etag, s.rev
	s.mu.Unlock()
	conditional := have != "" && have == last && etag != ""
	if conditional {
		req.Header.Set("If-None-Match", etag)
	}
	client := s.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", false, fmt.Errorf("configsync: %s: %w", s, err)
	}
	defer func() {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
	}()
	switch {
	case resp.StatusCode == http.StatusNotModified && conditional:
		return have, false, nil
	case resp.StatusCode != http.StatusOK:
		snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
		return "", false, fmt.Errorf("configsync: %s answered %s: %q", s, resp.Status, snippet)
	}
	if isTarGz(resp.Header.Get("Content-Type")) {
		err = untarGz(stage, resp.Body)
	} else {
		var name string
		if name, err = s.fileName(); err == nil {
			err = stage.WriteFile(name, resp.Body, false)
		}
	}
	if err != nil {
		return "", false, fmt.Errorf("configsync: %s: %w", s, err)
	}
	rev := stage.Digest()
	etag, _ = ParseETag(resp.Header.Get("ETag"))
	s.mu.Lock()
	s.etag, s.rev = etag, rev
	s.mu.Unlock()
	return rev, rev != have, nil
}

// ParseETag returns the entity tag of an ETag header value (RFC 9110,
// 8.8.3: "xyzzy" or W/"xyzzy"), trimmed of surrounding spaces, and whether
// the value is one. A value that is not is never sent back in
// If-None-Match.
func ParseETag(v string) (string, bool) {
	v = strings.Trim(v, " \t")
	tag := strings.TrimPrefix(v, "W/")
	if len(tag) < 2 || len(v) > 1024 || tag[0] != '"' || tag[len(tag)-1] != '"' {
		return "", false
	}
	for i := 1; i < len(tag)-1; i++ {
		// etagc = %x21 / %x23-7E / obs-text
		if c := tag[i]; c < 0x21 || c == '"' || c == 0x7f {
			return "", false
		}
	}
	return v, true
}

// isTarGz reports whether a Content-Type names a gzipped tar archive.
func isTarGz(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false
	}
	switch mt {
	case "application/gzip", "application/x-gzip", "application/tar+gzip", "application/x-tar+gzip",
		"application/x-gtar", "application/x-tgz", "application/x-compressed-tar":
		return true
	}
	return false
}

// untarGz writes the files and links of a tar.gz archive into stage.
// Directories are made as their files need them; a leading "./" is
// dropped; hard links, devices and other special files are refused.
func untarGz(stage *Stage, r io.Reader) error {
	// Bound what is decompressed, not only what is written: an archive of
	// skipped entries could otherwise keep the CPU busy for ever.
	budget := stage.limits.MaxBytes + int64(stage.limits.MaxFiles)*4096 + 1<<20
	gz, err := gzip.NewReader(r)
	if err != nil {
		return fmt.Errorf("read tar.gz: %w", err)
	}
	tr := tar.NewReader(&boundedReader{r: gz, left: budget})
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read tar.gz: %w", err)
		}
		name := strings.TrimSuffix(h.Name, "/")
		for strings.HasPrefix(name, "./") {
			name = name[len("./"):]
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if name != "." && name != "" {
				if err := CheckPath(name); err != nil {
					return err
				}
			}
		case tar.TypeReg:
			if err := stage.WriteFile(name, tr, h.Mode&0o111 != 0); err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := stage.Symlink(name, h.Linkname); err != nil {
				return err
			}
		case tar.TypeXGlobalHeader:
		default:
			return fmt.Errorf("%w: %q is a %s, not a file, a directory or a symbolic link", ErrUnsafe, h.Name, typeName(h.Typeflag))
		}
	}
}

func typeName(flag byte) string {
	switch flag {
	case tar.TypeLink:
		return "hard link"
	case tar.TypeChar, tar.TypeBlock:
		return "device"
	case tar.TypeFifo:
		return "named pipe"
	}
	return fmt.Sprintf("tar entry of type %q", flag)
}

// boundedReader fails, with ErrUnsafe, once more than left bytes are read.
type boundedReader struct {
	r    io.Reader
	left int64
}

func (b *boundedReader) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, fmt.Errorf("%w: the archive decompresses to more than its limits allow", ErrUnsafe)
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	return n, err
}
