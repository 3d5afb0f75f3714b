// Command yamlcheck checks the syntax of fedzip's deployment files, so that
// CI needs nothing but Go: every YAML document must parse, and with --k8s
// every Kubernetes document must have apiVersion, kind and metadata.name.
// With --commands it prints the fedzip command lines it finds (Compose
// service commands, Kubernetes container commands and args, a shell script
// given to sh -c), one a line as "FILE: fedzip SUBCOMMAND --flag ...", for
// deploy/check.sh to check against `fedzip SUBCOMMAND -h`.
//
//	go run ./deploy/yamlcheck --k8s deploy/k8s/*.yaml
//	go run ./deploy/yamlcheck --commands deploy/compose.yaml deploy/k8s/*.yaml
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

func main() {
	k8s := flag.Bool("k8s", false, "require apiVersion, kind and metadata.name in every document")
	commands := flag.Bool("commands", false, "print the fedzip command lines found, instead of a summary")
	scripts := flag.Bool("scripts", false, "print the shell scripts that containers run with sh -c, as they are")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: yamlcheck [--k8s] [--commands] FILE...")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	failed := false
	for _, path := range flag.Args() {
		docs, err := parseFile(path)
		if err == nil && *k8s {
			err = checkK8s(docs)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
			failed = true
			continue
		}
		if *scripts {
			for _, d := range docs {
				for _, sc := range shellScripts(d.node) {
					fmt.Print(sc)
				}
			}
		} else if *commands {
			for _, d := range docs {
				for _, c := range fedzipCommands(d.node) {
					fmt.Printf("%s: %s\n", path, c)
				}
			}
		} else {
			fmt.Printf("%s: %d document(s) ok\n", path, len(docs))
		}
	}
	if failed {
		os.Exit(1)
	}
}

type doc struct {
	line int // of the document's first node
	node map[string]any
}

// parseFile decodes every document of a YAML stream; an empty document is
// skipped, and a document that is not a mapping is an error.
func parseFile(path string) ([]doc, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var docs []doc
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if len(n.Content) == 0 || n.Content[0].Kind == yaml.ScalarNode && n.Content[0].Tag == "!!null" {
			continue
		}
		var m map[string]any
		if err := n.Decode(&m); err != nil {
			return nil, fmt.Errorf("line %d: document is not a mapping: %v", n.Line, err)
		}
		docs = append(docs, doc{line: n.Line, node: m})
	}
	if len(docs) == 0 {
		return nil, errors.New("no YAML document")
	}
	return docs, nil
}

// checkK8s requires the fields every Kubernetes object has. A kustomize
// Kustomization has no metadata.name, but must list its resources.
func checkK8s(docs []doc) error {
	for _, d := range docs {
		for _, k := range []string{"apiVersion", "kind"} {
			if s, _ := d.node[k].(string); s == "" {
				return fmt.Errorf("line %d: no %s", d.line, k)
			}
		}
		if d.node["kind"] == "Kustomization" {
			if r, _ := d.node["resources"].([]any); len(r) == 0 {
				return fmt.Errorf("line %d: Kustomization without resources", d.line)
			}
			continue
		}
		meta, _ := d.node["metadata"].(map[string]any)
		if s, _ := meta["name"].(string); s == "" {
			return fmt.Errorf("line %d: %s without metadata.name", d.line, d.node["kind"])
		}
	}
	return nil
}

// fedzipCommands finds the command lines that run fedzip in a Compose file
// (services.*.command of the services whose image is fedzip's: its
// entrypoint is fedzip) or a Kubernetes
// object (containers' command and args, anywhere in the document).
func fedzipCommands(m map[string]any) []string {
	var out []string
	if services, ok := m["services"].(map[string]any); ok {
		for _, name := range sortedKeys(services) {
			svc, _ := services[name].(map[string]any)
			if img, _ := svc["image"].(string); !strings.Contains(img, "fedzip") {
				continue
			}
			if cmd := strs(svc["command"]); len(cmd) > 0 {
				out = append(out, "fedzip "+strings.Join(cmd, " "))
			}
		}
		return out
	}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for _, k := range []string{"containers", "initContainers"} {
				cs, _ := v[k].([]any)
				for _, c := range cs {
					if c, ok := c.(map[string]any); ok {
						out = append(out, containerCommand(c)...)
					}
				}
			}
			for _, k := range sortedKeys(v) {
				if k != "containers" && k != "initContainers" {
					walk(v[k])
				}
			}
		case []any:
			for _, e := range v {
				walk(e)
			}
		}
	}
	walk(m)
	return out
}

// shellScripts returns the scripts of the containers that run sh -c SCRIPT.
func shellScripts(m map[string]any) []string {
	var out []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			cmd, args := strs(v["command"]), strs0(v["args"])
			if n := len(cmd); n >= 2 && cmd[n-1] == "-c" && strings.HasSuffix(cmd[n-2], "sh") && len(args) > 0 {
				out = append(out, args[0])
			}
			for _, k := range sortedKeys(v) {
				walk(v[k])
			}
		case []any:
			for _, e := range v {
				walk(e)
			}
		}
	}
	walk(m)
	return out
}

// containerCommand returns a container's fedzip command line: the image's
// entrypoint with args, or a shell script (sh -c SCRIPT) joined into one
// line, when it names fedzip.
func containerCommand(c map[string]any) []string {
	cmd, args := strs(c["command"]), strs0(c["args"])
	if n := len(cmd); n >= 2 && cmd[n-1] == "-c" && strings.HasSuffix(cmd[n-2], "sh") && len(args) > 0 {
		script := strings.ReplaceAll(args[0], "\\\n", " ")
		if strings.Contains(script, "fedzip ") {
			return []string{strings.Join(strings.Fields(strings.ReplaceAll(script, "\n", " ; ")), " ")}
		}
		return nil
	}
	if len(cmd) == 0 {
		if img, _ := c["image"].(string); strings.Contains(img, "fedzip") && len(args) > 0 {
			return []string{"fedzip " + strings.Join(args, " ")}
		}
		return nil
	}
	all := append(cmd, args...)
	if strings.HasSuffix(all[0], "fedzip") {
		return []string{strings.Join(all, " ")}
	}
	return nil
}

// strs0 is strs without splitting a single string into words.
func strs0(v any) []string {
	if s, ok := v.(string); ok {
		return []string{s}
	}
	return strs(v)
}

func strs(v any) []string {
	switch v := v.(type) {
	case string:
		return strings.Fields(v)
	case []any:
		var out []string
		for _, e := range v {
			out = append(out, fmt.Sprint(e))
		}
		return out
	}
	return nil
}

func sortedKeys(m map[string]any) []string { return slices.Sorted(maps.Keys(m)) }
