package supervisor

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
)

const (
	// tailLines is the number of output lines quoted when a process fails
	// to start.
	tailLines = 20
	// tailBytes bounds how much output is kept or read to find those lines.
	tailBytes = 16 << 10
)

// lastLines returns up to n complete lines from the end of b.
func lastLines(b []byte, n int) []string {
	b = bytes.TrimRight(b, "\n")
	if len(b) == 0 {
		return nil
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines
}

// tailFile returns up to n lines from the end of the file at path,
// ignoring the first from bytes.
func tailFile(path string, from int64, n int) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read log tail: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read log tail: %w", err)
	}
	if from > info.Size() {
		from = 0 // truncated since
	}
	off := max(info.Size()-tailBytes, from)
	buf := make([]byte, info.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF {
		return nil, fmt.Errorf("read log tail: %w", err)
	}
	if off > from {
		// Drop the partial first line.
		if i := bytes.IndexByte(buf, '\n'); i >= 0 {
			buf = buf[i+1:]
		}
	}
	return lastLines(buf, n), nil
}

// tailBuffer is an io.Writer that keeps the last tailBytes bytes written to
// it. It is safe for concurrent use, since a child's stdout and stderr are
// copied by separate goroutines.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

// Write implements io.Writer.
func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - tailBytes; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

// lines returns up to n lines from the end of what was written.
func (t *tailBuffer) lines(n int) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return lastLines(t.buf, n)
}
