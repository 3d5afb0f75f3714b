package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// finish prints err for command name and returns the exit code: 2 for a
// usageError, 1 for any other error.
func finish(name string, stderr io.Writer, err error) int {
	if err == nil {
		return exitOK
	}
	msg := strings.ReplaceAll(err.Error(), "\n", "; ")
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "fedzip %s: %s (run 'fedzip %s -h' for help)\n", name, msg, name)
		return exitUsage
	}
	fmt.Fprintf(stderr, "fedzip %s: %s\n", name, msg)
	return exitError
}

// writeJSON writes v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// writeFileAtomic writes path through a temporary file beside it, so a
// reader never sees half a file.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
