package cliconfig

import (
	"flag"
	"strings"
)

// Nearest returns the flag of fs whose name is closest to name (a mistyped
// flag or config key; underscores count as dashes, case is ignored), or ""
// if none is within two edits, and fewer edits than name has letters (so
// "-x" suggests nothing). --config is never suggested.
func Nearest(fs *flag.FlagSet, name string) string {
	norm := strings.ReplaceAll(strings.ToLower(strings.TrimLeft(name, "-")), "_", "-")
	best, bestD := "", min(3, len(norm))
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == FlagName {
			return
		}
		if d := EditDistance(norm, f.Name); d < bestD {
			best, bestD = f.Name, d
		}
	})
	return best
}

// EditDistance is the Levenshtein distance between a and b, in bytes.
func EditDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := 1
			if a[i-1] == b[j-1] {
				c = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+c)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
