//go:build ignore

// Command vulnreport reads govulncheck's JSON output on stdin and fails
// (exit 1) when the code calls a vulnerable symbol that is not listed,
// with the reason it is not fixed yet, in the file named by its argument
// (lines "GO-YYYY-NNNN reason…"; # starts a comment). Listed findings are
// printed, not hidden; listed ones no longer found are reported so that
// the list can shrink. Run by .ci/run:
//
//	govulncheck -format json ./... | go run .ci/vulnreport.go .ci/govulncheck-known
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

type message struct {
	OSV *struct {
		ID      string `json:"id"`
		Summary string `json:"summary"`
	} `json:"osv"`
	Finding *struct {
		OSV   string `json:"osv"`
		Fixed string `json:"fixed_version"`
		Trace []struct {
			Module   string `json:"module"`
			Version  string `json:"version"`
			Package  string `json:"package"`
			Function string `json:"function"`
		} `json:"trace"`
	} `json:"finding"`
}

type finding struct {
	id, fixed string
	modules   map[string]bool // module@version
	called    bool
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: vulnreport KNOWN-FILE < govulncheck.json")
		os.Exit(2)
	}
	known, err := readKnown(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "vulnreport:", err)
		os.Exit(2)
	}
	summaries := map[string]string{}
	findings := map[string]*finding{}
	dec := json.NewDecoder(os.Stdin)
	for {
		var m message
		if err := dec.Decode(&m); err == io.EOF {
			break
		} else if err != nil {
			fmt.Fprintln(os.Stderr, "vulnreport: reading govulncheck's output:", err)
			os.Exit(2)
		}
		if m.OSV != nil {
			summaries[m.OSV.ID] = m.OSV.Summary
		}
		if f := m.Finding; f != nil && len(f.Trace) > 0 {
			top := f.Trace[0]
			x := findings[f.OSV]
			if x == nil {
				x = &finding{id: f.OSV, fixed: f.Fixed, modules: map[string]bool{}}
				findings[f.OSV] = x
			}
			x.modules[top.Module+"@"+top.Version] = true
			// A finding whose trace starts at a function is one the code
			// calls; the others are only imported or required.
			x.called = x.called || top.Function != ""
		}
	}
	var ids []string
	for id := range findings {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	fresh, listed, uncalled := 0, 0, 0
	for _, id := range ids {
		f := findings[id]
		if !f.called {
			uncalled++
			continue
		}
		var mods []string
		for m := range f.modules {
			mods = append(mods, m)
		}
		sort.Strings(mods)
		line := fmt.Sprintf("%s in %s (fixed in %s): %s", f.id, strings.Join(mods, ", "), f.fixed, summaries[f.id])
		if reason, ok := known[id]; ok {
			listed++
			fmt.Printf("known, not fixed yet: %s\n    why: %s\n", line, reason)
			continue
		}
		fresh++
		fmt.Printf("NEW: %s\n", line)
	}
	for id := range known {
		if f := findings[id]; f == nil || !f.called {
			fmt.Printf("no longer found: %s: drop it from %s\n", id, os.Args[1])
		}
	}
	fmt.Printf("govulncheck: %d called vulnerabilities not listed, %d listed as known, %d in imported code that is not called\n", fresh, listed, uncalled)
	if fresh > 0 {
		fmt.Printf("FAIL: fix them (upgrade the module, or the Go toolchain for the standard library), or list them in %s with the reason\n", os.Args[1])
		os.Exit(1)
	}
}

func readKnown(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	known := map[string]string{}
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		id, reason, _ := strings.Cut(line, " ")
		reason = strings.TrimSpace(reason)
		if reason == "" {
			return nil, fmt.Errorf("%s: %s has no reason", path, id)
		}
		known[id] = reason
	}
	return known, s.Err()
}
