package adapter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"
)

// FollowOptions configure a Follower; zero fields take defaults.
type FollowOptions struct {
	// FromStart reads the file from its first line; by default a
	// follower starts at its end, as tail -F does. A file that does not
	// exist yet is read from its first line once it appears.
	FromStart bool
	// Poll is how often a follower with nothing to read looks again for
	// new lines, a rotation or a truncation (250 ms by default).
	Poll time.Duration
}

// Follower reads a file as it grows, as tail -F does: when the file is
// renamed away and a new one created at its path (rotation), it reads
// the rest of the old one and goes on with the new one from its start;
// when the file is truncated, it goes on from the start. Read blocks
// until there is something to read and returns io.EOF once the context
// given to Follow ends, so Logs.Copy over a Follower returns then.
//
// It looks for changes by polling, which needs nothing from the system
// but loses what it cannot see between two looks: lines written to the
// old file after the switch to the new one, and, if a file is truncated
// and written past where the follower was within one poll, what was
// written before that point.
type Follower struct {
	ctx   context.Context
	path  string
	poll  time.Duration
	f     *os.File    // nil until the file exists
	info  fs.FileInfo // of f when opened
	off   int64       // where the next read starts in f
	ended bool        // the last byte read ended a line
}

// Follow returns a follower of the file at path. It fails if the file
// exists but cannot be read; a file that does not exist yet is waited
// for.
func Follow(ctx context.Context, path string, opts FollowOptions) (*Follower, error) {
	if opts.Poll <= 0 {
		opts.Poll = 250 * time.Millisecond
	}
	fl := &Follower{ctx: ctx, path: path, poll: opts.Poll, ended: true}
	if err := fl.open(!opts.FromStart); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	return fl, nil
}

// open opens the file at the path, at its end if atEnd.
func (fl *Follower) open(atEnd bool) error {
	f, err := os.Open(fl.path)
	if err != nil {
		return fmt.Errorf("adapter: follow: %w", err)
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("adapter: follow: %w", err)
	}
	if info.IsDir() {
		f.Close()
		return fmt.Errorf("adapter: follow: %s is a directory", fl.path)
	}
	var off int64
	if atEnd && info.Mode().IsRegular() {
		if off, err = f.Seek(0, io.SeekEnd); err != nil {
			f.Close()
			return fmt.Errorf("adapter: follow: %w", err)
		}
	}
	fl.f, fl.info, fl.off = f, info, off
	return nil
}

// Read reads what the file holds past the last read, waiting for more
// if there is nothing; it returns io.EOF once the follower's context
// ends. When it goes on with another file while the last one's last line
// had no newline, it ends that line first.
func (fl *Follower) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if fl.ctx.Err() != nil {
			return 0, io.EOF
		}
		if fl.f != nil {
			n, err := fl.f.Read(p)
			if n > 0 {
				fl.off += int64(n)
				fl.ended = p[n-1] == '\n'
				return n, nil
			}
			if err != nil && !errors.Is(err, io.EOF) {
				return 0, fmt.Errorf("adapter: follow: %w", err)
			}
			switched, err := fl.check()
			if err != nil {
				return 0, err
			}
			if switched && !fl.ended {
				fl.ended = true
				p[0] = '\n'
				return 1, nil
			}
			if switched {
				continue
			}
		} else if err := fl.open(false); err == nil {
			continue
		} else if !errors.Is(err, fs.ErrNotExist) {
			return 0, err
		}
		t := time.NewTimer(fl.poll) // the poll interval: nothing tells of a write
		select {
		case <-fl.ctx.Done():
			t.Stop()
			return 0, io.EOF
		case <-t.C:
		}
	}
}

// check looks, once the open file is read to its end, whether another
// file has taken its path (then it switches to that one) or the file was
// truncated (then it reads it again from its start).
func (fl *Follower) check() (bool, error) {
	info, err := os.Stat(fl.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil // renamed away; the new file is not there yet
	case err != nil:
		return false, fmt.Errorf("adapter: follow: %w", err)
	case !os.SameFile(info, fl.info):
		old := fl.f
		if err := fl.open(false); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return false, nil
			}
			return false, err
		}
		old.Close()
		return true, nil
	}
	cur, err := fl.f.Stat()
	if err != nil {
		return false, fmt.Errorf("adapter: follow: %w", err)
	}
	if cur.Mode().IsRegular() && cur.Size() < fl.off {
		if _, err := fl.f.Seek(0, io.SeekStart); err != nil {
			return false, fmt.Errorf("adapter: follow: %w", err)
		}
		fl.off = 0
		return true, nil
	}
	return false, nil
}

// Close closes the file being read.
func (fl *Follower) Close() error {
	if fl.f == nil {
		return nil
	}
	err := fl.f.Close()
	fl.f = nil
	return err
}
