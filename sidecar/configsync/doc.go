// Package configsync is the configuration sidecar: it keeps a directory of
// configuration files in step with a source (a Git repository, a
// directory, an HTTP URL or a NATS key-value bucket), publishes each
// revision atomically, tells the main process to reload, checks that it
// stays ready, and rolls back a revision that breaks it.
//
// # Publication
//
// Each revision is written into a directory of its own under the root,
// fsynced, and renamed into place; then the symlink <root>/current is
// swapped to it in one rename:
//
//	<root>/current -> .revisions/<rev>
//	<root>/.revisions/<rev>/...        complete revisions, the newest kept
//	<root>/.revisions/.stage-*         revisions being written
//
// A reader that opens <root>/current/<file> sees one whole revision, the
// old one or the new one, never a mix, whatever crashes in between: a
// directory under .revisions with a revision's name is complete (it got
// that name only once written and synced), a half-written one has a
// temporary name and is removed when the root is opened again. The link is
// relative, so the root can be mounted at different paths in different
// containers.
//
// Content is untrusted: a path that escapes its revision, a symbolic link
// that points out of it, a file over the size bound or a tree with too many
// files is refused ([ErrUnsafe]) and nothing of it is published.
//
// # Sources
//
// A [Source] writes its newest revision into a [Stage] unless it is the
// revision the syncer already has: [GitSource] (revision: the commit),
// [DirSource] and [HTTPSource] (revision: a hash of the content; HTTP asks
// with If-None-Match and takes 304 as unchanged), [KVSource] (revision: the
// bucket's last revision; it watches the bucket instead of polling).
//
// # Reload and rollback
//
// After a swap the [Syncer] calls its [Reloader] ([SignalReloader],
// [HTTPReloader], or none when the process watches the files itself, with
// [File] or [Watch]) and then its [Readiness] check. If either fails it
// swaps current back to the previous revision, reloads again, and refuses
// the bad revision until the source has another one.
package configsync
