package main

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode"
)

// The docs check: every fedzip command in a fenced code block of README.md
// and docs/*.md (fedzip ..., ./fedzip ..., go run ./cmd/fedzip ..., with
// "\" line continuations) names a real subcommand and uses only flags that
// subcommand has. A command's flags are read from its own -h output, the
// flag set the binary really parses.

// docCommand is one fedzip command line found in a fenced code block.
type docCommand struct {
	where string   // file:line of the command's first line
	args  []string // the words after the program: subcommand, flags, values
}

// docProblem is a command that does not run as written.
type docProblem struct {
	where, msg string
}

func (p docProblem) String() string { return p.where + ": " + p.msg }

// docCommands returns the fedzip commands of the fenced code blocks of a
// markdown text.
func docCommands(name, text string) []docCommand {
	var out []docCommand
	lines := strings.Split(text, "\n")
	fence := false
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "```") {
			fence = !fence
			continue
		}
		if !fence {
			continue
		}
		start := i + 1
		for strings.HasSuffix(strings.TrimRight(line, " \t"), `\`) && i+1 < len(lines) &&
			!strings.HasPrefix(strings.TrimSpace(lines[i+1]), "```") {
			line = strings.TrimSuffix(strings.TrimRight(line, " \t"), `\`) + " " + lines[i+1]
			i++
		}
		line = strings.TrimSpace(line)
		line = strings.TrimPrefix(line, "$ ") // a shell prompt before a command and its output
		for _, seg := range shellSegments(line) {
			if args, ok := fedzipArgs(seg); ok {
				out = append(out, docCommand{where: fmt.Sprintf("%s:%d", name, start), args: args})
			}
		}
	}
	return out
}

// shellSegments splits a shell line into the words of each simple command:
// quotes group words, ; & | && || separate commands, a redirection drops
// its target, and # starts a comment.
func shellSegments(line string) [][]string {
	var segs [][]string
	var cur []string
	var word strings.Builder
	inWord, skipNext := false, false
	var quote rune
	endWord := func() {
		if inWord {
			if skipNext {
				skipNext = false
			} else {
				cur = append(cur, word.String())
			}
		}
		word.Reset()
		inWord = false
	}
	endSeg := func() {
		endWord()
		if len(cur) > 0 {
			segs = append(segs, cur)
		}
		cur = nil
	}
	for _, r := range line {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				word.WriteRune(r)
			}
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			endWord()
		case r == ';' || r == '&' || r == '|' || r == '(' || r == ')':
			endSeg()
		case r == '>' || r == '<':
			// "2>" and ">": drop the file descriptor and the target.
			if w := word.String(); inWord && strings.Trim(w, "0123456789") == "" {
				word.Reset()
				inWord = false
			} else {
				endWord()
			}
			skipNext = true
		case r == '#' && !inWord:
			endSeg()
			return segs
		default:
			word.WriteRune(r)
			inWord = true
		}
	}
	endSeg()
	return segs
}

// fedzipArgs finds the fedzip program in a simple command's words (fedzip,
// ./fedzip, $W/fedzip, go run ./cmd/fedzip) and returns the words after it.
// The output of "go build -o fedzip" is not a run.
func fedzipArgs(words []string) ([]string, bool) {
	for i, w := range words {
		prev := ""
		if i > 0 {
			prev = words[i-1]
		}
		switch {
		case w == "./cmd/fedzip" && prev == "run":
		case (w == "fedzip" || strings.HasSuffix(w, "/fedzip")) && w != "./cmd/fedzip" && prev != "-o" && prev != "build":
		default:
			continue
		}
		return words[i+1:], true
	}
	return nil, false
}

// helpFlags reads the flags a command's -h output lists.
var helpFlagLine = regexp.MustCompile(`(?m)^\s+--?([A-Za-z0-9][A-Za-z0-9_.-]*)`)

func helpFlags(args ...string) map[string]bool {
	var o bytes.Buffer
	run(context.Background(), append(args, "-h"), &o, &o)
	flags := map[string]bool{"h": true, "help": true}
	for _, m := range helpFlagLine.FindAllStringSubmatch(o.String(), -1) {
		flags[m[1]] = true
	}
	return flags
}

// docFlagChecker checks commands against the real flag sets, each read once.
type docFlagChecker struct {
	flags map[string]map[string]bool
}

func (c *docFlagChecker) flagsOf(cmd string) map[string]bool {
	if c.flags == nil {
		c.flags = map[string]map[string]bool{}
	}
	if f, ok := c.flags[cmd]; ok {
		return f
	}
	f := helpFlags(cmd)
	c.flags[cmd] = f
	return f
}

// check returns what is wrong with one command: an unknown subcommand or a
// flag the subcommand does not have.
func (c *docFlagChecker) check(dc docCommand) []docProblem {
	args := dc.args
	if len(args) == 0 {
		return []docProblem{{dc.where, "fedzip without a command"}}
	}
	sub := args[0]
	if sub == "help" || sub == "-h" || sub == "--help" {
		return nil
	}
	if !slices.ContainsFunc(commands(), func(c command) bool { return c.name == sub }) {
		if regexp.MustCompile(`^[a-z][a-z-]*$`).MatchString(sub) {
			return []docProblem{{dc.where, fmt.Sprintf("fedzip has no command %q", sub)}}
		}
		return nil // not a command line: output such as "fedzip simulate: 2nn on mnist, ..."
	}
	name, rest := sub, args[1:]
	switch sub {
	case "cluster":
		if len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
			if !slices.Contains([]string{"status", "add", "remove"}, rest[0]) {
				return []docProblem{{dc.where, fmt.Sprintf("fedzip cluster has no subcommand %q", rest[0])}}
			}
			rest = rest[1:]
		}
	case "config":
		// fedzip config print [COMMAND [FLAGS]]: the flags are COMMAND's.
		if len(rest) > 0 && rest[0] == "print" {
			rest = rest[1:]
		}
		if len(rest) == 0 || strings.HasPrefix(rest[0], "-") {
			return nil
		}
		name, rest = rest[0], rest[1:]
		if !slices.ContainsFunc(configurable(), func(c command) bool { return c.name == name }) {
			return []docProblem{{dc.where, fmt.Sprintf("fedzip config print: %q is not a command with flags", name)}}
		}
	}
	known := c.flagsOf(name)
	if sub == "config" {
		known = maps.Clone(known)
		known["o"] = true
	}
	var probs []docProblem
	for _, a := range rest {
		if a == "--" {
			break
		}
		a = strings.TrimLeft(a, "[")
		if !strings.HasPrefix(a, "-") || a == "-" {
			continue
		}
		f := strings.TrimLeft(a, "-")
		f, _, _ = strings.Cut(f, "=")
		f = strings.TrimRight(f, "]")
		if f == "" || (f[0] >= '0' && f[0] <= '9') || f == "..." {
			continue // a negative number or a placeholder, not a flag
		}
		if !known[f] {
			probs = append(probs, docProblem{dc.where, fmt.Sprintf("fedzip %s has no flag --%s", name, f)})
		}
	}
	return probs
}

// docFiles are the documents the check covers, relative to the module root.
func docFiles(t *testing.T) []string {
	t.Helper()
	root := filepath.Join("..", "..")
	files := []string{filepath.Join(root, "README.md")}
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) == 0 {
		t.Fatal("no docs/*.md found")
	}
	return append(files, docs...)
}

// TestDocsCommandsUseRealFlags is the docs check CI runs: every fenced
// fedzip command in README.md and docs/*.md names a real command and uses
// only flags it has.
func TestDocsCommandsUseRealFlags(t *testing.T) {
	var c docFlagChecker
	total := 0
	for _, f := range docFiles(t) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(filepath.Join("..", ".."), f)
		cmds := docCommands(rel, string(b))
		total += len(cmds)
		for _, dc := range cmds {
			for _, p := range c.check(dc) {
				t.Error(p)
			}
		}
	}
	t.Logf("checked %d fedzip commands", total)
	// The README alone has more than ten commands; finding few means the
	// extraction broke, not that the docs are right.
	if total < 50 {
		t.Errorf("found only %d fedzip commands in the docs; the extraction is broken", total)
	}
	for _, cmd := range []string{"simulate", "coordinator", "client", "cluster", "compress", "report"} {
		if f := c.flagsOf(cmd); len(f) < 4 {
			t.Errorf("read only %d flags from 'fedzip %s -h': the help parsing is broken", len(f), cmd)
		}
	}
}

// TestDocsCheckCatchesMadeUpFlags makes sure the check fails where it
// should: a made-up flag, an unknown command, flags hidden in continuation
// lines, loops and quoted values; and stays quiet on output and on the
// binary "go build -o fedzip" writes.
func TestDocsCheckCatchesMadeUpFlags(t *testing.T) {
	doc := "text `fedzip simulate --not-in-a-fence` is prose\n" +
		"```sh\n" +
		"go build -o fedzip ./cmd/fedzip\n" +
		"./fedzip simulate --rounds 3 --deliver \"\" --made-up-one 1\n" +
		"go run ./cmd/fedzip coordinator --rounds 2 \\\n" +
		"    --join-secret x --raft-cert certs/node.pem \\\n" +
		"    --made-up-two=5 2> n1.log &   # a comment --made-up-comment\n" +
		"for i in 0 1; do ./fedzip client --insecure --client-index $i --made-up-three & done\n" +
		"$ fedzip compress --model m --recipe 'prune=0.9,--not-a-flag' -o json\n" +
		"FEDZIP_ROUNDS=3 fedzip config print coordinator --upload-codec topk1 --made-up-four x\n" +
		"fedzip cluster status --coordinator 127.0.0.1:7001 --made-up-five\n" +
		"fedzip simulatte --rounds 3\n" +
		"fedzip simulate: 2nn on mnist, 100 clients\n" +
		"```\n"
	cmds := docCommands("doc.md", doc)
	if len(cmds) != 8 {
		t.Fatalf("found %d commands, want 8: %v", len(cmds), cmds)
	}
	var c docFlagChecker
	var got []string
	for _, dc := range cmds {
		for _, p := range c.check(dc) {
			got = append(got, p.String())
		}
	}
	want := []string{
		"doc.md:4: fedzip simulate has no flag --made-up-one",
		"doc.md:5: fedzip coordinator has no flag --made-up-two",
		"doc.md:8: fedzip client has no flag --made-up-three",
		"doc.md:10: fedzip coordinator has no flag --made-up-four",
		"doc.md:11: fedzip cluster has no flag --made-up-five",
		`doc.md:12: fedzip has no command "simulatte"`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// mdLink is a markdown link or image target: [text](target).
var mdLink = regexp.MustCompile(`\]\(([^)\s]+)\)`)

// mdAnchors returns the anchors GitHub gives a markdown file's headings:
// lower case, punctuation dropped, spaces turned into hyphens.
func mdAnchors(text string) map[string]bool {
	anchors := map[string]bool{}
	fence := false
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fence = !fence
			continue
		}
		if fence || !strings.HasPrefix(line, "#") {
			continue
		}
		h := strings.TrimSpace(strings.TrimLeft(line, "#"))
		var b strings.Builder
		for _, r := range strings.ToLower(h) {
			switch {
			case r == ' ':
				b.WriteRune('-')
			case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
				b.WriteRune(r)
			}
		}
		anchors[b.String()] = true
	}
	return anchors
}

// TestDocsLinksResolve checks that every relative link of README.md and
// docs/*.md points at a file of the repository, and every #anchor at a
// heading of its page.
func TestDocsLinksResolve(t *testing.T) {
	for _, f := range docFiles(t) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range mdLink.FindAllStringSubmatch(string(b), -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			path, anchor, _ := strings.Cut(target, "#")
			file := f
			if path != "" {
				file = filepath.Join(filepath.Dir(f), path)
				if _, err := os.Stat(file); err != nil {
					t.Errorf("%s: link %s: %v", f, target, err)
					continue
				}
			}
			if anchor == "" || !strings.HasSuffix(file, ".md") {
				continue
			}
			tb, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			if !mdAnchors(string(tb))[anchor] {
				t.Errorf("%s: link %s: no heading with that anchor in %s", f, target, file)
			}
		}
	}
}
