//go:build unix

package dataset

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestRedteamImageFolderFIFO: an image folder comes from whoever made the
// data set. A named pipe in a class folder must be refused, not opened:
// opening one blocks until something writes to it, so the client or the
// simulator would hang for ever.
func TestRedteamImageFolderFIFO(t *testing.T) {
	root := t.TempDir()
	writeBytes(t, filepath.Join(root, "0", "a.png"), greyPNG(t, 2, 2, 1, 2, 3, 4))
	fifo := filepath.Join(root, "0", "b.png")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	src, err := ParseSource("images:" + root)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := src.Load()
		done <- err
	}()
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		// Unblock the reader so that the goroutine ends, then fail.
		if w, err := os.OpenFile(fifo, os.O_WRONLY, 0); err == nil {
			w.Close()
		}
		<-done
		t.Fatal("Load blocked on a named pipe in the image folder")
	}
	if !errors.Is(err, ErrFormat) {
		t.Fatalf("Load = %v, want ErrFormat", err)
	}
}
