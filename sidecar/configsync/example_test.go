package configsync_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/trellis-go/trellis/sidecar/configsync"
)

// A syncer keeps a root in step with a directory; the application reads
// its file through the root with a File, which sees each new revision on
// its next read.
func Example() {
	base, _ := os.MkdirTemp("", "configsync-example")
	defer os.RemoveAll(base)
	src, root := filepath.Join(base, "src"), filepath.Join(base, "root")
	_ = os.Mkdir(src, 0o755)
	_ = os.WriteFile(filepath.Join(src, "app.yaml"), []byte("greeting: hello\n"), 0o644)

	syncer, err := configsync.New(configsync.Options{
		Source: configsync.DirSource{Path: src},
		Root:   root,
		// In a sidecar: Reloader and Readiness for the main process, and
		// syncer.Run(ctx) to poll, with syncer.Handler served beside.
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()
	app := configsync.NewFile(root, "app.yaml")

	res, _ := syncer.Sync(ctx)
	data, _, _ := app.Read()
	fmt.Printf("%s: %s", res, data)

	res, _ = syncer.Sync(ctx)
	fmt.Println(res)

	_ = os.WriteFile(filepath.Join(src, "app.yaml"), []byte("greeting: bonjour\n"), 0o644)
	res, _ = syncer.Sync(ctx)
	data, _, _ = app.Read()
	fmt.Printf("%s: %s", res, data)
	// Output:
	// published: greeting: hello
	// unchanged
	// published: greeting: bonjour
}
